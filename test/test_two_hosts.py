# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Node and client on two "hosts" over a real link: two network namespaces joined by a veth pair.

The node runs in one namespace, a separate rclpy client process (two_host_client.py) in the
other, each with config/fastdds_interface_only.xml filled in for its end: UDPv4 on the veth
only, unicast discovery, no shared memory (checked on the node's memory maps). 1024x1024
goals (tiny preset) go across and back with their results, ~/image and ~/image/compressed;
then again with the link limited to 50 Mbit/s (tbf), then with tc netem (1% loss, 5 ms delay,
50 Mbit/s) where the kernel has netem. The traffic never leaves the two namespaces, which
disappear with their holder processes at the end, also on failure. Figures go to
log/two_hosts.json (docs/networking.md "Two hosts").
"""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from ros_harness import NodeProcess
from two_hosts import setup_problem, TwoHosts

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
CLIENT = Path(__file__).with_name('two_host_client.py')
#: The link in each phase: None = the bare veth, else the root qdisc of both ends (tc words).
PHASES = {
    'veth': None,
    'tbf-50mbit': ('tbf', 'rate', '50mbit', 'burst', '64kb', 'latency', '400ms'),
    'netem-1%-5ms-50mbit': ('netem', 'delay', '5ms', 'loss', '1%', 'rate', '50mbit'),
}
SIDE = 1024
GOALS = [{'prompt': 'a robot on a hill', 'seed': 1, 'width': SIDE, 'height': SIDE},
         {'prompt': 'a robot on a hill', 'seed': 2, 'width': SIDE, 'height': SIDE},
         {'prompt': 'a robot on a hill', 'seed': 3, 'width': SIDE, 'height': SIDE,
          'omit_result_images': True}]
#: Seconds a client waits for discovery, a goal or its images.
TIMEOUT = 120


def _env(profile):
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(profile),
               ROS_AUTOMATIC_DISCOVERY_RANGE='SYSTEM_DEFAULT')
    # The name Fast DDS 2.x (Jazzy) reads, where scripts/env.sh found that Fast DDS.
    if 'FASTRTPS_DEFAULT_PROFILES_FILE' in env:
        env['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(profile)
    return env


@pytest.fixture(scope='module')
def link(ros_confined, tmp_path_factory):
    """Two hosts joined by a veth, the node running in the first; all removed afterwards."""
    problem = setup_problem()
    if problem:
        pytest.skip(problem)
    workdir = tmp_path_factory.mktemp('two_hosts')
    try:
        hosts = TwoHosts(str(os.getpid() % 100000), workdir)
    except RuntimeError as error:
        pytest.skip(f'cannot create two network namespaces joined by a veth here: {error}')
    node = None
    try:
        node = NodeProcess(workdir, {'max_queue': 1, 'max_side': SIDE},
                           command_prefix=hosts.a.prefix,
                           env=_env(hosts.profile(0, workdir / 'host_a.xml'))).start()
        yield hosts, node, workdir
    finally:
        if node is not None:
            node.stop()
            print(f'----- log of {node.fqn} (exit {node.returncode}) -----\n{node.log()}')
        hosts.close()


def _run_client(hosts, node, workdir, phase):
    spec = workdir / f'{phase}.json'
    out = workdir / f'{phase}.out.json'
    spec.write_text(json.dumps({'action': node.name_of('generate'),
                                'image_topic': node.name_of('image'),
                                'goals': GOALS, 'timeout': TIMEOUT}))
    done = subprocess.run(hosts.b.prefix + [sys.executable, str(CLIENT), str(spec), str(out)],
                          env=_env(hosts.profile(1, workdir / 'host_b.xml')),
                          capture_output=True, text=True, timeout=TIMEOUT * (len(GOALS) + 2))
    assert out.exists(), f'client wrote nothing (exit {done.returncode}):\n{done.stderr}'
    return json.loads(out.read_text()), done


def _record(phase, report):
    figures = {}
    path = ROOT / 'log' / 'two_hosts.json'
    if path.exists():
        figures = json.loads(path.read_text())
    figures[phase] = report
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(figures, indent=1))


@pytest.mark.parametrize('phase', list(PHASES))
def test_goals_across_the_link(link, phase):
    """Every goal completes across the link; results, ~/image and its PNG agree."""
    from action_msgs.msg import GoalStatus
    hosts, node, workdir = link
    assert node.alive, node.log()
    qdisc = PHASES[phase]
    if qdisc is not None:
        try:
            hosts.shape(*qdisc)
        except RuntimeError as error:
            pytest.skip(f'{phase}: the kernel here refuses the {qdisc[0]} qdisc ({error}); '
                        f'no sch_{qdisc[0]} module, so this link cannot be emulated')
    try:
        report, done = _run_client(hosts, node, workdir, phase)
    finally:
        hosts.unshape()
    _record(phase, report)
    print(json.dumps(report, indent=1))
    assert 'error' not in report, f'{report["error"]}\n{done.stderr}\n{node.log()}'
    assert len(report['goals']) == len(GOALS)
    for goal, entry in zip(GOALS, report['goals']):
        assert entry['status'] == GoalStatus.STATUS_SUCCEEDED, entry['message']
        expected = 0 if goal.get('omit_result_images') else 3 * SIDE * SIDE
        assert entry['result_bytes'] == expected
        assert len(entry['images']) == 1
        image = entry['images'][0]
        assert image.get('raw_bytes') == 3 * SIDE * SIDE, image
        assert image.get('format') == 'rgb8; png compressed bgr8', image
        assert image['compressed_equals_raw'] is True
        if expected:
            assert image['result_equals_raw'] is True


def test_the_hosts_share_no_memory_and_only_the_link(link):
    """The node's namespace holds lo and its veth end only; it maps no DDS shared memory."""
    hosts, node, _ = link
    assert node.alive
    assert hosts.interfaces_of(hosts.a) == sorted(['lo', hosts.interfaces[0]])
    assert hosts.interfaces_of(hosts.b) == sorted(['lo', hosts.interfaces[1]])
    maps = Path(f'/proc/{node.process.pid}/maps').read_text()
    # Fast DDS names its SHM transport and data-sharing segments fastdds_* / fast_datasharing*
    # (LTTng's own /dev/shm/lttng-ust-wait-* files are tracing, not transport).
    shared = sorted({line.split()[5] for line in maps.splitlines()
                     if '/dev/shm/' in line and '/dev/shm/fast' in line})
    assert not shared, f'the node maps DDS shared memory: {shared}'
    assert 'XMLPARSER' not in node.log() and 'Error' not in node.log(), node.log()
