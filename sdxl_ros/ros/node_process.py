# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The sdxl_node process: spin until SIGINT/SIGTERM, answer the goals, leave the graph, exit.

On the way out every goal is answered ('node shutting down'), then everything that holds the
node is destroyed (action server, publishers, services, timers, the lifecycle state machine,
the node) before ROS is shut down, so the DDS participant says goodbye and other processes
see the node and its action vanish at once; an exit without that leaves them in the graph for
about 20 s. Python's own module teardown (torch, diffusers) is then skipped to exit quickly.
"""

import os
import signal
import time

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

#: Set to 1 by the test harness (test/ros_harness.py): the node then also declares its test
#: hooks (node_parameters.TEST_HOOKS). Read here, at the entry point, and nowhere else.
TEST_HOOKS_ENV = 'SDXL_ROS_TEST_HOOKS'


def _interrupt(signum, frame):
    """Turn SIGINT and SIGTERM into KeyboardInterrupt."""
    raise KeyboardInterrupt


def run_node(node_class, args=None):
    """Run a node of `node_class` (an SdxlNode) until Ctrl-C or SIGTERM, then exit 0."""
    # Signals are handled here, not by rclpy, so goals can still be answered on the way out.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = node_class(test_hooks=os.environ.get(TEST_HOOKS_ENV) == '1')
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
        leave_graph(node)
        rclpy.try_shutdown()
    _exit_without_teardown()


def _finish_goals(node, executor, timeout=5.0):
    """Abort the remaining goals and keep spinning until their results went out."""
    node.shutting_down()
    deadline = time.monotonic() + timeout
    while node.has_goals() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    # Give the result responses a moment to leave before the context goes away.
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def leave_graph(node):
    """Destroy the action server, publishers and the lifecycle state machine, then the node."""
    node.action_server.destroy()
    node.publishing.destroy()
    node.destroy_node()
    # rclpy's LifecycleNode (Humble to Kilted) keeps its rcl state machine, which holds the
    # node's handle, in a private attribute and never destroys it: destroy it here if present.
    state_machine = getattr(node, '_state_machine', None)
    if hasattr(state_machine, 'destroy_when_not_in_use'):
        state_machine.destroy_when_not_in_use()


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
