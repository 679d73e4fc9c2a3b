# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The parameter table (node_parameters.py) as ROS parameters: descriptors, declaring, reading.

Kept apart from the table so the table and its checks stay free of rclpy and are tested
without ROS, and from the node so it only says which parameters it has.
"""

from dataclasses import fields

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter
from sdxl_ros.ros.node_parameters import NodeParameters, PARAMETERS, TEST_HOOKS


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


def declare_parameters(node, test_hooks=False):
    """Declare every parameter of the table on `node` (and the test hooks if asked)."""
    for spec in PARAMETERS + (TEST_HOOKS if test_hooks else ()):
        if spec.default == ():
            _declare_string_array(node, spec)
        else:
            node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))


def _declare_string_array(node, spec):
    """
    Declare a string array that is unset unless given (an empty list cannot be typed).

    rclpy infers a type from a default value, and takes `[]` for a byte array; parameter files
    cannot hold an empty array either (ros2/rclcpp#1955). So the parameter is declared with
    its type and no value: newer rclpy takes the type as the value argument, older rclpy
    (Humble) reads it from the descriptor.
    """
    descriptor = parameter_descriptor(spec)
    try:
        node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor)
    except TypeError:  # an rclpy that infers the type from the value only
        descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
        node.declare_parameter(spec.name, None, descriptor)


def _value(node, name, default):
    """Return the value of parameter `name`; `default` while a typed parameter is unset."""
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        return default
    if isinstance(default, tuple):
        return default if value is None else tuple(value)
    return value


def read_parameters(node):
    """Read the declared parameters of `node` once into a NodeParameters (others: defaults)."""
    return NodeParameters(**{f.name: _value(node, f.name, f.default)
                             for f in fields(NodeParameters) if node.has_parameter(f.name)})
