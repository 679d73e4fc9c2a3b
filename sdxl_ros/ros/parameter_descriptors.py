# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The parameter table (node_parameters.py) as ROS parameters: descriptors, declaring, reading.

Kept apart from the table so the table and its checks stay free of rclpy and are tested
without ROS, and from the node so it only says which parameters it has.
"""

from dataclasses import fields

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
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
        node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))


def read_parameters(node):
    """Read the declared parameters of `node` once into a NodeParameters (others: defaults)."""
    return NodeParameters(**{f.name: node.get_parameter(f.name).value
                             for f in fields(NodeParameters) if node.has_parameter(f.name)})
