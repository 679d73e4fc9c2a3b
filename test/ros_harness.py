# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Test harness: the real sdxl_node in its own process, real rclpy clients in the test process.

`NodeProcess` starts the installed `sdxl_node` executable with a parameters file, captures its
log, stops it with SIGINT (SIGKILL if it hangs). `RosClient` owns an rclpy context and node
spun by a background executor, and gives tests an ActionClient, service calls, subscriptions
and lifecycle transitions. Nothing here mocks ROS. rclpy is imported lazily so that modules
without ROS tests import this file too.
"""

import itertools
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

#: Parameters of a node for tests: the tiny preset on the CPU, small images, few steps.
TINY_PARAMETERS = {
    'base_model': 'tiny',
    'refiner_model': 'tiny',
    'device': 'cpu',
    'default_width': 64,
    'default_height': 64,
    'default_steps': 4,
    'min_side': 64,
    'preview_every_n_steps': 0,
    'max_queue': 1,
}

_namespaces = itertools.count(1)


def confinement_problem():
    """Return why ROS must not start here (the DDS confinement is missing), or ''."""
    profile = os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', '')
    if not profile:
        return ('FASTDDS_DEFAULT_PROFILES_FILE is not set: run the tests with scripts/test.sh '
                '(or source scripts/env.sh inside unshare -n)')
    if not os.access(profile, os.R_OK):
        return (f'the Fast DDS profile {profile} is not readable; Fast DDS would fall back to '
                'multicast on every interface')
    if os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE', profile) != profile:
        return ('FASTRTPS_DEFAULT_PROFILES_FILE (the name Fast DDS 2.x reads; scripts/env.sh '
                'sets it where the library is 2.x) must name the same profile as '
                'FASTDDS_DEFAULT_PROFILES_FILE')
    if os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE') not in ('SYSTEM_DEFAULT', 'LOCALHOST'):
        return 'ROS_AUTOMATIC_DISCOVERY_RANGE must be SYSTEM_DEFAULT or LOCALHOST'
    return ''


def node_executable():
    """Return the installed sdxl_node script (found through AMENT_PREFIX_PATH)."""
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'lib' / 'sdxl_ros' / 'sdxl_node'
        if prefix and candidate.is_file():
            return candidate
    raise FileNotFoundError('sdxl_node is not installed: source scripts/env.sh (it builds)')


def client_executable():
    """Return the installed sdxl_generate script."""
    return node_executable().with_name('sdxl_generate')


def yaml_value(value):
    """Write a parameter value as YAML (JSON scalars are valid YAML; floats keep a dot)."""
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def write_parameters_file(path, parameters):
    """Write `parameters` as a ROS parameters file that applies to any node name."""
    lines = ['/**:', '  ros__parameters:']
    lines += [f'    {name}: {yaml_value(value)}' for name, value in parameters.items()]
    Path(path).write_text('\n'.join(lines) + '\n')
    return path


class NodeProcess:
    """sdxl_node running in its own process, in a namespace of its own."""

    def __init__(self, workdir, parameters=None, namespace=None, name='sdxl',
                 params_files=(), command_prefix=(), env=None):
        """
        Prepare (not start) a node with TINY_PARAMETERS updated by `parameters`.

        `params_files` are loaded first, so the test parameters override them.
        `command_prefix` runs the node through another command (e.g. nsenter into a network
        namespace, which execs, so the process is still the node); `env` replaces os.environ.
        """
        self.command_prefix = list(command_prefix)
        self.env = env
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.parameters = dict(TINY_PARAMETERS, **(parameters or {}))
        self.namespace = namespace or f'/t{os.getpid()}_{next(_namespaces)}'
        self.name = name
        self.log_path = self.workdir / f'{name}{self.namespace.replace("/", "_")}.log'
        self.process = None
        self.returncode = None
        self.params_files = [str(path) for path in params_files]

    @property
    def fqn(self):
        """Fully qualified node name, e.g. /t1/sdxl."""
        return f'{self.namespace}/{self.name}'

    def name_of(self, relative):
        """Fully qualified name of a private name of the node, e.g. 'generate'."""
        return f'{self.fqn}/{relative}'

    def start(self):
        """Start the process; returns self."""
        params_file = write_parameters_file(
            self.workdir / f'params{self.namespace.replace("/", "_")}.yaml', self.parameters)
        command = self.command_prefix + [
            sys.executable, str(node_executable()), '--ros-args',
            '-r', f'__ns:={self.namespace}', '-r', f'__node:={self.name}']
        for path in self.params_files + [str(params_file)]:
            command += ['--params-file', path]
        # The node's test hooks (e.g. fault_oom_at_step) exist only under this harness.
        env = dict(os.environ if self.env is None else self.env, SDXL_ROS_TEST_HOOKS='1')
        self._log = open(self.log_path, 'w')
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env)
        return self

    @property
    def alive(self):
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def log(self):
        """Everything the node wrote so far."""
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def stop(self, timeout=15.0):
        """Stop with SIGINT, kill after `timeout`; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.returncode = self.process.returncode
        self._log.close()
        return self.returncode


def wait_for(predicate, timeout, interval=0.02):
    """Poll `predicate` until it returns something truthy; return it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def other_type_topic(ros_client, topic):
    """Publish std_msgs/String on `topic`, wait until it is in the graph; return both."""
    from std_msgs.msg import String
    publisher = ros_client.node.create_publisher(String, topic, 10)
    wait_for(lambda: topic in dict(ros_client.node.get_topic_names_and_types()), 10)
    return topic, publisher


def wait_future(future, timeout):
    """Wait for an rclpy future spun by a background executor; return its result."""
    if not wait_for(future.done, timeout):
        raise TimeoutError(f'no answer within {timeout} s')
    return future.result()


def over_the_wire(message):
    """Return `message` as its receiver gets it: serialized and back (float32 fields rounded)."""
    from rclpy.serialization import deserialize_message, serialize_message
    return deserialize_message(serialize_message(message), type(message))


def status_names():
    """Return action_msgs GoalStatus (imported late: rclpy may be missing)."""
    from action_msgs.msg import GoalStatus
    return GoalStatus


def assert_refused(response, *words):
    """Check a goal was aborted with a 'refused: ' message naming `words`, without images."""
    assert response.status == status_names().STATUS_ABORTED, response
    message = response.result.message
    assert message.startswith('refused: '), message
    for word in words:
        assert word in message, message
    assert len(response.result.images) == 0


def assert_served(response):
    """Check a goal succeeded with images and an empty message."""
    assert response.status == status_names().STATUS_SUCCEEDED, response.result.message
    assert response.result.message == ''
    assert len(response.result.images) >= 1


class GoalRun:
    """One goal sent through an ActionClient: its feedback, handle and result."""

    def __init__(self, client, goal):
        """Send `goal` and start collecting feedback."""
        self.feedback = []
        self.sent_at = time.monotonic()
        self.future = client.send_goal_async(goal, feedback_callback=self._on_feedback)
        self.handle = None
        self._result_future = None

    def _on_feedback(self, message):
        self.feedback.append((time.monotonic(), message.feedback))

    def accepted(self, timeout=20.0):
        """Wait for the goal response; return whether the goal was accepted."""
        self.handle = wait_future(self.future, timeout)
        if self.handle.accepted:
            self._result_future = self.handle.get_result_async()
        return self.handle.accepted

    def result(self, timeout=120.0):
        """Wait for the result; return the GetResult response (.status, .result)."""
        if self.handle is None:
            self.accepted()
        return wait_future(self._result_future, timeout)

    def cancel(self, timeout=20.0):
        """Request cancellation; return the CancelGoal response."""
        if self.handle is None:
            self.accepted()
        return wait_future(self.handle.cancel_goal_async(), timeout)

    def stages(self):
        """Return the feedback stages in order of arrival."""
        return [feedback.stage for _, feedback in self.feedback]

    def wait_feedback(self, predicate, timeout=60.0):
        """Wait for a feedback message matching `predicate`; return it or None."""
        def find():
            return next((fb for _, fb in list(self.feedback) if predicate(fb)), None)
        return wait_for(find, timeout)


class RosClient:
    """rclpy context + node in the test process, spun by a background executor."""

    def __init__(self, name='sdxl_test'):
        """Create and spin the node."""
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f'{name}_{os.getpid()}', context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._action_clients = {}
        self._service_clients = {}

    def close(self):
        """Stop spinning and shut the context down."""
        import rclpy
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)

    # ------------------------------------------------------------------- actions
    def action_client(self, action_name):
        """Return a (cached) GenerateImage ActionClient for `action_name`."""
        from rclpy.action import ActionClient
        from sdxl_ros.action import GenerateImage
        if action_name not in self._action_clients:
            self._action_clients[action_name] = ActionClient(self.node, GenerateImage,
                                                             action_name)
        return self._action_clients[action_name]

    def connect(self, action_name, timeout=30.0):
        """Discover the action server (services and feedback publisher); return the client."""
        client = self.action_client(action_name)
        if not client.wait_for_server(timeout_sec=timeout):
            raise TimeoutError(f'no action server {action_name}')
        # The server's services are up; let discovery reach its feedback publisher too, so
        # the first feedback messages are not published before this client listens.
        feedback_topic = f'{action_name}/_action/feedback'
        if not wait_for(lambda: self.node.count_publishers(feedback_topic), timeout):
            raise TimeoutError(f'no feedback publisher on {feedback_topic}')
        return client

    def send_goal(self, action_name, timeout=30.0, **fields):
        """Send a GenerateImage goal built from `fields`; return its GoalRun (accepted)."""
        from sdxl_ros.action import GenerateImage
        client = self.connect(action_name, timeout)
        run = GoalRun(client, GenerateImage.Goal(**fields))
        run.accepted(timeout)
        return run

    def generate(self, action_name, timeout=120.0, **fields):
        """Send a goal and wait for its end; return (GoalRun, GetResult response)."""
        run = self.send_goal(action_name, **fields)
        return run, run.result(timeout)

    # ------------------------------------------------------------------ services
    def call(self, srv_type, name, request=None, timeout=30.0):
        """Call service `name` and return its response."""
        key = (srv_type, name)
        if key not in self._service_clients:
            self._service_clients[key] = self.node.create_client(srv_type, name)
        client = self._service_clients[key]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f'no service {name}')
        return wait_future(client.call_async(request or srv_type.Request()), timeout)

    def set_parameters(self, node_fqn, **values):
        """Set parameters of a remote node; return the SetParametersResult list."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        return self.call(SetParameters, f'{node_fqn}/set_parameters', request).results

    def lifecycle_state(self, node_fqn, timeout=30.0):
        """Return the label of a lifecycle node's current state ('active', ...)."""
        from lifecycle_msgs.srv import GetState
        return self.call(GetState, f'{node_fqn}/get_state', timeout=timeout).current_state.label

    def change_state(self, node_fqn, transition_id, timeout=60.0):
        """Trigger a lifecycle transition (lifecycle_msgs/Transition id); return success."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.call(ChangeState, f'{node_fqn}/change_state', request, timeout).success

    def wait_active(self, fqn, process=None, timeout=90.0):
        """Wait until node `fqn` reports the lifecycle state 'active'; watch its NodeProcess."""
        def log():
            return process.log() if process is not None else ''

        def active():
            if process is not None and not process.alive:
                raise RuntimeError(f'{fqn} exited:\n{log()}')
            try:
                return self.lifecycle_state(fqn, timeout=2.0) == 'active'
            except TimeoutError:
                return False
        if not wait_for(active, timeout, interval=0.2):
            raise TimeoutError(f'{fqn} not active after {timeout} s:\n{log()}')

    # -------------------------------------------------------------------- topics
    def subscribe(self, msg_type, topic, qos):
        """Subscribe to `topic`; return the list the messages are appended to."""
        received = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received
