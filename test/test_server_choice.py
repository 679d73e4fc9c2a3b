# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Several servers, one entry point: the client picks the least busy sdxl_node from /diagnostics.

The ranking is tested on real DiagnosticStatus messages without ROS processes; then two real
nodes in namespaces of their own (tiny preset) and the real `sdxl_generate --servers auto`: the
goal goes to the idle server, and to the other one when that one is gone.
"""

import subprocess
import sys

import pytest

from ros_harness import client_executable, NodeProcess
from test_diagnostics import _statuses, _wait_status


def _status(node, queue, level=0, state='active', loaded='true', devices='1', device=''):
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    values = {'node': node, 'lifecycle state': state, 'models loaded': loaded,
              'queue length': str(queue), 'devices in rotation': devices}
    return DiagnosticStatus(level=bytes([level]), name=f'sdxl: generation{device}',
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


def test_servers_are_ranked_by_goals_per_device():
    pytest.importorskip('diagnostic_msgs', reason='diagnostic_msgs is not installed')
    from diagnostic_msgs.msg import DiagnosticStatus
    from sdxl_ros.client.server_choice import rank_servers, server_loads
    other = DiagnosticStatus(name='battery', values=[])  # not a server: ignored
    loads = server_loads([_status('/a/sdxl', 3), _status('/b/sdxl', 1), other], seen=100.0)
    # Two devices: 3 goals are 1.5 per device, fewer than 2 on one device.
    server_loads([_status('/c/sdxl', 3, devices='2', device=' cuda:0'),
                  _status('/c/sdxl', 3, level=2, devices='2', device=' cuda:1')], 100.5, loads)
    server_loads([_status('/d/sdxl', 0, state='inactive')], 100.5, loads)   # not active
    server_loads([_status('/e/sdxl', 0, level=2, loaded='false')], 100.5, loads)   # ERROR
    assert rank_servers(loads, now=101.0) == [
        '/b/sdxl/generate', '/c/sdxl/generate', '/a/sdxl/generate']
    assert rank_servers(loads, now=101.0, only=('/a/sdxl', '/c/sdxl')) == [
        '/c/sdxl/generate', '/a/sdxl/generate']
    # A server that stopped publishing (gone, or cut off) is left out after STALE_SEC.
    server_loads([_status('/a/sdxl', 3)], 104.0, loads)
    assert rank_servers(loads, now=104.2, stale_sec=3.5) == ['/a/sdxl/generate']
    # Ties are broken at random, so clients choosing at once spread out.
    tied = server_loads([_status('/x/sdxl', 1), _status('/y/sdxl', 1)], seen=0.0)
    firsts = {rank_servers(tied, 0.0)[0] for _ in range(64)}
    assert firsts == {'/x/sdxl/generate', '/y/sdxl/generate'}


def _cli(*args, timeout=240):
    """Run sdxl_generate (confined like this test process); return the CompletedProcess."""
    return subprocess.run([sys.executable, str(client_executable()), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.ros
def test_the_cli_sends_to_the_idle_server_and_falls_back(ros_client, tmp_path):
    """Busy /…_1 and idle /…_2: the goal goes to _2; with _2 gone, to _1 (now idle)."""
    pytest.importorskip('diagnostic_msgs', reason='diagnostic_msgs is not installed')
    arrays = _statuses(ros_client)
    nodes = [NodeProcess(tmp_path / str(i), {'max_queue': 2, 'max_steps': 1000}).start()
             for i in range(2)]
    busy, idle = nodes
    try:
        for node in nodes:
            ros_client.wait_active(node.fqn, node)
        runs = [ros_client.send_goal(busy.name_of('generate'), prompt='long', steps=1000)]
        runs[0].accepted()
        _wait_status(arrays, busy.fqn, lambda s, v: v['queue length'] == '1')
        done = _cli('--servers', 'auto', 'a robot', '--quiet', '-o', str(tmp_path / 'a.png'))
        assert done.returncode == 0, done.stderr
        assert f'sending the goal to {idle.name_of("generate")}' in done.stderr
        assert (tmp_path / 'a.png').is_file()
        _wait_status(arrays, idle.fqn, lambda s, v: v['goals served'] == '1')
        idle.stop()
        runs[0].cancel()
        runs[0].result(60)
        done = _cli('--servers', 'auto', 'a robot', '--quiet', '--steps', '2',
                    '-o', str(tmp_path / 'b.png'))
        assert done.returncode == 0, done.stderr
        # The idle server may still be listed (its last status is fresh); it does not answer.
        assert done.stderr.strip().splitlines()[-1] == (
            f'sdxl_generate: sending the goal to {busy.name_of("generate")}'), done.stderr
        assert (tmp_path / 'b.png').is_file()
    finally:
        for node in nodes:
            node.stop()
            print(node.log())


@pytest.mark.ros
def test_two_servers_under_one_name_both_run_the_goal(ros_client, tmp_path):
    """Why the README forbids it: two servers on one action name both execute one goal."""
    from action_msgs.msg import GoalStatus
    from ros_harness import wait_for
    twins = [NodeProcess(tmp_path / str(i), {}, namespace='/twin').start() for i in range(2)]
    try:
        assert wait_for(lambda: all('active: serving' in n.log() for n in twins), 120), [
            n.log() for n in twins]
        _, response = ros_client.generate('/twin/sdxl/generate', prompt='a robot', steps=2)
        assert response.status == GoalStatus.STATUS_SUCCEEDED, response.result.message
        # The client got one result; both servers accepted the goal and generated it.
        assert wait_for(lambda: all('goal succeeded' in n.log() for n in twins), 60), [
            n.log() for n in twins]
    finally:
        for node in twins:
            node.stop()
