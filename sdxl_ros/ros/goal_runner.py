# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The execute path of one goal: from its turn to its terminal state, with feedback.

The node decides when a goal runs (goal_queue.py); this module decides how it ends: refused,
cancelled or stopped before it ran, or generated (models reloaded first when their parameters
changed), then succeeded, cancelled or aborted with the reason. It blocks for the whole
generation, so the node calls it from a plain `def` execute callback of a reentrant group under
a multi-threaded executor, where cancel requests are still served. With several devices, a
goal runs on the engine the scheduler gave it; when that device fails the goal is retried once
on another one (see `GoalRunner`).
"""

import threading

from sdxl_ros.action import GenerateImage
from sdxl_ros.engine import EngineError, GenerationCancelled, Progress
from sdxl_ros.engine.errors import ModelLoadError, OutOfMemory
from sdxl_ros.engine.request import RequestError, validate_request
from sdxl_ros.ros.goal_conversion import goal_to_request, progress_to_feedback


class Admission:
    """One accepted goal until its end: the request or why it is refused, and its stop flag."""

    def __init__(self, request=None, refusal='', init_topic='', control_topics=()):
        """Hold a validated request (and its frame topics), or a refusal message."""
        self.request = request
        self.refusal = refusal
        self.init_topic = init_topic
        #: [(unit index, topic)] of the ControlNet units that take their image from a topic.
        self.control_topics = list(control_topics)
        self.stop_reason = ''
        self.cancel = threading.Event()
        self.goal_handle = None
        self.engine = None  # index of the engine (device) the goal runs on; None = the first
        self.executing = False  # its execute callback was started
        self.resumed = threading.Event()  # another engine took it after its device failed

    def stop(self, reason):
        """Ask the goal to end aborted with `reason` (a running one stops at its next step)."""
        self.stop_reason = reason
        self.cancel.set()


def memory_refusal(engine, request):
    """On CUDA: a reason to refuse when the request would not fit free memory, else ''."""
    usable = engine.usable_memory_bytes()
    if usable is None:
        return ''
    need = engine.estimate_memory_bytes(request)
    if need <= usable:
        return ''
    gib = 1024 ** 3
    return (f'refused: {request.width}x{request.height} x{request.num_images} needs about '
            f'{need / gib:.1f} GiB but only {usable / gib:.1f} GiB of GPU memory is '
            'usable; use a smaller size, vae_tiling or memory_mode model_offload')


class DeviceFailed(Exception):
    """The device of an engine failed during a goal (not the request's fault)."""


class GoalRunner:
    """
    Runs admitted goals on the engine slots and ends each with a result.

    With several slots (one per device), an engine error during a goal that is neither the
    request's fault nor out of memory counts as the device failing: `fleet.device_failed`
    takes it out of rotation and `fleet.retry` waits for another engine, on which the goal
    runs again from its start; a goal that fails on a second device too is aborted (two
    devices failing on one goal point at the goal), and that device stays in rotation.
    """

    def __init__(self, slots, publishing, logger, take_frame, counters=None, fleet=None):
        """
        Use `slots` (one EngineSlot, or one per device), `publishing`, `take_frame`, `counters`.

        `fleet` (device_fleet.DeviceFleet): `names` (device names, slot order),
        `device_failed(index, message)` and `retry(goal_handle)` (the new engine index, or
        None).
        """
        self._slots = list(slots) if isinstance(slots, (list, tuple)) else [slots]
        self._publishing = publishing
        self._log = logger
        self._take_frame = take_frame
        self._counters = counters
        self._fleet = fleet

    def _count(self, outcome, message=''):
        """Count a goal's outcome (diagnostics.GoalCounters), if counting."""
        if self._counters is not None:
            self._counters.record(outcome, message)

    def run(self, goal_handle, admission, params):
        """End one goal (refused, stopped, cancelled or generated); return its result."""
        if admission.refusal:
            return self._abort(goal_handle, admission.refusal)
        if goal_handle.is_cancel_requested or admission.stop_reason:
            return self._end_before_run(goal_handle, admission)
        try:
            if admission.init_topic or admission.control_topics:
                ended = self._take_frames(goal_handle, admission, params)
                if ended is not None:
                    return ended
            return self._generate(goal_handle, admission, params)
        except GenerationCancelled:
            return self._end_cancelled(goal_handle, admission)
        except RequestError as error:
            return self._abort(goal_handle, f'refused: {error}')
        except DeviceFailed as failure:
            return self._abort(goal_handle, str(failure))
        except EngineError as error:  # ModelLoadError, OutOfMemory, ...
            if admission.stop_reason:  # e.g. deactivated after the check above: the slot
                return self._abort(  # refused to load the models again
                    goal_handle, f'{admission.stop_reason} before generating',
                    outcome='cancelled')
            return self._abort(goal_handle, str(error))

    def _take_frames(self, goal_handle, admission, params):
        """
        Take the init_image_topic frame and the ControlNet units' frames, in that order.

        Returns None when all came (the request is validated again with them), else the
        result of the goal (refused, cancelled or stopped while waiting).
        """
        waits = ([('init_image', 'init_image_topic', 'the init image', None,
                   admission.init_topic)] if admission.init_topic else [])
        waits += [('control_image', f'control[{index}].image_topic',
                   f'the control image of unit {index}', index, topic)
                  for index, topic in admission.control_topics]
        init_frame, control_frames = None, {}
        for stage, field, what, index, topic in waits:
            self._feedback(goal_handle, admission, Progress(stage=stage))
            frame, problem = self._take_frame(
                topic, params.init_image_timeout_sec,
                lambda: goal_handle.is_cancel_requested or bool(admission.stop_reason))
            if frame is None and not problem:
                if goal_handle.is_cancel_requested:
                    goal_handle.canceled()
                    return GenerateImage.Result(
                        message=f'cancelled while waiting for {what}; nothing was generated')
                return self._abort(goal_handle,
                                   f'{admission.stop_reason} while waiting for {what}')
            if frame is None:
                return self._abort(goal_handle, f'refused: {field}: {problem}')
            if index is None:
                init_frame = frame
            else:
                control_frames[index] = frame
        # A bad frame raises RequestError, which run() turns into a refusal.
        admission.request = validate_request(
            goal_to_request(goal_handle.request, params, init_frame, control_frames),
            params.limits())
        return None

    def _generate(self, goal_handle, admission, params):
        """Generate the images of a goal whose turn it is (on another device if one fails)."""
        try:
            return self._generate_on(goal_handle, admission, params)
        except DeviceFailed as failure:
            if admission.stop_reason or goal_handle.is_cancel_requested:
                return self._end_cancelled(goal_handle, admission)
            self._fleet.device_failed(self._engine_index(admission), str(failure))
            engine = self._fleet.retry(goal_handle)
            if engine is None:
                if goal_handle.is_cancel_requested or admission.stop_reason:
                    return self._end_before_run(goal_handle, admission)
                raise DeviceFailed(f'{failure}; no other device is in rotation') from None
            self._log.warn(f'{failure}; retrying the goal on {self._name(engine)}')
        try:
            return self._generate_on(goal_handle, admission, params)
        except DeviceFailed as failure:
            raise DeviceFailed(f'{failure} (the goal failed on two devices; not retried '
                               'again)') from None

    def _generate_on(self, goal_handle, admission, params):
        """Generate on the admission's engine and end the goal; raise DeviceFailed."""
        index = self._engine_index(admission)

        def on_loading():
            self._feedback(goal_handle, admission, Progress(stage='loading'))

        with self._slots[index].engine(on_loading) as engine:
            problem = memory_refusal(engine, admission.request)
            if problem:
                return self._abort(goal_handle, problem)
            if goal_handle.is_cancel_requested:
                # Cancelled while the models loaded: stop before the first step.
                admission.cancel.set()
            try:
                result = engine.generate(
                    admission.request, cancel=admission.cancel,
                    on_progress=lambda progress: self._on_progress(
                        goal_handle, admission, progress, params),
                    preview_every_n_steps=params.preview_every_n_steps)
            except (GenerationCancelled, OutOfMemory, ModelLoadError):
                raise
            except EngineError as error:
                if len(self._slots) < 2:
                    raise  # one device: the goal fails, as it always did
                raise DeviceFailed(f'device {self._name(index)} failed: {error}') from error
        if goal_handle.is_cancel_requested or admission.stop_reason:
            return self._end_cancelled(goal_handle, admission)
        return self._succeed(goal_handle, result, params)

    def _engine_index(self, admission):
        """Return the index of the slot the goal runs on."""
        return admission.engine or 0

    def _name(self, index):
        """Return the device name of slot `index` ('' with one slot and no fleet)."""
        return self._fleet.names[index] if self._fleet is not None else ''

    def _feedback(self, goal_handle, admission, progress):
        """Publish `progress` as feedback, naming the goal's device."""
        feedback = progress_to_feedback(progress, GenerateImage.Feedback())
        feedback.device = self._name(self._engine_index(admission))
        goal_handle.publish_feedback(feedback)

    def _on_progress(self, goal_handle, admission, progress, params):
        """Engine progress -> feedback (and preview); turns a cancel request into the flag."""
        if goal_handle.is_cancel_requested:
            admission.cancel.set()
        fault = getattr(params, 'fault_device', '')
        if fault and progress.step >= 2 and fault == self._name(self._engine_index(admission)):
            # Test hook: raised inside the engine's step callback, so it leaves the engine
            # the way a CUDA error does (EngineError 'generation failed: ...').
            raise RuntimeError('device lost (test hook fault_device)')
        self._feedback(goal_handle, admission, progress)
        if progress.preview is not None and not admission.cancel.is_set():
            self._publishing.preview(progress.preview, params.frame_id)

    def _end_before_run(self, goal_handle, admission):
        """End a goal that never ran: cancelled while queued, or stopped by a transition."""
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self._count('cancelled')
            self._log.info('goal cancelled while queued')
            return GenerateImage.Result(message='cancelled while queued; nothing was generated')
        return self._abort(goal_handle, f'{admission.stop_reason} while the goal was queued',
                           outcome='cancelled')

    def _end_cancelled(self, goal_handle, admission):
        """End a goal stopped mid-generation: cancelled by its client or by a transition."""
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self._count('cancelled')
            self._log.info('goal cancelled while running; nothing was published')
            return GenerateImage.Result(
                message='cancelled while generating; no image was published')
        return self._abort(goal_handle, f'{admission.stop_reason} while generating',
                           outcome='cancelled')

    def _abort(self, goal_handle, message, outcome=None):
        """Abort a goal with `message` (logged), count it, and return its result."""
        goal_handle.abort()
        self._count(outcome or ('refused' if message.startswith('refused: ') else 'failed'),
                    message)
        self._log.warn(f'goal aborted: {message}')
        return GenerateImage.Result(message=message)

    def _succeed(self, goal_handle, result, params):
        """Publish the images (compressed ones follow), save them if asked, succeed."""
        images = self._publishing.results(result, params.frame_id, params.output_dir)
        stamps = [image.header.stamp for image in images]
        goal_handle.succeed()
        self._count('served')
        self._log.info(
            f'goal succeeded: {len(images)} image(s), seeds {result.seeds}, '
            f'{result.elapsed_sec:.2f} s')
        if goal_handle.request.omit_result_images:
            images = []
        return GenerateImage.Result(
            images=images, seeds=list(result.seeds), parameters=result.infotexts[0],
            elapsed_sec=float(result.elapsed_sec), message='; '.join(result.warnings),
            image_stamps=stamps)
