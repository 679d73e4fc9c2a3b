# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Several devices in one node, without a ROS process: names, checks, queue, retry, diagnostics.

The queue and the scheduler run on goal-handle stand-ins (goal_handles.py); the retry runs the
real GoalRunner on two real tiny engines on the CPU. test_node_devices.py drives the node.
"""

import threading

from goal_handles import GoalHandle
import pytest
from sdxl_ros.engine.config import EngineConfig
from sdxl_ros.engine.devices import (canonical_device, device_problems, engine_device,
                                     memory_problems, parse_devices, weight_bytes)
from sdxl_ros.ros.goal_queue import GoalQueue, QueueFull
from sdxl_ros.ros.goal_runner import Admission
from sdxl_ros.ros.goal_scheduler import GoalScheduler

GIB = 1024 ** 3


def test_device_names_are_canonical_and_listed_once():
    assert canonical_device(' CUDA ') == 'cuda:0' and canonical_device('cpu') == 'cpu:0'
    assert canonical_device('cuda:12') == 'cuda:12'
    devices, problems = parse_devices(['cuda:1', 'cpu:0', 'cpu:1', 'cuda:01'])
    assert devices == ['cuda:1', 'cpu:0', 'cpu:1']
    assert problems == ["devices: 'cuda:01' is listed twice (as cuda:1); each device runs one "
                        'engine (several CPU engines: cpu:0, cpu:1, ...)']
    # A bare name is index 0: 'cpu' twice (or 'cuda' and 'cuda:0') is one device twice.
    assert len(parse_devices(['cpu', 'cpu'])[1]) == 1
    assert len(parse_devices(['cuda', 'cuda:0'])[1]) == 1
    assert parse_devices(['gpu0', 'auto', 'cuda:x'])[1] == [
        f'devices: device {name!r} is not cuda, cuda:N, cpu or cpu:N'
        for name in ('gpu0', 'auto', 'cuda:x')]
    assert engine_device('cpu:1') == 'cpu' and engine_device('cuda:1') == 'cuda:1'
    from sdxl_ros.ros.node_parameters import check_parameters, NodeParameters
    params = NodeParameters.defaults().updated({'devices': ('gpu',), 'device': 'cpu'})
    assert params.device_names() == ['cpu']  # the node still starts, and configure says why:
    assert "devices: device 'gpu' is not cuda, cuda:N, cpu or cpu:N" in check_parameters(
        params, check_models=False)
    assert params.updated({'devices': ('cuda', 'cpu:1')}).device_names() == ['cuda:0', 'cpu:1']
    assert EngineConfig(device='cuda:1').device == 'cuda:1'
    with pytest.raises(ValueError, match='device'):
        EngineConfig(device='cpu:1')  # the slot passes 'cpu' for a CPU engine


def test_memory_problems_compare_weights_with_free_memory():
    assert memory_problems('cuda:0', 13 * GIB, 14 * GIB) == []
    assert memory_problems('cuda:0', 13 * GIB, None) == []  # unknown: not refused
    assert memory_problems('cuda:1', 13 * GIB, 5 * GIB) == [
        'device cuda:1 has not enough memory for the models: their weights need about '
        '13.0 GiB, 5.0 GiB of free memory available; free memory there, list fewer devices, '
        'or use memory_mode model_offload']
    assert memory_problems('cpu:0, cpu:1', 3 * GIB, 2 * GIB, 'host memory')[0].startswith(
        'devices cpu:0, cpu:1 have not enough memory')


def test_a_gpu_that_does_not_exist_is_refused():
    torch = pytest.importorskip('torch')
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    problems = device_problems([f'cuda:{count}'], lambda size: 0)
    assert len(problems) == 1 and problems[0].startswith(f'device cuda:{count} does not exist')


def test_weights_are_counted_from_the_configs_and_cpu_engines_add_up():
    pytest.importorskip('diffusers')
    tiny = EngineConfig(base_model='tiny', refiner_model='tiny')
    # Counted on the meta device: the elements of the tiny base (UNet, encoders, VAE) and
    # refiner UNet; float32 holds each in 4 bytes, float16 in 2.
    assert weight_bytes(tiny, 4) == 2 * weight_bytes(tiny, 2) > 0
    base_only = EngineConfig(base_model='tiny', refiner_model='')
    assert weight_bytes(base_only, 4) < weight_bytes(tiny, 4)
    from sdxl_ros.engine.generation.memory import host_memory
    available = host_memory()[1]
    # Engines on the CPU each hold a copy: refused once the copies exceed the host's memory.
    per_engine = available // 2 + GIB
    problems = device_problems(['cpu:0', 'cpu:1'], lambda size: per_engine)
    assert len(problems) == 1 and 'devices cpu:0, cpu:1 have not enough memory' in problems[0]
    assert device_problems(['cpu:0', 'cpu:1'], lambda size: 1024) == []


def test_each_goal_runs_on_the_next_free_engine():
    queue = GoalQueue(max_waiting=2, engines=2)
    assert [queue.add(key) for key in 'abcd'] == ['a', 'b', None, None]
    assert (queue.engine_of('a'), queue.engine_of('b'), queue.engine_of('c')) == (0, 1, None)
    assert queue.positions() == {'c': 2, 'd': 3}  # the running goals count as ahead
    with pytest.raises(QueueFull, match=r'2 goals are running and 2 waiting \(max_queue 2\)'):
        queue.add('e')
    assert queue.finish('b') == 'c' and queue.engine_of('c') == 1
    assert queue.finish('a') == 'd' and queue.engine_of('d') == 0
    assert len(queue) == 2 and queue.running_keys() == ['c', 'd']


def test_a_failed_engine_leaves_the_rotation_and_its_goal_goes_first():
    queue = GoalQueue(max_waiting=2, engines=2)
    for key in 'abc':
        queue.add(key)
    assert queue.fail('a') is None  # engine 0 out; engine 1 busy: 'a' waits, ahead of 'c'
    assert queue.in_rotation() == [1] and queue.positions() == {'a': 1, 'c': 2}
    assert queue.finish('b') == 'a' and queue.engine_of('a') == 1
    assert queue.fail('a') is None and queue.in_rotation() == []  # the last one: not queued
    assert queue.positions() == {'c': 0}
    with pytest.raises(QueueFull, match='no device is in rotation'):
        queue.add('d')
    assert queue.restore() == ['c'] and queue.in_rotation() == [0, 1]
    assert queue.engine_of('c') == 0


def _accepted(scheduler, count):
    """Hand over `count` goals; return their handles."""
    handles = [GoalHandle(prompt=f'goal {i}') for i in range(count)]
    for handle in handles:
        scheduler.accept(handle, lambda goal: Admission(request=goal))
    return handles


def _retry_in_thread(scheduler, handle):
    """Call scheduler.retry(handle) on a thread, as the goal's execute callback would."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault(
        'engine', scheduler.retry(handle)))
    thread.start()
    return thread, outcome


def test_a_retried_goal_waits_in_its_own_thread_for_the_next_engine():
    scheduler = GoalScheduler(max_waiting=2, engines=2)
    first, second, third = _accepted(scheduler, 3)
    assert first.executed.is_set() and second.executed.is_set()
    assert not third.executed.is_set()
    assert scheduler.admission(first).engine == 0 and scheduler.admission(second).engine == 1
    thread, outcome = _retry_in_thread(scheduler, first)  # engine 0 failed under it
    thread.join(0.5)
    assert thread.is_alive()  # waiting: engine 1 is busy
    scheduler.finished(second)
    thread.join(5)
    assert outcome == {'engine': 1}
    assert not third.executed.is_set()  # the retried goal went first
    scheduler.finished(first)
    assert third.executed.is_set() and scheduler.admission(third).engine == 1


def test_a_retried_goal_cancelled_while_it_waits_leaves_the_queue():
    scheduler = GoalScheduler(max_waiting=2, engines=2)
    first, second = _accepted(scheduler, 2)
    thread, outcome = _retry_in_thread(scheduler, first)
    first.is_cancel_requested = True
    scheduler.cancel(first)
    thread.join(5)
    assert outcome == {'engine': None} and scheduler.queue_length() == 1


def test_when_every_device_failed_the_waiting_goals_end():
    scheduler = GoalScheduler(max_waiting=2, engines=1)
    first, waiting = _accepted(scheduler, 2)
    thread, outcome = _retry_in_thread(scheduler, first)
    thread.join(5)
    assert outcome == {'engine': None}
    assert waiting.executed.is_set()  # its execute callback ends it with the reason
    assert scheduler.admission(waiting).stop_reason == (
        'every device has failed (see /diagnostics)')


def test_one_diagnostics_status_per_device():
    from diagnostic_msgs.msg import DiagnosticStatus
    from sdxl_ros.ros.diagnostics import Health, health_status
    health = Health(node_name='sdxl', node_fqn='/gpu/sdxl', lifecycle_state='active',
                    base_model='tiny', refiner_model='', models_loaded=True, device='cuda:1',
                    queue_length=3, label='cuda:1', devices_in_rotation=1, goal_running=False,
                    error='out of rotation: device cuda:1 failed: generation failed: lost')
    status = health_status(health)
    values = {kv.key: kv.value for kv in status.values}
    assert status.name == 'sdxl: generation cuda:1' and status.hardware_id == 'cuda:1'
    assert status.level == DiagnosticStatus.ERROR and status.message == health.error
    assert values['queue length'] == '3' and values['devices in rotation'] == '1'
    assert values['goal running'] == 'false'


def test_a_goal_whose_device_fails_is_retried_on_another_and_nothing_is_lost():
    from engine_fixtures import TINY_LIMITS
    from sdxl_ros.ros.device_fleet import DeviceFleet
    from sdxl_ros.ros.diagnostics import GoalCounters
    from sdxl_ros.ros.goal_conversion import admit_goal
    from sdxl_ros.ros.goal_runner import GoalRunner
    from sdxl_ros.ros.node_parameters import NodeParameters
    from test_goal_runner import _Log, _Publishing
    params = NodeParameters.defaults().updated({
        'base_model': 'tiny', 'refiner_model': 'tiny', 'default_width': 64,
        'default_height': 64, 'default_steps': 4, 'min_side': 64, 'preview_every_n_steps': 0,
        'devices': ('cpu:0', 'cpu:1'), 'fault_device': 'cpu:0'})
    log, scheduler = _Log(), GoalScheduler(max_waiting=2, engines=2)
    fleet = DeviceFleet(params.device_names(), True, log, scheduler)
    fleet.configure(EngineConfig(base_model='tiny', refiner_model='tiny', limits=TINY_LIMITS))
    assert fleet.load() == ''
    publishing, counters = _Publishing(), GoalCounters()
    runner = GoalRunner(fleet.slots, publishing, log, None, counters, fleet)

    def run(prompt):
        handle = GoalHandle(prompt=prompt, seed=5)
        scheduler.accept(handle, lambda goal: Admission(admit_goal(goal, params, None)[0]))
        result = runner.run(handle, scheduler.admission(handle), params)
        scheduler.finished(handle)
        return handle, result

    handle, result = run('a robot')
    assert handle.status == 'succeeded' and result.message == '' and len(result.images) == 1
    devices = [fb.device for fb in handle.feedback if fb.stage in ('base', 'refiner')]
    assert devices[0] == 'cpu:0' and devices[-1] == 'cpu:1'  # one step on cpu:0, then retried
    assert fleet.failures[0] == ('device cpu:0 failed: generation failed: device lost (test '
                                 'hook fault_device)')
    assert fleet.failures[1] == '' and scheduler.in_rotation() == [1]
    assert counters.snapshot()[0]['served'] == 1 and counters.snapshot()[0]['failed'] == 0
    # The next goal goes straight to the device still in rotation.
    handle, result = run('a second robot')
    assert handle.status == 'succeeded'
    assert {fb.device for fb in handle.feedback if fb.stage == 'base'} == {'cpu:1'}
    # Reactivating loads the models again and brings the device back.
    fleet.unload()
    assert fleet.load() == '' and scheduler.in_rotation() == [0, 1] and fleet.failures[0] == ''
    fleet.clear()
