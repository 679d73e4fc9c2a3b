# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
ControlNet units of a request, with A1111's ControlNet extension's names, defaults and ranges.

Torch-free like request.py, whose `validate_request` checks a request's units through
`validate_control_units`.
"""

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from sdxl_ros.engine.request_checks import check_float, RequestError

#: Control modes, resize modes and union control types by the extension's labels.
CONTROL_MODES = ('Balanced', 'My prompt is more important', 'ControlNet is more important')
CONTROL_RESIZE_MODES = ('Just Resize', 'Crop and Resize', 'Resize and Fill')
#: xinsir's union ControlNet types, in the order of their control_mode index.
UNION_CONTROL_TYPES = ('OpenPose', 'Depth', 'Soft Edge', 'Hard Edge', 'Normal Map',
                       'Segmentation')
MAX_CONTROL_WEIGHT = 2.0


@dataclass(frozen=True)
class ControlUnitRequest:
    """One ControlNet unit; field meanings follow msg/ControlUnit.msg (extension defaults)."""

    model: str
    #: uint8 HxWx3 RGB picture, or for depth_metric a HxW uint16 (mm) / float32 (m) frame.
    image: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    module: str = 'none'
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = CONTROL_MODES[0]
    resize_mode: str = CONTROL_RESIZE_MODES[1]
    control_type: str = ''
    canny_low_threshold: float = 100.0
    canny_high_threshold: float = 200.0


def _label(value, labels, field):
    """Return the label of `labels` that `value` names (case and spacing ignored)."""
    key = ' '.join(str(value).lower().split())
    for label in labels:
        if label.lower() == key:
            return label
    raise RequestError(f'unknown {field} {value!r}: use one of ' + ', '.join(labels))


def validate_control_unit(unit, index):
    """Check one ControlUnitRequest; return it normalised (labels, float32 rounding)."""
    from sdxl_ros.engine.control_images import (CANNY_RANGE, image_problem, MODULES,
                                                opencv_problem)
    name = f'control[{index}]'
    if not isinstance(unit, ControlUnitRequest):
        raise RequestError(f'{name} must be a ControlUnitRequest, got {type(unit).__name__}')
    model = unit.model.strip() if isinstance(unit.model, str) else ''
    if not model:
        raise RequestError(f'{name}.model is empty: name a ControlNet (see ~/list_models)')
    module = (unit.module or 'none').strip().lower()
    if module not in MODULES:
        raise RequestError(f'{name}.module {unit.module!r} is unknown: use one of '
                           + ', '.join(MODULES))
    if module == 'canny' and opencv_problem():
        raise RequestError(f'{name}: {opencv_problem()}')
    weight = check_float(unit.weight, f'{name}.weight')
    if not 0.0 <= weight <= MAX_CONTROL_WEIGHT:
        raise RequestError(f'{name}.weight {weight} is out of range: use 0..'
                           f'{MAX_CONTROL_WEIGHT:g} (1 = full strength, 0 = no effect)')
    start = check_float(unit.guidance_start, f'{name}.guidance_start')
    end = check_float(unit.guidance_end, f'{name}.guidance_end')
    if not 0.0 <= start < end <= 1.0:
        raise RequestError(
            f'{name}: guidance_start {start} and guidance_end {end} must satisfy '
            '0 <= start < end <= 1 (fractions of the steps where control applies)')
    low = check_float(unit.canny_low_threshold, f'{name}.canny_low_threshold')
    high = check_float(unit.canny_high_threshold, f'{name}.canny_high_threshold')
    if module == 'canny' and not CANNY_RANGE[0] <= low <= high <= CANNY_RANGE[1]:
        raise RequestError(f'{name}: canny thresholds low {low:g}, high {high:g} must '
                           f'satisfy {CANNY_RANGE[0]:g} <= low <= high <= {CANNY_RANGE[1]:g}')
    control_type = ''
    if unit.control_type:
        control_type = _label(unit.control_type, UNION_CONTROL_TYPES,
                              f'{name}.control_type')
    if unit.image is None:
        raise RequestError(f'{name} has no image: set image or image_topic')
    problem = image_problem(module, unit.image)
    if problem:
        raise RequestError(f'{name}: {problem}')
    return replace(
        unit, model=model, module=module, weight=weight, guidance_start=start,
        guidance_end=end, canny_low_threshold=low, canny_high_threshold=high,
        control_type=control_type,
        control_mode=_label(unit.control_mode or CONTROL_MODES[0], CONTROL_MODES,
                            f'{name}.control_mode'),
        resize_mode=_label(unit.resize_mode or CONTROL_RESIZE_MODES[1],
                           CONTROL_RESIZE_MODES, f'{name}.resize_mode'))


def validate_control_units(units, limits):
    """Check the ControlNet units of a request against `limits`; return them as a tuple."""
    units = tuple(units or ())
    if len(units) > limits.max_control_units:
        raise RequestError(f'{len(units)} ControlNet units given; at most '
                           f'{limits.max_control_units} are allowed (max_control_units)')
    return tuple(validate_control_unit(unit, index) for index, unit in enumerate(units))
