# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Reliability: faults, each met by a reasoned end of the affected goal and no crash.

Out of memory mid-step, a client killed mid-goal, SIGINT/SIGTERM while generating, missing,
truncated and wrong-architecture weight files.

The node must end the affected goal with a reason, never crash, and serve the next goal (or,
for signals, exit cleanly within 2 s after answering its goals).
"""

from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import pytest

from reliability_report import FIGURES, finish, image_qos, module_node, settle
from ros_harness import assert_served, status_names
pytestmark = [pytest.mark.ros, pytest.mark.reliability]

NODE = {'default_steps': 4, 'max_queue': 4}
#: The node must be gone this soon after SIGINT/SIGTERM.
SHUTDOWN_LIMIT_SEC = 2.0


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Write a model_dir with the tiny preset written as real single-file checkpoints."""
    from engine_fixtures import tiny_engine
    from single_file_export import save_single_file
    folder = tmp_path_factory.mktemp('models')
    preset = tiny_engine()
    save_single_file(preset.base_pipeline, folder / 'tiny_base.safetensors', 'base')
    save_single_file(preset.refiner_pipeline, folder / 'tiny_refiner.safetensors', 'refiner')
    return folder


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory, models):
    """One node for the module, looking for models in `models`."""
    yield from module_node(ros_client, tmp_path_factory, dict(NODE, model_dir=str(models)))


def _aborted(response, *words):
    assert response.status == status_names().STATUS_ABORTED, response.result.message
    assert not response.result.message.startswith('refused'), response.result.message
    for word in words:
        assert re.search(word, response.result.message), response.result.message
    assert len(response.result.images) == 0


def _generate(ros_client, node, **fields):
    run = ros_client.send_goal(node.name_of('generate'), **dict({'prompt': 'a robot'},
                                                                **fields))
    return run, finish(run, 90)


def _set(ros_client, node, **values):
    results = ros_client.set_parameters(node.fqn, **values)
    assert all(r.successful for r in results), [r.reason for r in results]


# ------------------------------------------------------------------------ out of memory
@pytest.mark.parametrize('step, stage', [(1, 'base'), (6, 'refiner')])
def test_out_of_memory_aborts_that_goal_only(ros_client, node, step, stage):
    """OOM injected at a step of the base or the refiner: that goal aborts, the next succeeds."""
    from sensor_msgs.msg import Image
    images = ros_client.subscribe(Image, node.name_of('image'), image_qos())
    _set(ros_client, node, fault_oom_at_step=step)
    try:
        run, response = _generate(ros_client, node, steps=6, refiner_switch=0.5)
        _aborted(response, 'out of memory', 'fault_oom_at_step')
        denoising = [fb for _, fb in run.feedback if fb.stage in ('base', 'refiner')]
        assert 'decoding' not in run.stages()
        if step > 1:
            assert denoising[-1].stage == stage and denoising[-1].step == step - 1
        assert settle(images) == 0
    finally:
        _set(ros_client, node, fault_oom_at_step=0)
    _, response = _generate(ros_client, node, steps=4, refiner_switch=0.5)
    assert_served(response)
    assert node.alive


# ------------------------------------------------------------------------ lost client
def _read_line(process, timeout):
    """Read one stdout line of `process` within `timeout` seconds ('' if none)."""
    import select
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ''


def test_client_killed_mid_goal(ros_client, node, tmp_path):
    """A client process killed while its goal runs (and one waits): the node keeps serving."""
    import json
    spec = tmp_path / 'spec.json'
    spec.write_text(json.dumps({'hold': True, 'goals': [
        {'prompt': 'orphan', 'steps': 40, 'seed': 901},
        {'prompt': 'orphan queued', 'steps': 2, 'seed': 902}]}))
    client = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name('reliability_client.py')),
         node.name_of('generate'), str(spec), str(tmp_path / 'out.json')],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert _read_line(client, 60) == 'READY'
        client.stdin.write('GO\n')
        client.stdin.flush()
        assert _read_line(client, 60) == 'RUNNING'
    finally:
        client.kill()
        client.wait(10)
    _, response = _generate(ros_client, node, seed=903)
    assert_served(response)
    # The orphaned goals ran to their end with nobody listening, before this one.
    log = node.log()
    assert log.index('seeds [901]') < log.index('seeds [902]') < log.index('seeds [903]')
    assert 'Traceback' not in log
    assert node.alive


# ------------------------------------------------------------------------ weight files
def _bad_files(models):
    """Write the bad weight files; return {name: (file name, pattern of the reason)}."""
    from safetensors.torch import save_file
    import torch
    data = (models / 'tiny_base.safetensors').read_bytes()
    (models / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    (models / 'garbage.safetensors').write_bytes(b'\x07' * 64 + b'not weights' * 50)
    save_file({'model.diffusion_model.input_blocks.0.0.weight': torch.zeros(320, 4, 3, 3),
               'cond_stage_model.transformer.text_model.embeddings.position_embedding.weight':
               torch.zeros(77, 8),
               'first_stage_model.decoder.conv_out.weight': torch.zeros(3, 8, 3, 3)},
              str(models / 'sd15.safetensors'))
    return {
        'truncated': ('cut.safetensors', 'truncated'),
        'garbage': ('garbage.safetensors', 'damaged or truncated'),
        'sd1-architecture': ('sd15.safetensors', 'not SDXL'),
        'refiner-as-base': ('tiny_refiner.safetensors', 'is an SDXL refiner checkpoint'),
    }


def test_bad_weight_files_at_run_time(ros_client, node, models):
    """Switching to a bad checkpoint aborts the goal with the reason; good files recover."""
    for name, (file_name, reason) in _bad_files(models).items():
        _set(ros_client, node, base_model=file_name)
        run, response = _generate(ros_client, node)
        assert run.stages()[:1] == ['loading'], name
        _aborted(response, 'cannot load models', reason)
        assert node.alive, name
    missing = ros_client.set_parameters(node.fqn, base_model='missing.safetensors')[0]
    assert not missing.successful and 'not found' in missing.reason
    _set(ros_client, node, base_model='tiny_base.safetensors',
         refiner_model='tiny_refiner.safetensors')
    _, response = _generate(ros_client, node, seed=5)
    assert_served(response)
    assert 'Model: tiny_base, Refiner: tiny_refiner' in response.result.parameters


def test_bad_weight_files_fail_configure(ros_client, node, models):
    """Configure with bad files fails with the reason in the log; good files configure again."""
    from lifecycle_msgs.msg import Transition
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_DEACTIVATE)
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_CLEANUP)
    cases = dict(_bad_files(models))
    (models / 'vanished.safetensors').write_bytes((models / 'tiny_base.safetensors')
                                                  .read_bytes())
    cases['missing'] = ('vanished.safetensors', 'not found')
    for name, (file_name, reason) in cases.items():
        _set(ros_client, node, base_model=file_name)
        if name == 'missing':
            (models / file_name).unlink()
        logged = len(node.log())
        assert not ros_client.change_state(node.fqn, Transition.TRANSITION_CONFIGURE), name
        assert ros_client.lifecycle_state(node.fqn) == 'unconfigured'
        new_log = node.log()[logged:]
        assert re.search(f'cannot (load models|configure): .*{reason}', new_log), new_log
        assert node.alive
        _, response = _generate(ros_client, node)
        assert response.status == status_names().STATUS_ABORTED
        assert 'not active' in response.result.message
    _set(ros_client, node, base_model='tiny_base.safetensors')
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_CONFIGURE)
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_ACTIVATE)
    _, response = _generate(ros_client, node)
    assert_served(response)
    assert 'Model: tiny_base' in response.result.parameters


# ------------------------------------------------------------------------ signals
@pytest.mark.parametrize('signal_number', [signal.SIGINT, signal.SIGTERM],
                         ids=['SIGINT', 'SIGTERM'])
def test_signal_while_generating_exits_cleanly(ros_client, start_node, signal_number):
    """SIGINT/SIGTERM while generating: goals answered (aborted), exit 0 within 2 s."""
    node = start_node(max_queue=2)
    action = node.name_of('generate')
    running = ros_client.send_goal(action, prompt='long', steps=150, width=128, height=128)
    assert running.wait_feedback(lambda fb: fb.stage == 'base' and fb.step >= 1, 60)
    queued = ros_client.send_goal(action, prompt='queued')
    assert queued.wait_feedback(lambda fb: fb.stage == 'queued', 30)
    started = time.monotonic()
    node.process.send_signal(signal_number)
    try:
        node.process.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f'{signal_number.name}: still running after 10 s')
    elapsed = time.monotonic() - started
    FIGURES.measured(f'shutdown after {signal_number.name} (s)', round(elapsed, 2))
    assert node.process.returncode == 0, node.log()
    for run in (running, queued):
        response = finish(run, 10)
        assert response.status == status_names().STATUS_ABORTED
        assert 'shutting down' in response.result.message
    assert elapsed < SHUTDOWN_LIMIT_SEC, f'{signal_number.name}: exit took {elapsed:.2f} s'
    assert 'Traceback' not in node.log()
