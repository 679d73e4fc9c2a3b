# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""sdxl_node in its own process, driven by real rclpy clients (tiny preset, CPU, 64x64)."""

import math
from pathlib import Path

import numpy as np
import pytest

from ros_harness import assert_refused, RosClient, wait_for

pytestmark = pytest.mark.ros

#: Enough steps that a goal is still running when the test reacts to its first feedback.
LONG_STEPS = 150


def _ros():
    """Import the ROS names the tests use (rclpy present: the ros mark skips otherwise)."""
    from action_msgs.msg import GoalStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    return GoalStatus, DurabilityPolicy, QoSProfile, ReliabilityPolicy, Image


def _status():
    return _ros()[0]


def _image_qos(reliable=True):
    _, durability, profile, reliability, _ = _ros()
    if reliable:
        return profile(depth=1, reliability=reliability.RELIABLE,
                       durability=durability.TRANSIENT_LOCAL)
    return profile(depth=10, reliability=reliability.BEST_EFFORT,
                   durability=durability.VOLATILE)


def _pixels(msg):
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy
    return image_msg_to_numpy(msg)


def _denoising(run):
    return [fb for _, fb in run.feedback if fb.stage in ('base', 'refiner')]


def test_goal_succeeds_with_feedback_every_step(ros_client, shared_node):
    """A goal succeeds; feedback arrives at least once per step, with stages and ETA."""
    steps = 6
    run, response = ros_client.generate(shared_node.name_of('generate'), prompt='a robot',
                                        steps=steps, seed=7)
    assert response.status == _status().STATUS_SUCCEEDED, response.result.message
    result = response.result
    assert result.message == ''
    assert list(result.seeds) == [7]
    assert len(result.images) == 1
    image = result.images[0]
    assert (image.width, image.height, image.encoding, image.step) == (64, 64, 'rgb8', 192)
    assert 'Seed: 7' in result.parameters and 'Steps: 6' in result.parameters
    assert result.elapsed_sec > 0
    denoising = _denoising(run)
    assert len(denoising) >= steps
    assert [fb.step for fb in denoising][-1] == steps
    assert all(fb.total_steps == steps for fb in denoising)
    assert 'decoding' in run.stages()
    assert all(math.isfinite(fb.eta_sec) and fb.eta_sec >= 0 for fb in denoising)


def test_image_topic_carries_the_result_image(ros_client, shared_node):
    """~/image (reliable, transient local) holds the result image, stamped, with frame_id."""
    _, response = ros_client.generate(shared_node.name_of('generate'), prompt='a lighthouse',
                                      seed=3)
    assert response.status == _status().STATUS_SUCCEEDED
    result_image = response.result.images[0]
    # A late subscriber still gets the last image (TRANSIENT_LOCAL).
    late = RosClient('late_subscriber')
    try:
        received = late.subscribe(_ros()[4], shared_node.name_of('image'), _image_qos())
        assert wait_for(lambda: received, 20), 'no image on ~/image'
        image = received[-1]
        assert image.header.stamp == result_image.header.stamp
        assert image.header.stamp.sec > 0
        assert image.header.frame_id == 'sdxl'
        assert np.array_equal(_pixels(image), _pixels(result_image))
    finally:
        late.close()


def test_previews_arrive(ros_client, shared_node):
    """With preview_every_n_steps 2, previews are published (BEST_EFFORT) while generating."""
    previews = ros_client.subscribe(_ros()[4], shared_node.name_of('preview'),
                                    _image_qos(reliable=False))
    # Let the subscription match before the goal starts.
    wait_for(lambda: ros_client.node.count_publishers(shared_node.name_of('preview')), 10)
    _, response = ros_client.generate(shared_node.name_of('generate'), prompt='a cat',
                                      steps=8, seed=1)
    assert response.status == _status().STATUS_SUCCEEDED
    assert wait_for(lambda: previews, 10), 'no preview arrived'
    assert previews[0].encoding == 'rgb8'
    assert _pixels(previews[0]).shape[2] == 3


def test_output_dir_gets_png_with_infotext(ros_client, shared_node):
    """output_dir: the node saves a PNG with the infotext; the name is the node's choice."""
    from sdxl_ros.engine.png_io import read_png_parameters
    out = Path(shared_node.parameters['output_dir'])
    before = set(out.glob('*.png'))
    _, response = ros_client.generate(shared_node.name_of('generate'), prompt='a tree',
                                      seed=11)
    assert response.status == _status().STATUS_SUCCEEDED
    new = set(out.glob('*.png')) - before
    assert len(new) == 1
    path = new.pop()
    assert path.name.endswith('-0-11.png')
    assert read_png_parameters(path) == response.result.parameters


# An empty or blank prompt is not among them: it generates, as in A1111 (test_node_prompts).
INVALID_GOALS = [
    ({'prompt': 'x' * 5000}, ['prompt', '4000']),
    ({'width': 100}, ['width', 'multiple of 8']),
    ({'width': 32}, ['width', '64..2048']),
    ({'height': 4096}, ['height']),
    ({'steps': 151}, ['steps', '1..150']),
    ({'guidance_scale': float('nan')}, ['guidance_scale']),
    ({'guidance_scale': 50.0}, ['guidance_scale']),
    ({'refiner_switch': 1.5}, ['refiner_switch']),
    ({'refiner_switch': -0.5}, ['refiner_switch']),
    ({'seed': -7}, ['seed']),
    ({'seed': 2 ** 32}, ['seed']),
    ({'scheduler': 'Warp Drive'}, ['scheduler', 'Warp Drive']),
    ({'num_images': 9}, ['num_images', '1..8']),
]


def test_invalid_goals_are_refused_with_reasons(ros_client, shared_node):
    """Each kind of invalid goal is refused with the engine's message; the node stays up."""
    action = shared_node.name_of('generate')
    runs = []
    for fields, words in INVALID_GOALS:
        goal = dict({'prompt': 'a robot'}, **fields)
        runs.append((ros_client.send_goal(action, **goal), words))
    for run, words in runs:
        assert_refused(run.result(30), *words)
        assert run.feedback == []
    assert shared_node.alive
    _, response = ros_client.generate(action, prompt='still alive', seed=2)
    assert response.status == _status().STATUS_SUCCEEDED


def test_cancel_while_running_publishes_nothing(ros_client, shared_node):
    """A running goal is cancelled within a step or two; it ends CANCELED, nothing published."""
    from sdxl_ros.action import GenerateImage  # noqa: F401 (message types registered)
    images = ros_client.subscribe(_ros()[4], shared_node.name_of('image'), _image_qos())
    wait_for(lambda: images, 5)  # the last image of earlier tests, if any
    seen = len(images)
    run = ros_client.send_goal(shared_node.name_of('generate'), prompt='slow',
                               steps=LONG_STEPS, seed=5)
    assert run.wait_feedback(lambda fb: fb.stage == 'base' and fb.step >= 2, 60)
    assert len(run.cancel().goals_canceling) == 1
    response = run.result(30)
    assert response.status == _status().STATUS_CANCELED
    assert 'cancel' in response.result.message
    assert len(response.result.images) == 0
    last = _denoising(run)[-1]
    assert last.step < LONG_STEPS
    assert 'decoding' not in run.stages()
    assert len(images) == seen


def test_two_clients_are_served_fifo_and_queued_goal_can_be_cancelled(
        ros_client, shared_node):
    """Goals of two clients run in order; the second waits 'queued'; a queued cancel works."""
    action = shared_node.name_of('generate')
    other = RosClient('second_client')
    try:
        # Discovery of a new participant can take seconds (Jazzy): finish it before the
        # first goal starts, or the first goal may end before the second is even sent.
        other.connect(action)
        first = ros_client.send_goal(action, prompt='first', steps=60, width=128, height=128,
                                     seed=1)
        second = other.send_goal(action, prompt='second', steps=4, seed=2)
        assert second.wait_feedback(lambda fb: fb.stage == 'queued', 30).queue_position == 1
        first_response = first.result()
        second_response = second.result()
        assert first_response.status == _status().STATUS_SUCCEEDED
        assert second_response.status == _status().STATUS_SUCCEEDED
        first_done = max(t for t, _ in first.feedback)
        second_started = min(t for t, fb in second.feedback if fb.stage == 'base')
        assert first_done <= second_started

        running = ros_client.send_goal(action, prompt='long', steps=LONG_STEPS, seed=3)
        assert running.wait_feedback(lambda fb: fb.stage == 'base', 60)
        queued = other.send_goal(action, prompt='queued', steps=4, seed=4)
        assert queued.wait_feedback(lambda fb: fb.stage == 'queued', 30)
        queued.cancel()
        response = queued.result(30)
        assert response.status == _status().STATUS_CANCELED
        assert 'queued' in response.result.message
        assert not [fb for _, fb in queued.feedback if fb.stage != 'queued']
        running.cancel()
        assert running.result(30).status == _status().STATUS_CANCELED
    finally:
        other.close()


def test_full_queue_is_refused_with_a_reason(ros_client, shared_node):
    """With max_queue 1: one running, one waiting, the third is refused, saying why."""
    action = shared_node.name_of('generate')
    running = ros_client.send_goal(action, prompt='long', steps=LONG_STEPS, seed=1)
    assert running.wait_feedback(lambda fb: fb.stage == 'base', 60)
    waiting = ros_client.send_goal(action, prompt='waiting', steps=4, seed=2)
    refused = ros_client.send_goal(action, prompt='one too many', steps=4, seed=3)
    assert_refused(refused.result(30), 'queue is full', 'max_queue 1')
    running.cancel()
    assert running.result(30).status == _status().STATUS_CANCELED
    assert waiting.result(60).status == _status().STATUS_SUCCEEDED


def test_list_models(ros_client, shared_node):
    """~/list_models lists the presets and the models in use."""
    from sdxl_ros.srv import ListModels
    response = ros_client.call(ListModels, shared_node.name_of('list_models'))
    assert 'tiny' in response.models and 'sdxl-random' in response.models
    assert (response.base_model, response.refiner_model) == ('tiny', 'tiny')
    assert response.model_dir == ''


def test_list_models_finds_checkpoints_and_folders(ros_client, start_node, tmp_path):
    """Checkpoints and diffusers folders in model_dir are listed before the presets."""
    from sdxl_ros.srv import ListModels
    models = tmp_path / 'models'
    (models / 'folder_model').mkdir(parents=True)
    (models / 'folder_model' / 'model_index.json').write_text('{}')
    (models / 'sd_xl_base_1.0.safetensors').write_bytes(b'')
    (models / 'notes.txt').write_text('not a model')
    node = start_node(model_dir=str(models))
    response = ros_client.call(ListModels, node.name_of('list_models'))
    assert list(response.models) == ['folder_model', 'sd_xl_base_1.0.safetensors', 'tiny',
                                     'sdxl-random']
    assert response.model_dir == str(models.resolve())


def test_parameter_change_reloads_the_model(ros_client, start_node):
    """Setting refiner_model at run time reloads before the next goal ('loading' feedback)."""
    from sdxl_ros.srv import ListModels
    node = start_node()
    action = node.name_of('generate')
    _, before = ros_client.generate(action, prompt='a robot', seed=7)
    assert 'Refiner: tiny' in before.result.parameters
    bad = ros_client.set_parameters(node.fqn, base_model='missing.safetensors')
    assert not bad[0].successful and 'not found' in bad[0].reason
    bad = ros_client.set_parameters(node.fqn, device='tpu')
    assert not bad[0].successful and 'device' in bad[0].reason
    results = ros_client.set_parameters(node.fqn, refiner_model='')
    assert results[0].successful, results[0].reason
    run, after = ros_client.generate(action, prompt='a robot', seed=7)
    assert after.status == _status().STATUS_SUCCEEDED, after.result.message
    assert run.stages()[0] == 'loading'
    assert 'Refiner: ' not in after.result.parameters
    assert 'loading models' in node.log()
    listing = ros_client.call(ListModels, node.name_of('list_models'))
    assert listing.refiner_model == ''


def test_deactivate_frees_and_activate_restores(ros_client, start_node):
    """Lifecycle through ~/change_state: inactive refuses goals; active again serves them."""
    from lifecycle_msgs.msg import Transition
    node = start_node()
    action = node.name_of('generate')
    assert ros_client.lifecycle_state(node.fqn) == 'active'
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_DEACTIVATE)
    assert ros_client.lifecycle_state(node.fqn) == 'inactive'
    assert 'models unloaded' in node.log()
    _, response = ros_client.generate(action, prompt='a robot')
    assert_refused(response, 'not active')
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_ACTIVATE)
    assert ros_client.lifecycle_state(node.fqn) == 'active'
    _, response = ros_client.generate(action, prompt='a robot', seed=1)
    assert response.status == _status().STATUS_SUCCEEDED
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_DEACTIVATE)
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_CLEANUP)
    assert ros_client.lifecycle_state(node.fqn) == 'unconfigured'
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_CONFIGURE)
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_ACTIVATE)
    _, response = ros_client.generate(action, prompt='a robot', seed=1)
    assert response.status == _status().STATUS_SUCCEEDED


def test_deactivate_aborts_the_running_goal(ros_client, start_node):
    """Deactivating mid-generation aborts the goal with the reason and still frees."""
    from lifecycle_msgs.msg import Transition
    node = start_node()
    run = ros_client.send_goal(node.name_of('generate'), prompt='long', steps=LONG_STEPS)
    assert run.wait_feedback(lambda fb: fb.stage == 'base', 60)
    assert ros_client.change_state(node.fqn, Transition.TRANSITION_DEACTIVATE)
    response = run.result(30)
    assert response.status == _status().STATUS_ABORTED
    assert 'deactivated' in response.result.message


def test_out_of_memory_aborts_and_the_next_goal_works(ros_client, start_node):
    """An OOM during generation aborts that goal with the reason; the node keeps serving."""
    node = start_node(fault_oom_at_step=2)
    action = node.name_of('generate')
    _, response = ros_client.generate(action, prompt='a robot', steps=4)
    assert response.status == _status().STATUS_ABORTED
    assert 'out of memory' in response.result.message
    assert node.alive
    assert ros_client.set_parameters(node.fqn, fault_oom_at_step=0)[0].successful
    _, response = ros_client.generate(action, prompt='a robot', steps=4)
    assert response.status == _status().STATUS_SUCCEEDED, response.result.message


def test_node_without_models_reports_why(ros_client, tmp_path):
    """With autostart and a missing checkpoint: the node stays unconfigured and logs the reason."""
    from ros_harness import NodeProcess
    node = NodeProcess(tmp_path, {'base_model': 'sd_xl_base_1.0.safetensors',
                                  'model_dir': str(tmp_path)}).start()

    def unconfigured():
        try:
            return ros_client.lifecycle_state(node.fqn, 5.0) == 'unconfigured'
        except TimeoutError:  # still importing torch
            return False

    try:
        assert wait_for(lambda: 'cannot configure' in node.log() and unconfigured(), 90)
        assert 'sd_xl_base_1.0.safetensors' in node.log()
        _, response = ros_client.generate(node.name_of('generate'), prompt='a robot')
        assert_refused(response, 'not active')
    finally:
        node.stop()


def test_stopping_the_node_aborts_the_running_goal(ros_client, start_node):
    """SIGINT while generating: the goal ends aborted with the reason; the node exits 0."""
    node = start_node()
    run = ros_client.send_goal(node.name_of('generate'), prompt='long', steps=LONG_STEPS,
                               width=256, height=256)
    assert run.wait_feedback(lambda fb: fb.stage == 'base', 60)
    assert node.stop(timeout=15) == 0
    response = run.result(15)
    assert response.status == _status().STATUS_ABORTED
    assert 'shutting down' in response.result.message


#: Other processes must stop seeing a stopped node this soon after its SIGINT (seconds).
GRAPH_VANISH_LIMIT_SEC = 2.0


def test_stopped_node_vanishes_from_the_graph(ros_client, start_node):
    """After SIGINT, the node and its action leave other processes' graph within 2 s."""
    import signal
    import time
    from rclpy.action import get_action_names_and_types
    node = start_node()
    namespace, name, action = node.namespace, node.name, node.name_of('generate')

    def node_seen():
        return (name, namespace) in ros_client.node.get_node_names_and_namespaces()

    def action_seen():
        return action in dict(get_action_names_and_types(ros_client.node))

    assert wait_for(lambda: node_seen() and action_seen(), 30), 'node never seen in the graph'
    started = time.monotonic()
    node.process.send_signal(signal.SIGINT)
    assert wait_for(lambda: not node_seen() and not action_seen(), 10), 'still in the graph'
    vanished = time.monotonic() - started
    assert node.process.wait(10) == 0
    print(f'node and action vanished from the graph {vanished:.2f} s after SIGINT')
    assert vanished < GRAPH_VANISH_LIMIT_SEC, f'vanished after {vanished:.2f} s'


def test_cleanup_after_deactivate_unloads_once_and_finalized_refuses_as_shutting_down(
        ros_client, start_node):
    """Deactivate frees the models (logged once); after shutdown goals hear 'shutting down'."""
    from lifecycle_msgs.msg import Transition
    node = start_node()
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP,
                       Transition.TRANSITION_UNCONFIGURED_SHUTDOWN):
        assert ros_client.change_state(node.fqn, transition), transition
    assert ros_client.lifecycle_state(node.fqn) == 'finalized'
    assert node.log().count('models unloaded') == 1, node.log()
    _, response = ros_client.generate(node.name_of('generate'), prompt='a robot')
    assert_refused(response, 'shutting down')
    assert 'configure' not in response.result.message
