# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
launch/sdxl.launch.py and config/sdxl.yaml.

The launch tests need `launch` and `launch_ros` (not on PyPI; `launch_ros` also needs
`composition_interfaces`): they skip, naming the import that failed, in the wheel-based
environment and run wherever a system ROS 2 is sourced. The config file is checked
against the real node everywhere.
"""

import importlib
import importlib.util
from pathlib import Path
import signal
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'sdxl.launch.py'


def _needs_launch():
    """Skip with the real import error when launch or launch_ros does not import here."""
    for module in ('launch', 'launch_ros'):
        try:
            importlib.import_module(module)
        except ImportError as error:
            pytest.skip(f'{module} does not import: {type(error).__name__}: {error} (launch '
                        'and launch_ros come with a system ROS 2; launch_ros needs '
                        'composition_interfaces too)')


def _load_launch_module():
    spec = importlib.util.spec_from_file_location('sdxl_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_compiles():
    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), 'exec')


def test_launch_file_declares_the_arguments():
    _needs_launch()
    description = _load_launch_module().generate_launch_description()
    names = {argument.name for argument in description.get_launch_arguments()}
    assert {'params_file', 'namespace', 'base_model', 'refiner_model', 'model_dir', 'device',
            'log_level'} <= names


#: Runs a launch file in its own process: LaunchService must own the main thread (signals).
LAUNCH_RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
arguments = dict(arg.split(':=', 1) for arg in sys.argv[2:])
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments.items())]))
sys.exit(service.run())
"""


@pytest.mark.ros
def test_launch_starts_the_node_active_and_serving(ros_client, tmp_path):
    _needs_launch()
    from ros_harness import write_parameters_file
    params = write_parameters_file(tmp_path / 'params.yaml', {
        'min_side': 64, 'default_width': 64, 'default_height': 64, 'default_steps': 3})
    namespace = f'launch_test_{tmp_path.name}'
    arguments = {'params_file': str(params), 'namespace': namespace, 'base_model': 'tiny',
                 'refiner_model': 'tiny', 'device': 'cpu', 'log_level': 'warn'}
    launch = subprocess.Popen(
        [sys.executable, '-c', LAUNCH_RUNNER, str(LAUNCH_FILE)]
        + [f'{key}:={value}' for key, value in arguments.items()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fqn = f'/{namespace}/sdxl'
        ros_client.wait_active(fqn)
        _, response = ros_client.generate(f'{fqn}/generate', prompt='a robot', seed=1)
        assert response.result.message == ''
        assert len(response.result.images) == 1
        assert response.result.images[0].width == 64
    finally:
        launch.send_signal(signal.SIGINT)
        try:
            output, _ = launch.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            launch.kill()
            output, _ = launch.communicate()
    assert launch.returncode == 0, output


@pytest.mark.ros
def test_config_file_is_accepted_by_the_node(ros_client, start_node):
    """The shipped defaults load in the real node (types and ranges match the descriptors)."""
    from rcl_interfaces.srv import GetParameters
    node = start_node(params_files=[ROOT / 'config' / 'sdxl.yaml'])
    request = GetParameters.Request(names=['default_scheduler', 'max_queue', 'frame_id'])
    values = ros_client.call(GetParameters, f'{node.fqn}/get_parameters', request).values
    assert values[0].string_value == 'DPM++ 2M Karras'
    assert values[1].integer_value == 1  # the test parameters override the file
    assert values[2].string_value == 'sdxl'
