# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
sdxl_node: the GenerateImage action server (a lifecycle node).

The node translates and applies policy; the engine generates. Goals are admitted in
`goal_callback` (validated against the engine's rules and given a place in a bounded FIFO),
then run one at a time by their own execute callback, which waits for its turn while publishing
'queued' feedback. Refusals: an action goal rejection cannot carry a reason, so an invalid
goal, a goal beyond the queue and a goal sent while the node is inactive are ACCEPTED and at
once ABORTED with `result.message` starting with 'refused: '.

Blocking work (loading, generating) runs in plain `def` callbacks of a ReentrantCallbackGroup
under a MultiThreadedExecutor, so cancel requests and services are served meanwhile.
"""

from dataclasses import fields
import datetime
import os
import signal
import threading
import time

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sdxl_ros.action import GenerateImage
from sdxl_ros.engine import (EngineError, GenerationCancelled, ModelLoadError, Progress,
                             SdxlEngine)
from sdxl_ros.engine.png_io import save_png
from sdxl_ros.engine.request import RequestError, validate_request
from sdxl_ros.ros.goal_conversion import (goal_to_request, init_topic, progress_to_feedback,
                                          queued_feedback, stand_in_frame)
from sdxl_ros.ros.goal_queue import GoalQueue, QueueFull
from sdxl_ros.ros.image_conversion import numpy_to_image_msg
from sdxl_ros.ros.init_frame import wait_for_frame
from sdxl_ros.ros.model_listing import list_models
from sdxl_ros.ros.node_parameters import (check_parameters, needs_reload, NodeParameters,
                                          PARAMETERS, RELOAD_PARAMETERS)
from sdxl_ros.srv import ListModels
from sensor_msgs.msg import Image

#: How often (seconds) a waiting goal looks for a cancel request.
_WAIT_POLL_SEC = 0.2
#: A waiting goal repeats its 'queued' feedback this often (seconds), for late listeners.
_QUEUED_FEEDBACK_SEC = 1.0
#: A queue place whose goal never reached handle_accepted (its client vanished while the
#: response was sent) is dropped after this many seconds, so it cannot block the queue.
_STALE_ADMISSION_SEC = 10.0

IMAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
PREVIEW_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
#: The action's goal, cancel and result services. The ROS default keeps only 10 requests:
#: a burst of more (a cancel storm, many clients at once) arriving while generation holds the
#: CPU overflowed it, and the dropped requests were never answered.
ACTION_SERVICE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
#: Seconds a finished goal's result (images included, ~3 MB at 1024x1024) stays available to
#: late result requests. Humble/Jazzy keep it 900 s by default, which on a busy robot holds
#: hundreds of MB; clients ask for the result when the goal is accepted, so a minute is ample.
RESULT_TIMEOUT_SEC = 60


class Admission:
    """One accepted goal from goal_callback to its end: the request or why it is refused."""

    def __init__(self, request=None, refusal='', init_topic=''):
        """Hold a validated request (its init image still to come from `init_topic`)."""
        self.request = request
        self.refusal = refusal
        self.init_topic = init_topic
        self.stop_reason = ''
        self.cancel = threading.Event()
        self.created = time.monotonic()
        self.goal_handle = None


def parameter_descriptor(spec):
    """Build the ParameterDescriptor of one entry of the parameter table."""
    descriptor = ParameterDescriptor(name=spec.name, description=spec.description,
                                     read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.minimum is not None and isinstance(spec.default, int) \
            and not isinstance(spec.default, bool):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.minimum), to_value=int(spec.maximum), step=spec.step)]
    elif spec.minimum is not None and isinstance(spec.default, float):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    return descriptor


class SdxlNode(LifecycleNode):
    """Lifecycle node serving ~/generate, publishing ~/image and ~/preview."""

    def __init__(self, node_name='sdxl', **kwargs):
        """Declare parameters and create the action server, topics and services."""
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
        self._params = self._read_parameters()
        self._group = ReentrantCallbackGroup()
        self._engine = None
        self._engine_lock = threading.Lock()
        self._reload_pending = False
        self._load_error = ''
        self._active = False
        self._queue = GoalQueue(self._params.max_queue)
        self._lock = threading.Lock()
        self._pending = {}
        self._goals = {}
        self._image_pub = self.create_publisher(Image, '~/image', IMAGE_QOS)
        self._preview_pub = self.create_publisher(Image, '~/preview', PREVIEW_QOS)
        self._action_server = ActionServer(
            self, GenerateImage, '~/generate', execute_callback=self._execute,
            goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel, callback_group=self._group,
            goal_service_qos_profile=ACTION_SERVICE_QOS,
            cancel_service_qos_profile=ACTION_SERVICE_QOS,
            result_service_qos_profile=ACTION_SERVICE_QOS, result_timeout=RESULT_TIMEOUT_SEC)
        self._list_service = self.create_service(
            ListModels, '~/list_models', self._on_list_models, callback_group=self._group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters
    def _read_parameters(self):
        """Read every declared parameter once into a NodeParameters."""
        values = {f.name: self.get_parameter(f.name).value for f in fields(NodeParameters)}
        return NodeParameters(**values)

    @property
    def executor_threads(self):
        """Threads the executor needs: every queued goal waits in its own callback."""
        return self._params.max_queue + 4

    def _on_set_parameters(self, parameters):
        """Check a parameter change; a model change makes the worker reload before next goal."""
        changes = {p.name: p.value for p in parameters}
        new = self._params.updated(changes)
        problems = check_parameters(new, check_models=bool(RELOAD_PARAMETERS & set(changes)))
        if problems:
            return SetParametersResult(successful=False, reason='; '.join(problems))
        if self._engine is not None and needs_reload(self._params, new):
            self._reload_pending = True
            self.get_logger().info('model settings changed: reloading before the next goal')
        self._params = new
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------- lifecycle
    def autostart(self):
        """Configure and activate now if the autostart parameter says so."""
        if not self._params.autostart:
            self.get_logger().info('autostart is off: waiting to be configured')
            return
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read the parameters, check them and load the models."""
        params = self._read_parameters()
        problems = check_parameters(params)
        for problem in problems:
            self.get_logger().error(f'cannot configure: {problem}')
        if problems:
            return TransitionCallbackReturn.FAILURE
        self._params = params
        with self._engine_lock:
            self._engine = SdxlEngine(params.engine_config())
            self._reload_pending = False
            return self._load_engine()

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Load the models again if deactivate freed them; start taking goals."""
        with self._engine_lock:
            if self._reload_pending:
                self._engine = SdxlEngine(self._params.engine_config())
                self._reload_pending = False
            if not self._engine.is_loaded:
                result = self._load_engine()
                if result != TransitionCallbackReturn.SUCCESS:
                    return result
        self._active = True
        self.get_logger().info('active: serving ~/generate')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop taking goals, end the queued and running ones, free the models' memory."""
        self._release('node deactivated')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Free the models and forget the engine."""
        self._release('node cleaned up')
        self._engine = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Free everything, as cleanup does, from any state."""
        return self.on_cleanup(state)

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Free everything; the node goes back to unconfigured."""
        return self.on_cleanup(state)

    def _load_engine(self):
        """Load the engine's models (engine lock held); a failure is logged with its reason."""
        started = time.monotonic()
        names = f'base {self._params.base_model!r}, refiner {self._params.refiner_model!r}'
        self.get_logger().info(f'loading models: {names}')
        try:
            self._engine.load()
        except ModelLoadError as error:
            self.get_logger().error(f'cannot load models: {error}')
            self._load_error = str(error)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'models loaded in {time.monotonic() - started:.1f} s')
        return TransitionCallbackReturn.SUCCESS

    def _release(self, reason):
        """Refuse new goals, end the admitted ones with `reason`, then unload the models."""
        self._active = False
        self.stop_goals(reason)
        with self._engine_lock:
            if self._engine is not None:
                self._engine.unload()
        self.get_logger().info(f'{reason}: models unloaded')

    def stop_goals(self, reason):
        """Abort every queued and running goal with `reason` (running ones stop at a step)."""
        with self._lock:
            admissions = list(self._goals.values()) + [a for _, a in self._pending.values()]
        for admission in admissions:
            admission.stop_reason = reason
            admission.cancel.set()
        self._queue.wake()

    def has_goals(self):
        """Whether any goal is still admitted (queued or running)."""
        with self._lock:
            return bool(self._goals or self._pending)

    # --------------------------------------------------------------------- goals
    def _on_goal(self, goal):
        """Admit a goal: validate it and give it a place in the queue (always ACCEPT)."""
        admission = self._admit(goal)
        with self._lock:
            self._pending[id(goal)] = (goal, admission)
        return GoalResponse.ACCEPT

    def _admit(self, goal):
        """Return the Admission of `goal`: a queued request, or a refusal with the reason."""
        if not self._active:
            return Admission(refusal='refused: the node is not active (configure and activate '
                                     'it through its lifecycle, or set autostart true)')
        params = self._params
        try:
            topic = init_topic(goal)
            # A topic goal is checked against a stand-in frame now, its real frame later.
            frame = stand_in_frame(goal, params) if topic else None
            request = validate_request(goal_to_request(goal, params, frame), params.limits())
        except RequestError as error:
            return Admission(refusal=f'refused: {error}')
        admission = Admission(request, init_topic=topic)
        try:
            self._queue.push(admission)
        except QueueFull as error:
            return Admission(refusal=f'refused: {error}')
        return admission

    def _on_accepted(self, goal_handle):
        """Bind the accepted goal to its admission and start its execute callback."""
        with self._lock:
            goal, admission = self._pending.pop(id(goal_handle.request), (None, None))
        if goal is not goal_handle.request:
            admission = self._admit(goal_handle.request)
        admission.goal_handle = goal_handle
        with self._lock:
            self._goals[bytes(goal_handle.goal_id.uuid)] = admission
        goal_handle.execute()

    def _on_cancel(self, goal_handle):
        """Accept every cancel request; the goal's own callback notices and stops."""
        self._queue.wake()
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle):
        """Run one goal to its terminal state: refuse, wait in the queue, then generate."""
        key = bytes(goal_handle.goal_id.uuid)
        with self._lock:
            admission = self._goals[key]
        try:
            if admission.refusal:
                return self._abort(goal_handle, admission.refusal)
            if not self._wait_turn(goal_handle, admission):
                return self._end_before_run(goal_handle, admission)
            return self._run(goal_handle, admission)
        finally:
            self._queue.remove(admission)
            with self._lock:
                self._goals.pop(key, None)

    def _wait_turn(self, goal_handle, admission):
        """Wait until the goal heads the queue; False if it was cancelled or stopped first."""
        position = self._queue.position(admission)
        reported, reported_at = None, 0.0
        while position:
            if goal_handle.is_cancel_requested or admission.stop_reason:
                return False
            now = time.monotonic()
            if position != reported or now - reported_at >= _QUEUED_FEEDBACK_SEC:
                goal_handle.publish_feedback(queued_feedback(position, GenerateImage.Feedback()))
                reported, reported_at = position, now
            self._drop_stale_head()
            position = self._queue.wait_for_change(admission, position, _WAIT_POLL_SEC)
        return position == 0 and not (goal_handle.is_cancel_requested or admission.stop_reason)

    def _drop_stale_head(self):
        """Free the head place of a goal whose handle never came (its client went away)."""
        keys = self._queue.keys()
        head = keys[0] if keys else None
        if head is not None and head.goal_handle is None \
                and time.monotonic() - head.created > _STALE_ADMISSION_SEC:
            self.get_logger().warn('dropping a queued goal that was never started')
            self._queue.remove(head)

    def _end_before_run(self, goal_handle, admission):
        """End a goal that never ran: cancelled while queued, or stopped by a transition."""
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self.get_logger().info('goal cancelled while queued')
            return GenerateImage.Result(message='cancelled while queued; nothing was generated')
        return self._abort(goal_handle, f'{admission.stop_reason} while the goal was queued')

    def _run(self, goal_handle, admission):
        """Generate the images of a goal at the head of the queue and end it."""
        params = self._params
        if admission.init_topic:
            ended = self._take_init_frame(goal_handle, admission, params)
            if ended is not None:
                return ended
        with self._engine_lock:
            problem = self._prepare_engine(goal_handle, params)
            if problem:
                return self._abort(goal_handle, problem)
            problem = self._memory_refusal(admission.request)
            if problem:
                return self._abort(goal_handle, problem)
            if goal_handle.is_cancel_requested:
                # Cancelled while the models loaded: stop before the first step.
                admission.cancel.set()
            try:
                result = self._engine.generate(
                    admission.request, cancel=admission.cancel,
                    on_progress=lambda progress: self._on_progress(
                        goal_handle, admission, progress, params),
                    preview_every_n_steps=params.preview_every_n_steps)
            except GenerationCancelled:
                return self._end_cancelled(goal_handle, admission)
            except RequestError as error:
                return self._abort(goal_handle, f'refused: {error}')
            except EngineError as error:
                return self._abort(goal_handle, str(error))
        if goal_handle.is_cancel_requested or admission.stop_reason:
            return self._end_cancelled(goal_handle, admission)
        return self._succeed(goal_handle, result, params)

    def _take_init_frame(self, goal_handle, admission, params):
        """Wait for the goal's init_image_topic frame; None when it came, else the result."""
        goal_handle.publish_feedback(
            progress_to_feedback(Progress(stage='init_image'), GenerateImage.Feedback()))
        frame, problem = wait_for_frame(
            self, admission.init_topic, params.init_image_timeout_sec,
            lambda: goal_handle.is_cancel_requested or bool(admission.stop_reason),
            self._group)
        if frame is None and not problem:
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return GenerateImage.Result(
                    message='cancelled while waiting for the init image; nothing was generated')
            return self._abort(goal_handle,
                               f'{admission.stop_reason} while waiting for the init image')
        if frame is None:
            return self._abort(goal_handle, f'refused: init_image_topic: {problem}')
        try:
            admission.request = validate_request(
                goal_to_request(goal_handle.request, params, frame), params.limits())
        except RequestError as error:
            return self._abort(goal_handle, f'refused: {error}')
        return None

    def _prepare_engine(self, goal_handle, params):
        """Reload the models if their parameters changed (engine lock held); '' or a reason."""
        if self._engine is None:
            return 'the node is not configured'
        if self._reload_pending or not self._engine.is_loaded:
            goal_handle.publish_feedback(
                progress_to_feedback(Progress(stage='loading'), GenerateImage.Feedback()))
            self._engine.unload()
            self._engine = SdxlEngine(params.engine_config())
            self._reload_pending = False
            if self._load_engine() != TransitionCallbackReturn.SUCCESS:
                self._reload_pending = True
                return f'cannot load models (base {params.base_model!r}, refiner ' \
                       f'{params.refiner_model!r}): {self._load_error}'
        self._engine.config.limits = params.limits()
        return ''

    def _memory_refusal(self, request):
        """On CUDA: a reason to refuse when the request would not fit free memory, else ''."""
        usable = self._engine.usable_memory_bytes()
        if usable is None:
            return ''
        need = self._engine.estimate_memory_bytes(request)
        if need <= usable:
            return ''
        gib = 1024 ** 3
        return (f'refused: {request.width}x{request.height} x{request.num_images} needs about '
                f'{need / gib:.1f} GiB but only {usable / gib:.1f} GiB of GPU memory is '
                'usable; use a smaller size, vae_tiling or memory_mode model_offload')

    def _on_progress(self, goal_handle, admission, progress, params):
        """Engine progress -> feedback (and preview); turns a cancel request into the flag."""
        if goal_handle.is_cancel_requested:
            admission.cancel.set()
        goal_handle.publish_feedback(progress_to_feedback(progress, GenerateImage.Feedback()))
        if progress.preview is not None and not admission.cancel.is_set():
            self._preview_pub.publish(numpy_to_image_msg(
                progress.preview, self.get_clock().now().to_msg(), params.frame_id))

    def _end_cancelled(self, goal_handle, admission):
        """End a goal stopped mid-generation: cancelled by its client or by a transition."""
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self.get_logger().info('goal cancelled while running; nothing was published')
            return GenerateImage.Result(
                message='cancelled while generating; no image was published')
        return self._abort(goal_handle, f'{admission.stop_reason} while generating')

    def _abort(self, goal_handle, message):
        """Abort a goal with `message` (logged) and return its result."""
        goal_handle.abort()
        self.get_logger().warn(f'goal aborted: {message}')
        return GenerateImage.Result(message=message)

    def _succeed(self, goal_handle, result, params):
        """Publish the images, save them if asked, and end the goal succeeded."""
        stamp = self.get_clock().now().to_msg()
        images = [numpy_to_image_msg(image, stamp, params.frame_id) for image in result.images]
        for image in images:
            self._image_pub.publish(image)
        if params.output_dir:
            self._save_outputs(result, params.output_dir)
        goal_handle.succeed()
        self.get_logger().info(
            f'goal succeeded: {len(images)} image(s), seeds {result.seeds}, '
            f'{result.elapsed_sec:.2f} s')
        return GenerateImage.Result(
            images=images, seeds=list(result.seeds), parameters=result.infotexts[0],
            elapsed_sec=float(result.elapsed_sec), message='')

    def _save_outputs(self, result, output_dir):
        """Save each image as <time>-<index>-<seed>.png with its infotext; log failures."""
        now = datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')[:-3]
        try:
            os.makedirs(output_dir, exist_ok=True)
            for index, (image, seed, text) in enumerate(
                    zip(result.images, result.seeds, result.infotexts)):
                path = os.path.join(output_dir, f'{now}-{index}-{seed}.png')
                save_png(path, image, text)
                self.get_logger().info(f'saved {path}')
        except OSError as error:
            self.get_logger().error(f'cannot save to output_dir {output_dir!r}: {error}')

    # ------------------------------------------------------------------ services
    def _on_list_models(self, request, response):
        """List the models in model_dir and the presets; report the models in use."""
        params = self._params
        response.models, response.model_dir = list_models(params.model_dir)
        response.base_model = params.base_model
        response.refiner_model = params.refiner_model
        return response


def _interrupt(signum, frame):
    """Turn SIGINT and SIGTERM into KeyboardInterrupt."""
    raise KeyboardInterrupt


def _finish_goals(node, executor, timeout=5.0):
    """Abort the remaining goals and keep spinning until their results went out."""
    node.stop_goals('node shutting down')
    deadline = time.monotonic() + timeout
    while node.has_goals() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    # Give the result responses a moment to leave before the context goes away.
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def main(args=None):
    """Run sdxl_node until Ctrl-C (SIGINT) or SIGTERM; running goals end aborted first."""
    # Signals are handled here, not by rclpy, so goals can still be answered on the way out.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = SdxlNode()
    executor = MultiThreadedExecutor(num_threads=node.executor_threads)
    executor.add_node(node)
    try:
        node.autostart()
        while rclpy.ok():
            # A bounded wait lets Python run the signal handler within half a second.
            executor.spin_once(timeout_sec=0.5)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if rclpy.ok():
            _finish_goals(node, executor)
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    _exit_without_teardown()


def _exit_without_teardown():
    """
    End the process now that every goal is answered and ROS is shut down (exit status 0).

    Python's module teardown of torch and diffusers takes over a second here; skipping it
    (after the atexit handlers and a flush) keeps the exit on SIGINT/SIGTERM within 2 s.
    """
    import atexit
    import logging
    import sys
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    main()
