# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Fixtures for tests with ROS processes: a started sdxl_node and a real rclpy client.

Tests that use them are marked `ros` and skip with the reason when rclpy does not import; the
harness refuses to start anything when the loopback-only DDS profile is not in effect.
"""

import importlib.util

import pytest

# The reliability suite's figures and summary table (pytest hooks).
from reliability_report import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401
from ros_harness import confinement_problem, NodeProcess, RosClient

ROS_AVAILABLE = importlib.util.find_spec('rclpy') is not None
ROS_SKIP_REASON = 'rclpy is not importable: source scripts/env.sh or run scripts/test.sh'


def pytest_collection_modifyitems(config, items):
    """Skip the `ros` tests where rclpy is missing."""
    if ROS_AVAILABLE:
        return
    skip = pytest.mark.skip(reason=ROS_SKIP_REASON)
    for item in items:
        if 'ros' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def ros_confined():
    """Fail (never silently run) when ROS traffic would not be confined to loopback."""
    if not ROS_AVAILABLE:
        pytest.skip(ROS_SKIP_REASON)
    problem = confinement_problem()
    if problem:
        pytest.fail(f'refusing to start ROS: {problem}')


@pytest.fixture(scope='module')
def ros_client(ros_confined):
    """Give the module an rclpy node in the test process, spun by a background executor."""
    client = RosClient()
    yield client
    client.close()


def _start(client, workdir, parameters, params_files=()):
    """Start a node and wait until it is active; stop it again if that fails."""
    node = NodeProcess(workdir, parameters, params_files=params_files).start()
    try:
        client.wait_active(node.fqn, node)
    except BaseException:
        node.stop()
        raise
    return node


def _stop(node):
    """Stop a node; print its log so a failing test shows it."""
    node.stop()
    print(f'----- log of {node.fqn} (exit {node.returncode}) -----\n{node.log()}')


@pytest.fixture(scope='module')
def shared_node(ros_client, tmp_path_factory):
    """One sdxl_node (tiny preset, 64x64, max_queue 1) shared by the tests of a module."""
    node = _start(ros_client, tmp_path_factory.mktemp('node'),
                  {'preview_every_n_steps': 2,
                   'output_dir': str(tmp_path_factory.mktemp('output'))})
    yield node
    _stop(node)


@pytest.fixture
def start_node(ros_client, tmp_path):
    """Return a starter of fresh sdxl_nodes with extra parameters (and params files)."""
    started = []

    def start(params_files=(), **parameters):
        node = _start(ros_client, tmp_path, parameters, params_files)
        started.append(node)
        return node

    yield start
    for node in started:
        _stop(node)


# Where ROS 2 is missing altogether (the Python 3.10 CI part: no ROS wheels exist for 3.10), a
# test module that imports rclpy or ROS messages at its top is skipped as a whole, naming the
# missing package; any other import failure still fails collection.
_ROS_TOP_PACKAGES = ('rclpy', 'launch', 'launch_ros', 'rosidl_runtime_py')


def _is_ros_module_name(name):
    """Whether a missing module is a ROS 2 package or one the colcon build generates."""
    top = name.split('.')[0]
    return (top in _ROS_TOP_PACKAGES or top.endswith(('_msgs', '_interfaces'))
            or name.startswith(('sdxl_ros.action', 'sdxl_ros.srv')))


class _RosOptionalModule(pytest.Module):
    """A test module that is skipped, with the reason, where the ROS 2 it imports is missing."""

    def _getobj(self):
        try:
            return super()._getobj()
        except pytest.Collector.CollectError as error:
            missing = getattr(error.__cause__, 'name', None) or ''
            if isinstance(error.__cause__, ModuleNotFoundError) and _is_ros_module_name(missing):
                pytest.skip(f'imports {missing}, and ROS 2 is not installed here '
                            '(scripts/install.sh with SDXL_ROS_NO_ROS=1)',
                            allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path, parent):
    """Collect test modules as `_RosOptionalModule` where rclpy does not import."""
    if ROS_AVAILABLE:
        return None
    return _RosOptionalModule.from_parent(parent, path=module_path)
