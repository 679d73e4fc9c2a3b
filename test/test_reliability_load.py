# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Reliability: load. Five client processes send ten goals each at once; bursts of requests.

None may be lost (every goal reaches a terminal state), accepted goals run in the order they
were admitted (FIFO), and goals beyond the queue are refused with the reason.
"""

import json
from pathlib import Path
import re
import select
import subprocess
import sys
import time

import pytest

from reliability_report import FIGURES, finish, module_node
from ros_harness import assert_refused, assert_served, GoalRun, status_names

pytestmark = [pytest.mark.ros, pytest.mark.reliability]

CLIENTS = 5
GOALS_PER_CLIENT = 10
MAX_QUEUE = 6
NODE = {'default_steps': 3, 'max_queue': MAX_QUEUE}
CLIENT_SCRIPT = Path(__file__).with_name('reliability_client.py')


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory):
    """One node for the module: six goals may wait behind the running one."""
    yield from module_node(ros_client, tmp_path_factory, NODE)


def _read_line(process, timeout):
    """Read one stdout line of `process` within `timeout` seconds ('' if none)."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ''


def _start_clients(action, tmp_path):
    """Start the client processes; return [(process, output path)] once all are READY."""
    clients = []
    for index in range(CLIENTS):
        spec = tmp_path / f'spec{index}.json'
        spec.write_text(json.dumps({'gap_sec': 0.25, 'goals': [
            {'prompt': f'client {index} goal {i}', 'seed': 1000 * (index + 1) + i}
            for i in range(GOALS_PER_CLIENT)]}))
        out = tmp_path / f'out{index}.json'
        clients.append((subprocess.Popen(
            [sys.executable, str(CLIENT_SCRIPT), action, str(spec), str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True), out))
    for process, _ in clients:
        assert _read_line(process, 90) == 'READY', 'a client did not find the action server'
    return clients


def _execution_order(log):
    """Seeds of the succeeded goals in the order the node finished them."""
    return [int(seed) for seed in re.findall(r'goal succeeded: .*seeds \[(\d+)\]', log)]


def test_five_clients_ten_goals_each(node, tmp_path):
    """5 processes x 10 goals: none lost, queue-full refusals reasoned, accepted ones FIFO."""
    clients = _start_clients(node.name_of('generate'), tmp_path)
    started = time.monotonic()
    try:
        for process, _ in clients:
            process.stdin.write('GO\n')
            process.stdin.flush()
        for process, _ in clients:
            assert process.wait(240) == 0
    finally:
        for process, _ in clients:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    elapsed = time.monotonic() - started
    records = [record for _, out in clients for record in json.loads(out.read_text())]
    assert len(records) == CLIENTS * GOALS_PER_CLIENT
    lost = [r for r in records if r['status'] is None]
    FIGURES.lost(len(lost))
    for record in records:
        if record['status'] is not None:
            FIGURES.ended(record['status'], record['message'])
    served = [r for r in records if r['status'] == status_names().STATUS_SUCCEEDED]
    refused = [r for r in records if r not in served and r not in lost]
    FIGURES.measured('load 5 clients x 10 goals', {
        'served': len(served), 'refused': len(refused), 'lost': len(lost),
        'seconds': round(elapsed, 1)})
    assert not lost, f'{len(lost)} goals never reached a terminal state'
    for record in refused:
        assert record['status'] == status_names().STATUS_ABORTED, record
        assert record['message'].startswith('refused: queue is full'), record
        assert f'max_queue {MAX_QUEUE}' in record['message'], record
        assert record['queue_positions'] == [], 'a refused goal was queued'
    assert served and refused, (len(served), len(refused))
    assert all(r['images'] == 1 for r in served)
    assert all(position <= MAX_QUEUE for r in served for position in r['queue_positions'])
    # FIFO: a goal admitted before another goal was even sent must run before it.
    order = _execution_order(node.log())
    assert sorted(order) == sorted(r['seed'] for r in served)
    rank = {seed: index for index, seed in enumerate(order)}
    for first in served:
        for second in served:
            if first['answered_at'] < second['sent_at']:
                assert rank[first['seed']] < rank[second['seed']], (first, second)
    assert node.alive


def test_burst_of_goal_requests(ros_client, node):
    """Forty goals sent at once while one runs: each answered, MAX_QUEUE wait, the rest refused."""
    from sdxl_ros.action import GenerateImage
    action = node.name_of('generate')
    running = ros_client.send_goal(action, prompt='long', steps=150)
    assert running.wait_feedback(lambda fb: fb.stage == 'base', 60)
    client = ros_client.action_client(action)
    burst = [GoalRun(client, GenerateImage.Goal(prompt=f'burst {i}', seed=i))
             for i in range(40)]
    answered = [run.accepted(60) for run in burst]
    assert all(answered)
    running.cancel()
    assert finish(running, 30).status == status_names().STATUS_CANCELED
    responses = [finish(run, 60) for run in burst]
    served = [r for r in responses if r.status == status_names().STATUS_SUCCEEDED]
    assert len(served) == MAX_QUEUE
    for response in served:
        assert_served(response)
    for response in responses:
        if response not in served:
            assert_refused(response, 'queue is full')
