# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""RequestError and the field checks that request.py and control_request.py share."""

import math


class RequestError(ValueError):
    """A request field is out of range; the message says which and what is allowed."""


def check_int(value, field):
    """Refuse non-integers (bool included) with a readable message."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f'{field} must be an integer, got {value!r}')
    return value


def check_float(value, field):
    """
    Refuse non-numbers and NaN/inf; round to float32 precision.

    Goal fields arrive as float32 through ROS (0.8 becomes 0.800000011920929); keeping 7
    significant digits, float32's precision, gives back the 0.8 the user typed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f'{field} must be a number, got {value!r}')
    value = float(value)
    if not math.isfinite(value):
        raise RequestError(f'{field} must be a finite number, got {value}')
    return float(f'{value:.7g}')
