# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""/diagnostics: the status builder's levels, then real nodes seen by a real subscriber."""

import pytest

from ros_harness import assert_served, NodeProcess, wait_for

KEYS = {'node', 'lifecycle state', 'base model', 'refiner model', 'models loaded', 'device',
        'memory used', 'memory free', 'memory total', 'queue length', 'goals served',
        'goals refused', 'goals failed', 'goals cancelled', 'last image stamp', 'last failure',
        'error', 'devices in rotation'}


def _health(**changes):
    from sdxl_ros.ros.diagnostics import Health
    values = {'node_name': 'sdxl', 'node_fqn': '/sdxl', 'lifecycle_state': 'active',
              'base_model': 'tiny', 'refiner_model': '', 'models_loaded': True,
              'counts': {'served': 1, 'refused': 0, 'failed': 0, 'cancelled': 0}}
    values.update(changes)
    return Health(**values)


def test_levels_follow_the_health():
    pytest.importorskip('diagnostic_msgs')
    from diagnostic_msgs.msg import DiagnosticStatus
    from sdxl_ros.engine.generation.memory import MemoryReport
    from sdxl_ros.ros.diagnostics import health_status
    gib = 1024 ** 3
    plenty = MemoryReport('cuda:0', 13 * gib, 10 * gib, 24 * gib, 14 * gib, 23 * gib)
    status = health_status(_health(memory=plenty))
    assert status.level == DiagnosticStatus.OK
    assert status.name == 'sdxl: generation' and status.hardware_id == 'cuda:0'
    values = {kv.key: kv.value for kv in status.values}
    assert set(values) == KEYS
    assert values['memory free'] == '10240 MiB' and values['refiner model'] == '(none)'
    short = MemoryReport('cuda:0', 13 * gib, 1 * gib, 16 * gib, 18 * gib, 14 * gib)
    status = health_status(_health(memory=short))
    assert status.level == DiagnosticStatus.WARN and 'memory short' in status.message
    status = health_status(_health(last_failure='out of memory'))
    assert status.level == DiagnosticStatus.WARN and 'out of memory' in status.message
    status = health_status(_health(models_loaded=False, lifecycle_state='unconfigured',
                                   error='models failed to load: file is truncated',
                                   device='auto', last_failure='x', memory=short))
    assert status.level == DiagnosticStatus.ERROR and 'truncated' in status.message
    assert status.hardware_id == 'cuda:0'
    assert health_status(_health(device='cpu')).hardware_id == 'cpu'


# ------------------------------------------------------------------------- real nodes
def _statuses(ros_client):
    pytest.importorskip('diagnostic_msgs', reason='diagnostic_msgs is not installed')
    from diagnostic_msgs.msg import DiagnosticArray
    from sdxl_ros.ros.diagnostics import DIAGNOSTICS_QOS
    return ros_client.subscribe(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)


def _wait_status(arrays, fqn, predicate=lambda status, values: True, timeout=30.0):
    """Return (status, values) of the newest status of node `fqn` matching `predicate`."""
    def find():
        for array in reversed(list(arrays)):
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if values.get('node') == fqn and predicate(status, values):
                    return status, values
        return None
    found = wait_for(find, timeout, interval=0.1)
    assert found, f'no matching status of {fqn} on /diagnostics within {timeout} s'
    return found


@pytest.mark.ros
def test_healthy_node_then_a_failed_goal(ros_client, start_node):
    """OK with every key on a healthy tiny node; WARN after an OOM goal; OK after a success."""
    arrays = _statuses(ros_client)
    from diagnostic_msgs.msg import DiagnosticStatus
    node = start_node()
    status, values = _wait_status(arrays, node.fqn, lambda s, v: v['lifecycle state'] == 'active')
    assert status.level == DiagnosticStatus.OK, status.message
    assert status.name == 'sdxl: generation' and status.hardware_id == 'cpu'
    assert set(values) == KEYS
    assert values['models loaded'] == 'true' and values['base model'] == 'tiny'
    assert values['memory used'].endswith(' MiB') and values['memory free'].endswith(' MiB')
    assert values['goals served'] == '0' and values['last image stamp'] == 'none yet'
    action = node.name_of('generate')
    results = ros_client.set_parameters(node.fqn, fault_oom_at_step=1)
    assert all(r.successful for r in results)
    _, response = ros_client.generate(action, prompt='a robot', steps=2)
    assert 'out of memory' in response.result.message
    status, values = _wait_status(arrays, node.fqn, lambda s, v: v['goals failed'] == '1')
    assert status.level == DiagnosticStatus.WARN
    assert 'last goal failed' in status.message and 'out of memory' in status.message
    ros_client.set_parameters(node.fqn, fault_oom_at_step=0)
    _, response = ros_client.generate(action, prompt='a robot', steps=2, width=8)
    assert response.result.message.startswith('refused: ')
    _, response = ros_client.generate(action, prompt='a robot', steps=2)
    assert_served(response)
    stamp = response.result.image_stamps[0]
    status, values = _wait_status(arrays, node.fqn, lambda s, v: v['goals served'] == '1')
    assert status.level == DiagnosticStatus.OK, status.message
    assert (values['goals failed'], values['goals refused']) == ('1', '1')
    assert values['last image stamp'] == f'{stamp.sec}.{stamp.nanosec:09d}'


@pytest.mark.ros
def test_models_that_fail_to_load_are_an_error(ros_client, tmp_path):
    """A node whose weight file is garbage reports ERROR with the loader's reason."""
    pytest.importorskip('diagnostic_msgs', reason='diagnostic_msgs is not installed')
    from diagnostic_msgs.msg import DiagnosticStatus
    models = tmp_path / 'models'
    models.mkdir()
    (models / 'garbage.safetensors').write_bytes(b'\x07' * 64 + b'not weights' * 50)
    arrays = _statuses(ros_client)
    node = NodeProcess(tmp_path, {'model_dir': str(models), 'base_model': 'garbage.safetensors',
                                  'refiner_model': ''}).start()
    try:
        status, values = _wait_status(arrays, node.fqn,
                                      lambda s, v: s.level == DiagnosticStatus.ERROR, 90)
        assert status.message.startswith('models failed to load: ')
        assert 'damaged or truncated' in status.message
        assert values['lifecycle state'] == 'unconfigured'
        assert values['models loaded'] == 'false'
        assert node.alive
    finally:
        node.stop()
        print(node.log())
