# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Reliability: cancel at every stage (queued, loading, base, refiner, decoding) and cancel storms.

Every goal must reach a terminal state, a cancelled goal ends CANCELED with a reason and no
image, and ~/image carries exactly the images of the goals that succeeded.
"""

import threading

import pytest

from reliability_report import finish, image_qos, module_node, settle
from ros_harness import assert_served, status_names, wait_for, wait_future

pytestmark = [pytest.mark.ros, pytest.mark.reliability]

#: Enough steps that a goal is still denoising when the test reacts to its feedback.
LONG_STEPS = 150
NODE = {'default_steps': 2, 'max_queue': 12}


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory):
    """One node for the module, with room for a dozen queued goals."""
    yield from module_node(ros_client, tmp_path_factory, NODE)


@pytest.fixture
def images(ros_client, node):
    """Images published on ~/image during the test; checked against the goals at the end."""
    from sensor_msgs.msg import Image
    received = ros_client.subscribe(Image, node.name_of('image'), image_qos())
    assert wait_for(lambda: ros_client.node.count_publishers(node.name_of('image')), 10)
    yield received


def _assert_published(images, responses):
    """~/image got exactly the images of the succeeded goals among `responses`."""
    succeeded = [r for r in responses if r.status == status_names().STATUS_SUCCEEDED]
    assert settle(images) == sum(len(r.result.images) for r in succeeded)


def _assert_cancelled(response, *words):
    assert response.status == status_names().STATUS_CANCELED, response.result.message
    assert 'cancel' in response.result.message
    for word in words:
        assert word in response.result.message
    assert len(response.result.images) == 0


def _stages_after(run, moment):
    return [fb.stage for t, fb in list(run.feedback) if t > moment]


def _cancel_at(ros_client, node, stage, **fields):
    """Send a goal, cancel it at its first feedback of `stage`; return (run, response)."""
    run = ros_client.send_goal(node.name_of('generate'), **dict({'prompt': 'a robot'},
                                                                **fields))
    assert run.wait_feedback(lambda fb: fb.stage == stage, 60), run.stages()
    assert len(run.cancel().goals_canceling) == 1
    return run, finish(run, 30)


def _serve_next(ros_client, node):
    """Check the node serves a goal after the cancels; return its response."""
    response = finish(ros_client.send_goal(node.name_of('generate'), prompt='next'), 60)
    assert_served(response)
    return response


def test_cancel_while_queued(ros_client, node, images):
    """A queued goal cancelled ends CANCELED without ever running; the running one goes on."""
    action = node.name_of('generate')
    running = ros_client.send_goal(action, prompt='long', steps=LONG_STEPS, seed=1)
    assert running.wait_feedback(lambda fb: fb.stage == 'base', 60)
    queued = ros_client.send_goal(action, prompt='queued', seed=2)
    assert queued.wait_feedback(lambda fb: fb.stage == 'queued', 30).queue_position == 1
    assert len(queued.cancel().goals_canceling) == 1
    _assert_cancelled(finish(queued, 30), 'queued')
    assert set(queued.stages()) == {'queued'}
    assert running.wait_feedback(lambda fb: fb.stage == 'base' and fb.step >= 3, 60)
    running.cancel()
    _assert_cancelled(finish(running, 30))
    _assert_published(images, [_serve_next(ros_client, node)])


def test_cancel_while_loading(ros_client, node, images):
    """A goal cancelled while the models reload ends CANCELED before any denoising step."""
    assert ros_client.set_parameters(node.fqn, refiner_model='')[0].successful
    try:
        run, response = _cancel_at(ros_client, node, 'loading', seed=3)
        _assert_cancelled(response)
        assert [s for s in run.stages() if s != 'loading'] == [], run.stages()
    finally:
        assert ros_client.set_parameters(node.fqn, refiner_model='tiny')[0].successful
    after = _serve_next(ros_client, node)
    assert 'Refiner: tiny' in after.result.parameters
    _assert_published(images, [after])


def test_cancel_while_base(ros_client, node, images):
    """Cancelled while the base denoises: stops within a few steps, never decodes."""
    run, response = _cancel_at(ros_client, node, 'base', steps=LONG_STEPS, seed=4)
    _assert_cancelled(response, 'generating')
    steps = [fb.step for _, fb in run.feedback if fb.stage == 'base']
    assert max(steps) < LONG_STEPS
    assert 'decoding' not in run.stages() and 'refiner' not in run.stages()
    _assert_published(images, [response, _serve_next(ros_client, node)])


def test_cancel_while_refiner(ros_client, node, images):
    """Cancelled while the refiner denoises: ends CANCELED, never decodes."""
    run, response = _cancel_at(ros_client, node, 'refiner', steps=LONG_STEPS,
                               refiner_switch=0.2, seed=5)
    _assert_cancelled(response, 'generating')
    refiner_steps = [fb.step for _, fb in run.feedback if fb.stage == 'refiner']
    assert max(refiner_steps) < LONG_STEPS
    assert 'decoding' not in run.stages()
    _assert_published(images, [response, _serve_next(ros_client, node)])


def test_cancel_while_decoding(ros_client, node, images):
    """Cancelled while the VAE decodes (512x512 takes ~1 s here): the image is not published."""
    run, response = _cancel_at(ros_client, node, 'decoding', width=512, height=512, steps=2,
                               seed=6)
    _assert_cancelled(response)
    _assert_published(images, [response, _serve_next(ros_client, node)])


def test_cancel_storm_on_one_goal(ros_client, node, images):
    """Twenty concurrent cancel requests for one running goal: one CANCELED end, no crash."""
    run = ros_client.send_goal(node.name_of('generate'), prompt='storm', steps=LONG_STEPS)
    assert run.wait_feedback(lambda fb: fb.stage == 'base', 60)
    futures = [run.handle.cancel_goal_async() for _ in range(20)]
    answers = [wait_future(future, 30) for future in futures]
    assert any(len(answer.goals_canceling) == 1 for answer in answers)
    _assert_cancelled(finish(run, 30))
    late = wait_future(run.handle.cancel_goal_async(), 30)
    assert late.return_code == late.ERROR_GOAL_TERMINATED and not late.goals_canceling
    _assert_published(images, [_serve_next(ros_client, node)])


def test_cancel_and_resend_storm(ros_client, node, images):
    """Ten rounds of send, cancel at once, send again: all 20 end, each resent goal is served."""
    action = node.name_of('generate')
    cancelled, resent = [], []
    for round_ in range(10):
        fields = {'prompt': f'round {round_}', 'steps': 4, 'seed': 100 + round_}
        run = ros_client.send_goal(action, **fields)
        run.cancel()
        cancelled.append(run)
        resent.append(ros_client.send_goal(action, **fields))
    cancelled_responses = [finish(run, 60) for run in cancelled]
    resent_responses = [finish(run, 120) for run in resent]
    for response in resent_responses:
        assert_served(response)
    for run, response in zip(cancelled, cancelled_responses):
        # A cancel that arrives after the last step cannot stop the goal any more.
        assert response.status in (status_names().STATUS_CANCELED,
                                   status_names().STATUS_SUCCEEDED), response
        if response.status == status_names().STATUS_CANCELED:
            _assert_cancelled(response)
    assert sum(r.status == status_names().STATUS_CANCELED for r in cancelled_responses) >= 5
    _assert_published(images, cancelled_responses + resent_responses)


def test_cancel_all_goals(ros_client, node, images):
    """One CancelGoal request for all goals (zero id and stamp) ends running and queued goals."""
    from action_msgs.srv import CancelGoal
    action = node.name_of('generate')
    runs = [ros_client.send_goal(action, prompt='running', steps=LONG_STEPS)]
    assert runs[0].wait_feedback(lambda fb: fb.stage == 'base', 60)
    runs += [ros_client.send_goal(action, prompt=f'queued {i}') for i in range(4)]
    assert runs[-1].wait_feedback(lambda fb: fb.stage == 'queued', 30)
    answer = ros_client.call(CancelGoal, f'{action}/_action/cancel_goal')
    assert len(answer.goals_canceling) == 5
    for run in runs:
        _assert_cancelled(finish(run, 30))
    _assert_published(images, [_serve_next(ros_client, node)])


def test_cancel_from_many_threads_while_goals_arrive(ros_client, node, images):
    """Goals sent and cancelled from several threads at once all reach a terminal state."""
    action = node.name_of('generate')
    runs, errors = [], []

    def worker(index):
        try:
            for j in range(3):
                run = ros_client.send_goal(action, prompt=f'thread {index}', steps=2 + j)
                runs.append(run)
                if j != 1:
                    run.cancel()
        except Exception as error:  # noqa: B902 (reported below)
            errors.append(error)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    responses = [finish(run, 120) for run in runs]
    assert len(responses) == 12
    terminal = {status_names().STATUS_SUCCEEDED, status_names().STATUS_CANCELED}
    assert {r.status for r in responses} <= terminal, [r.result.message for r in responses]
    _assert_published(images, responses + [_serve_next(ros_client, node)])
    assert node.alive
