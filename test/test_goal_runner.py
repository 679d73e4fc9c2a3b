# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
GoalRunner on a real EngineSlot (tiny preset, CPU): how a goal ends, without a ROS process.

The goal handle is a stand-in (goal_handles.py); the node tests drive the real one.
"""

from contextlib import contextmanager
import threading

from engine_fixtures import TINY_LIMITS
from goal_handles import GoalHandle
import pytest
from sdxl_ros.engine import EngineConfig
from sdxl_ros.engine.engine_slot import EngineSlot
from sdxl_ros.ros.diagnostics import GoalCounters
from sdxl_ros.ros.goal_conversion import admit_goal
from sdxl_ros.ros.goal_runner import Admission, GoalRunner
from sdxl_ros.ros.goal_scheduler import GoalScheduler
from sdxl_ros.ros.image_conversion import numpy_to_image_msg
from sdxl_ros.ros.node_parameters import NodeParameters

TINY = EngineConfig(base_model='tiny', refiner_model='tiny', device='cpu', limits=TINY_LIMITS)
PARAMS = NodeParameters.defaults().updated({
    'base_model': 'tiny', 'refiner_model': 'tiny', 'device': 'cpu', 'default_width': 64,
    'default_height': 64, 'default_steps': 4, 'min_side': 64, 'preview_every_n_steps': 0})


class _Log:
    """Collects what the runner and the slot log."""

    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    warn = error = info


class _Publishing:
    """Builds the result messages as the node does; keeps them instead of publishing."""

    def __init__(self):
        self.images, self.previews = [], []

    def results(self, result, frame_id, output_dir):
        images = [numpy_to_image_msg(image, frame_id=frame_id) for image in result.images]
        self.images.extend(images)
        return images

    def preview(self, pixels, frame_id):
        self.previews.append(pixels)


class _PausingSlot(EngineSlot):
    """The real slot, whose engine() first waits for the test: forces an interleaving."""

    def __init__(self, log):
        super().__init__(log)
        self.entering, self.proceed = threading.Event(), threading.Event()

    @contextmanager
    def engine(self, on_loading=None):
        self.entering.set()
        assert self.proceed.wait(10)
        with super().engine(on_loading) as engine:
            yield engine


def _runner(slot=None):
    """Return (runner, slot, publishing, counters) on a loaded tiny slot."""
    log = _Log()
    slot = slot or EngineSlot(log)
    slot.configure(TINY)
    assert slot.load() == ''
    publishing, counters = _Publishing(), GoalCounters()
    runner = GoalRunner(slot, publishing, log, take_frame=None, counters=counters)
    return runner, slot, publishing, counters


def _admitted(**goal_fields):
    """Return (handle, Admission) of a goal the node would admit."""
    handle = GoalHandle(**dict({'prompt': 'a robot', 'seed': 3}, **goal_fields))
    request, topic = admit_goal(handle.request, PARAMS, None)
    admission = Admission(request, init_topic=topic)
    admission.goal_handle = handle
    return handle, admission


@pytest.fixture(scope='module')
def loaded():
    """One runner on a loaded tiny slot for the tests that do not unload it."""
    return _runner()


def test_a_goal_is_generated_published_and_counted(loaded):
    runner, _, publishing, counters = loaded
    handle, admission = _admitted(steps=3)
    result = runner.run(handle, admission, PARAMS)
    assert handle.status == 'succeeded' and result.message == ''
    assert len(result.images) == 1 and result.images[0].width == 64
    assert result.images[0] is publishing.images[-1]
    assert list(result.seeds) == [3] and 'Seed: 3' in result.parameters
    assert 'base' in handle.stages()
    assert counters.snapshot()[0]['served'] >= 1


def test_a_refusal_aborts_with_its_reason(loaded):
    runner, _, _, counters = loaded
    refused = counters.snapshot()[0]['refused']
    handle = GoalHandle(prompt='x')
    result = runner.run(handle, Admission(refusal='refused: too big'), PARAMS)
    assert handle.status == 'aborted' and result.message == 'refused: too big'
    assert handle.feedback == []
    assert counters.snapshot()[0]['refused'] == refused + 1


def test_cancelled_or_stopped_before_the_turn_came():
    runner, _, publishing, _ = _runner()
    handle, admission = _admitted()
    handle.is_cancel_requested = True
    result = runner.run(handle, admission, PARAMS)
    assert handle.status == 'canceled'
    assert result.message == 'cancelled while queued; nothing was generated'
    handle, admission = _admitted()
    admission.stop('node deactivated')
    result = runner.run(handle, admission, PARAMS)
    assert handle.status == 'aborted'
    assert result.message == 'node deactivated while the goal was queued'
    assert publishing.images == []


class _CancelledAtFirstStep(GoalHandle):
    """A goal whose client asks to cancel once the first base step was reported."""

    def publish_feedback(self, feedback):
        super().publish_feedback(feedback)
        if feedback.stage == 'base':
            self.is_cancel_requested = True


def test_a_cancel_during_generation_publishes_nothing():
    runner, _, publishing, _ = _runner()
    handle = _CancelledAtFirstStep(prompt='a robot', steps=6)
    admission = Admission(admit_goal(handle.request, PARAMS, None)[0])
    result = runner.run(handle, admission, PARAMS)
    assert handle.status == 'canceled' and 'decoding' not in handle.stages()
    assert result.message == 'cancelled while generating; no image was published'
    assert publishing.images == []


def test_a_deactivate_between_the_stop_check_and_the_engine_leaves_no_models():
    # The goal passed run()'s stop check; a deactivate (what SdxlNode._release does: stop the
    # goals, unload the slot) lands before it asks the slot for the engine. The slot must not
    # load the models again for it: an inactive node holds none.
    log = _Log()
    runner, slot, publishing, _ = _runner(_PausingSlot(log))
    scheduler = GoalScheduler(max_waiting=1)
    handle = GoalHandle(prompt='a robot', steps=3)
    scheduler.accept(handle, lambda goal: _admitted(steps=3)[1])
    assert handle.executed.is_set()
    results = []
    goal = threading.Thread(target=lambda: results.append(
        runner.run(handle, scheduler.admission(handle), PARAMS)))
    goal.start()
    assert slot.entering.wait(10)  # the goal passed its stop check
    scheduler.stop_all('node deactivated')
    assert slot.unload() is True and not slot.is_loaded
    slot.proceed.set()
    goal.join(30)
    assert not goal.is_alive()
    assert not slot.is_loaded, 'the goal loaded the models of an inactive node again'
    assert sum('loading models' in line for line in log.lines) == 1
    assert handle.status == 'aborted'
    assert results[0].message.startswith('node deactivated')
    assert publishing.images == []


def test_ignored_prompt_tags_are_named_in_the_result_message(loaded):
    runner, _, _, _ = loaded
    handle, admission = _admitted(steps=1, prompt='a robot <hypernet:x:1>')
    result = runner.run(handle, admission, PARAMS)
    assert handle.status == 'succeeded' and len(result.images) == 1
    assert result.message.startswith('prompt: ignored <hypernet:x:1> (removed from the text')
