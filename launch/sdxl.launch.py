# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Start sdxl_node configured and active (autostart), e.g.

    ros2 launch sdxl_ros sdxl.launch.py base_model:=tiny refiner_model:=tiny
    ros2 launch sdxl_ros sdxl.launch.py namespace:=robot1 params_file:=/path/my.yaml

Arguments: params_file (default: the package's config/sdxl.yaml), namespace, base_model,
refiner_model, model_dir, device (each overrides the params file only when given), log_level.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

#: Arguments that override a parameter of the params file when given (not empty).
OVERRIDES = {
    'base_model': 'SDXL base: checkpoint, diffusers folder or preset (tiny, sdxl-random)',
    'refiner_model': 'SDXL refiner, as base_model ("none" = base only)',
    'model_dir': 'directory holding the checkpoints / diffusers folders',
    'device': 'auto, cuda or cpu',
}


def overrides(context):
    """Return the parameter overrides given on the command line."""
    values = {}
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value:
            values[name] = '' if value == 'none' else value
    return values


def launch_node(context):
    """Build the node action once the arguments are known."""
    return [Node(
        package='sdxl_ros', executable='sdxl_node', name='sdxl',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'), overrides(context),
                    {'autostart': True}],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        output='screen', emulate_tty=True)]


def generate_launch_description():
    """Declare the arguments and start the node."""
    default_params = PathJoinSubstitution(
        [FindPackageShare('sdxl_ros'), 'config', 'sdxl.yaml'])
    arguments = [
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='parameters file of the node'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug, info, warn, error or fatal'),
    ]
    arguments += [DeclareLaunchArgument(name, default_value='', description=text)
                  for name, text in OVERRIDES.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=launch_node)])
