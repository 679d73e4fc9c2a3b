# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
sdxl_node with several devices (`devices`), in its own process: two CPU engines stand in for GPUs.

Goals run at the same time on the two engines and their feedback names the device; bad device
lists are refused at configure with the reason; a device that fails during a goal leaves the
rotation (its /diagnostics status turns ERROR) and the goal is retried on the other device;
when none is left the goal is aborted with the reason. Tiny preset, 64x64.
"""

import pytest

from ros_harness import NodeProcess, wait_for
from test_diagnostics import _statuses, _wait_status

pytestmark = pytest.mark.ros

TWO_CPUS = {'devices': ['cpu:0', 'cpu:1'], 'max_queue': 2}


def _succeeded():
    from action_msgs.msg import GoalStatus
    return GoalStatus.STATUS_SUCCEEDED


def _devices(run, stages=('base', 'refiner')):
    """Return the devices named by a goal's denoising feedback, in order."""
    return [fb.device for _, fb in run.feedback if fb.stage in stages]


def test_two_engines_run_two_goals_at_once(ros_client, start_node):
    """Both goals start at once (never 'queued'), one per device; one status per device."""
    arrays = _statuses(ros_client)
    node = start_node(**TWO_CPUS)
    action = node.name_of('generate')
    runs = [ros_client.send_goal(action, prompt=f'robot {i}', steps=12, seed=i)
            for i in range(2)]
    responses = [run.result(120) for run in runs]
    assert [r.status for r in responses] == [_succeeded()] * 2, [
        r.result.message for r in responses]
    assert not any('queued' in run.stages() for run in runs)
    assert sorted(set(_devices(run)) for run in runs) == [{'cpu:0'}, {'cpu:1'}]
    for device in ('cpu:0', 'cpu:1'):
        status, values = _wait_status(arrays, node.fqn,
                                      lambda s, v, d=device: s.name == f'sdxl: generation {d}')
        assert status.hardware_id == device and values['devices in rotation'] == '2'
        assert values['models loaded'] == 'true'


def test_bad_device_lists_are_refused_at_configure(ros_client, tmp_path):
    """A device listed twice and one that does not exist: configure fails, saying both."""
    pytest.importorskip('torch')
    import torch
    from diagnostic_msgs.msg import DiagnosticStatus
    missing = f'cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}'
    arrays = _statuses(ros_client)
    node = NodeProcess(tmp_path, {'devices': ['cpu', 'cpu:0', missing]}).start()
    try:
        status, values = _wait_status(arrays, node.fqn,
                                      lambda s, v: s.level == DiagnosticStatus.ERROR, 90)
        assert values['lifecycle state'] == 'unconfigured'
        assert "'cpu:0' is listed twice (as cpu:0)" in status.message
        # The list is refused before the devices are looked at: fix it, then the missing GPU.
        assert wait_for(lambda: 'cannot configure' in node.log(), 10)
        assert node.alive
        run, response = ros_client.generate(node.name_of('generate'), prompt='a robot')
        assert response.result.message.startswith('refused: the node is not active')
    finally:
        node.stop()
        print(node.log())
    node = NodeProcess(tmp_path / 'missing', {'devices': ['cpu:0', missing]}).start()
    try:
        status, values = _wait_status(arrays, node.fqn,
                                      lambda s, v: s.level == DiagnosticStatus.ERROR, 90)
        assert f'device {missing} does not exist' in status.message
        assert values['lifecycle state'] == 'unconfigured' and node.alive
    finally:
        node.stop()
        print(node.log())


def test_a_failing_device_leaves_the_rotation_and_its_goal_is_retried(ros_client, start_node):
    """Goal on the failing cpu:1 succeeds on cpu:0; with cpu:0 failing too, aborted with why."""
    from diagnostic_msgs.msg import DiagnosticStatus
    arrays = _statuses(ros_client)
    node = start_node(**TWO_CPUS)
    action = node.name_of('generate')
    assert all(r.successful for r in ros_client.set_parameters(node.fqn, fault_device='cpu:1'))
    first = ros_client.send_goal(action, prompt='robot a', steps=12, seed=1)  # cpu:0
    second = ros_client.send_goal(action, prompt='robot b', steps=6, seed=2)  # cpu:1: fails
    for run in (first, second):
        response = run.result(120)
        assert response.status == _succeeded(), response.result.message
    devices = _devices(second)
    assert devices[0] == 'cpu:1' and devices[-1] == 'cpu:0', devices
    status, values = _wait_status(
        arrays, node.fqn, lambda s, v: s.name == 'sdxl: generation cpu:1'
        and s.level == DiagnosticStatus.ERROR)
    assert status.message == ('out of rotation: device cpu:1 failed: generation failed: '
                              'device lost (test hook fault_device)')
    assert values['devices in rotation'] == '1'
    assert wait_for(lambda: 'retrying the goal on cpu:0' in node.log(), 10)
    # The last device fails too: the goal ends with the reason, nothing is left waiting.
    ros_client.set_parameters(node.fqn, fault_device='cpu:0')
    run, response = ros_client.generate(action, prompt='robot c', steps=6)
    assert response.result.message == (
        'device cpu:0 failed: generation failed: device lost (test hook fault_device); no '
        'other device is in rotation')
    run, response = ros_client.generate(action, prompt='robot d', steps=6)
    assert response.result.message.startswith('refused: no device is in rotation')
    # Deactivate + activate loads the models again: both devices are back.
    ros_client.set_parameters(node.fqn, fault_device='')
    assert ros_client.change_state(node.fqn, 4)  # deactivate
    assert ros_client.change_state(node.fqn, 3)  # activate
    _, response = ros_client.generate(action, prompt='robot e', steps=4)
    assert response.status == _succeeded(), response.result.message
    _wait_status(arrays, node.fqn, lambda s, v: v['devices in rotation'] == '2'
                 and s.level == DiagnosticStatus.OK)
