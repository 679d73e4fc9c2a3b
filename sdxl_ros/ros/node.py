# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
sdxl_node: the GenerateImage action server (a lifecycle node).

The node translates and applies policy; the engine generates. Lifecycle, as mgonzs13/yolo_ros
does it: parameters are declared in `__init__`; `on_configure` reads and checks them (the
model files are found and their headers read, so a missing or damaged checkpoint fails
configure with the reason); `on_activate` loads the models (the one place they load); a
parameter change that names other models reloads them before the next goal; `on_deactivate`
ends the goals and frees the models; `on_cleanup` forgets the configuration. The engine itself
lives in an EngineSlot (engine/engine_slot.py); with the `devices` parameter there is one per
device (device_fleet.py) and each goal runs on the next free one.

Every goal is accepted in the goal callback; `handle_accepted_callback` admits it (validated
against the engine's rules and given a place in a bounded FIFO) and it is executed one at a
time (goal_scheduler.py); the execute path is goal_runner.py, outputs are publishing.py.
Threads and locks: docs/threads.md.
Refusals: an action goal rejection cannot carry a reason, so an invalid goal, a goal beyond
the queue and a goal sent while the node is not active are ACCEPTED and at once ABORTED with
`result.message` starting with 'refused: '.

Blocking work (loading, generating) runs in plain `def` callbacks of a ReentrantCallbackGroup
under a MultiThreadedExecutor, so cancel requests and services are served meanwhile.
"""

from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sdxl_ros.action import GenerateImage
from sdxl_ros.engine.engine_slot import check_model_files
from sdxl_ros.engine.request import RequestError
from sdxl_ros.ros.control_units import control_topics
from sdxl_ros.ros.device_fleet import DeviceFleet
from sdxl_ros.ros.diagnostics import (diagnostics_problem, DiagnosticsTimer, GoalCounters,
                                      Health)
from sdxl_ros.ros.goal_conversion import admit_goal
from sdxl_ros.ros.goal_runner import Admission, GoalRunner
from sdxl_ros.ros.goal_scheduler import GoalScheduler, TICK_SEC
from sdxl_ros.ros.init_frame import wait_for_frame
from sdxl_ros.ros.model_listing import (list_controlnets, list_embeddings, list_loras,
                                        list_models)
from sdxl_ros.ros.node_parameters import check_parameters
from sdxl_ros.ros.parameter_descriptors import declare_parameters, read_parameters
from sdxl_ros.ros.publishing import Publishing
from sdxl_ros.srv import ListModels

#: The action's goal, cancel and result services. The ROS default keeps only 10 requests:
#: a burst of more (a cancel storm, many clients at once) arriving while generation holds the
#: CPU overflowed it, and the dropped requests were never answered.
ACTION_SERVICE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
#: Seconds a finished goal's result (images included, ~3 MB at 1024x1024) stays available to
#: late result requests. Humble/Jazzy keep it 900 s by default, which on a busy robot holds
#: hundreds of MB; clients ask for the result when the goal is accepted, so a minute is ample.
RESULT_TIMEOUT_SEC = 60
#: Executor threads: one generation, one blocking transition (deactivate waits for the running
#: goal to stop), and the short callbacks (goals, cancels, timer, services). Waiting goals
#: hold no thread, so this does not grow with max_queue; each further device adds one (its
#: generation holds an execute callback too).
EXECUTOR_THREADS = 6
NOT_ACTIVE = ('the node is not active (configure and activate it through its lifecycle, or '
              'set autostart true)')
SHUTTING_DOWN = 'the node is shutting down'


class SdxlNode(LifecycleNode):
    """Lifecycle node serving ~/generate, publishing ~/image and ~/preview."""

    executor_threads = EXECUTOR_THREADS

    def __init__(self, node_name='sdxl', test_hooks=False, **kwargs):
        """
        Declare parameters and create the action server, topics, service and timer.

        `test_hooks` also declares the test-only parameters (node_parameters.TEST_HOOKS);
        only the test harness asks for them, through the process's environment.
        """
        super().__init__(node_name, **kwargs)
        declare_parameters(self, test_hooks)
        self._params = read_parameters(self)
        self._inactive = NOT_ACTIVE
        self._active = False
        names = self._params.device_names()
        self._scheduler = GoalScheduler(self._params.max_queue, len(names))
        self._fleet = DeviceFleet(names, bool(self._params.devices), self.get_logger(),
                                  self._scheduler)
        self.executor_threads = EXECUTOR_THREADS + len(names) - 1
        self.publishing = Publishing(self, self._params.compressed_format,
                                     self._params.jpeg_quality)
        self._counters = GoalCounters()
        self._state_label = 'unconfigured'
        self._health_error = ''
        self._runner = GoalRunner(self._fleet.slots, self.publishing, self.get_logger(),
                                  self._take_frame, self._counters, self._fleet)
        self._group = group = ReentrantCallbackGroup()
        self.action_server = ActionServer(
            self, GenerateImage, '~/generate', execute_callback=self._execute,
            goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel, callback_group=group,
            goal_service_qos_profile=ACTION_SERVICE_QOS,
            cancel_service_qos_profile=ACTION_SERVICE_QOS,
            result_service_qos_profile=ACTION_SERVICE_QOS, result_timeout=RESULT_TIMEOUT_SEC)
        self.create_service(ListModels, '~/list_models', self._on_list_models,
                            callback_group=group)
        self.create_timer(TICK_SEC, self._scheduler.tick, callback_group=group)
        self._diagnostics = None
        if diagnostics_problem():
            self.get_logger().warn(diagnostics_problem())
        else:
            self._diagnostics = DiagnosticsTimer(self, self._health, callback_group=group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, parameters):
        """Check a parameter change; other models are loaded before the next goal."""
        changes = {p.name: p.value for p in parameters}
        new = self._params.updated(changes)
        problems = check_parameters(new, check_models=False)
        if not problems and self._params.reloads_models(new):
            problems = check_parameters(new)  # other models: check that they can be found
        if problems:
            return SetParametersResult(successful=False, reason='; '.join(problems))
        if self._fleet.configured:
            self._fleet.configure(new.engine_config())
        self.publishing.configure(new.compressed_format, new.jpeg_quality)
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
        """Read and check the parameters and the model files (headers only)."""
        params = read_parameters(self)
        problems = check_parameters(params)
        model_problem = '' if problems else check_model_files(params.engine_config())
        if not problems and not model_problem:
            problems = self._fleet.check(params)
        for problem in filter(None, problems + [model_problem]):
            self.get_logger().error(f'cannot configure: {problem}')
        if problems or model_problem:
            self._health_error = (f'models failed to load: {model_problem}' if model_problem
                                  else 'cannot configure: ' + '; '.join(problems))
            return self._entered(TransitionCallbackReturn.FAILURE, 'unconfigured')
        self._params = params
        self._fleet.configure(params.engine_config())
        self._health_error = ''
        return self._entered(TransitionCallbackReturn.SUCCESS, 'inactive')

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Load the models (the slot logs why it cannot); start taking goals."""
        problem = self._fleet.load()
        if problem:
            self._health_error = f'models failed to load: {problem}'
            return self._entered(TransitionCallbackReturn.FAILURE, 'inactive')
        self._health_error = ''
        self._active = True
        self.get_logger().info('active: serving ~/generate')
        return self._entered(TransitionCallbackReturn.SUCCESS, 'active')

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop taking goals, end the queued and running ones, free the models' memory."""
        self._release('node deactivated', self._fleet.unload)
        return self._entered(TransitionCallbackReturn.SUCCESS, 'inactive')

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Forget the configuration (deactivate already freed the models)."""
        self._release('node cleaned up', self._fleet.clear)
        return self._entered(TransitionCallbackReturn.SUCCESS, 'unconfigured')

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Free everything, from any state; later goals are told the node is shutting down."""
        self._inactive = SHUTTING_DOWN
        self._release('node shutting down', self._fleet.clear)
        return self._entered(TransitionCallbackReturn.SUCCESS, 'finalized')

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Free everything; the node goes back to unconfigured."""
        self._release('node error', self._fleet.clear)
        return self._entered(TransitionCallbackReturn.SUCCESS, 'unconfigured')

    def _entered(self, result, label):
        """Remember the state a transition ends in (for /diagnostics); return `result`."""
        self._state_label = label
        return result

    def _release(self, reason, free):
        """Refuse new goals, end the admitted ones with `reason`, then `free()` the models."""
        self._active = False
        self.stop_goals(reason)
        if free():
            self.get_logger().info(f'{reason}: models unloaded')

    def stop_goals(self, reason):
        """Abort every queued and running goal with `reason` (running ones stop at a step)."""
        self._scheduler.stop_all(reason)

    def shutting_down(self):
        """Refuse new goals as 'shutting down' and end the admitted ones (process exit)."""
        self._inactive, self._active = SHUTTING_DOWN, False
        self.stop_goals('node shutting down')

    def has_goals(self):
        """Whether any goal is still admitted (queued or running)."""
        return self._scheduler.busy()

    # --------------------------------------------------------------------- goals
    def _on_goal(self, goal):
        """Accept every goal: refusals are ended with their reason (see _on_accepted)."""
        return GoalResponse.ACCEPT

    def _admit(self, goal):
        """Return the Admission of `goal`: a queued request, or a refusal with the reason."""
        if not self._active:
            return Admission(refusal=f'refused: {self._inactive}')
        try:
            request, topic = admit_goal(goal, self._params, self._fleet.lora_target)
        except RequestError as error:
            return Admission(refusal=f'refused: {error}')
        return Admission(request, init_topic=topic, control_topics=control_topics(goal))

    def _on_accepted(self, goal_handle):
        """Admit and queue the goal; it is executed when its turn comes (a refusal at once)."""
        self._scheduler.accept(goal_handle, self._admit)

    def _on_cancel(self, goal_handle):
        """Accept every cancel request; a queued goal leaves the queue, a running one stops."""
        self._scheduler.cancel(goal_handle)
        return CancelResponse.ACCEPT

    def _take_frame(self, topic, timeout, stopped):
        """Wait for the next Image on `topic` for an img2img goal; (msg, problem)."""
        return wait_for_frame(self, topic, timeout, stopped, self._group)

    def _execute(self, goal_handle):
        """Run one goal to its terminal state, then start the next one."""
        try:
            return self._runner.run(goal_handle, self._scheduler.admission(goal_handle),
                                    self._params)
        finally:
            self._scheduler.finished(goal_handle)

    # --------------------------------------------------------------- diagnostics
    def _health(self):
        """Return the Health of each device now (the /diagnostics timer; takes no engine lock)."""
        params, fleet = self._params, self._fleet
        counts, last_failure = self._counters.snapshot()
        in_rotation = len(self._scheduler.in_rotation())
        return [Health(
            node_name=self.get_name(), node_fqn=self.get_fully_qualified_name(),
            lifecycle_state=self._state_label, base_model=params.base_model,
            refiner_model=params.refiner_model, models_loaded=slot.is_loaded,
            error=self._health_error or (
                f'out of rotation: {fleet.failures[index]}' if fleet.failures[index] else ''),
            memory=slot.memory_report(params.default_width, params.default_height),
            device=name, queue_length=self._scheduler.queue_length(),
            counts=counts, last_failure=last_failure,
            last_image_stamp=self.publishing.last_image_stamp,
            label=name if fleet.several else '', devices_in_rotation=in_rotation,
            goal_running=self._scheduler.running_on(index) if fleet.several else None)
            for index, (name, slot) in enumerate(zip(fleet.names, fleet.slots))]

    # ------------------------------------------------------------------ services
    def _on_list_models(self, request, response):
        """List the models in model_dir and the presets; report the models in use."""
        params = self._params
        response.models, response.model_dir = list_models(params.model_dir)
        response.base_model, response.refiner_model = params.base_model, params.refiner_model
        response.loras = list_loras(params.lora_dir)
        response.embeddings = list_embeddings(params.embeddings_dir)
        response.controlnets = list_controlnets(params.controlnet_dir, params.model_dir)
        return response


def main(args=None):
    """Run sdxl_node until Ctrl-C (SIGINT) or SIGTERM (see node_process.py)."""
    from sdxl_ros.ros.node_process import run_node
    run_node(SdxlNode, args)


if __name__ == '__main__':
    main()
