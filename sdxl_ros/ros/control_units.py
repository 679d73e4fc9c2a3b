# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
ControlUnit messages -> ControlUnitRequest: control images (camera and depth frames) and topics.

Pure functions (no node): the goal's units are converted with the frames taken from their
`image_topic`s, or with stand-in frames of the right kind when a topic goal is checked at
admission (the real frames are checked again when they arrive). Depth frames are read as
cv_bridge reads them: 16UC1 -> uint16 millimetres, 32FC1 -> float32 metres, with the
message's byte order.
"""

import numpy as np

from sdxl_ros.engine.control_images import DEPTH_FRAME_MODULES
from sdxl_ros.engine.control_request import ControlUnitRequest
from sdxl_ros.engine.request import RequestError
from sdxl_ros.ros.image_conversion import image_msg_to_numpy, pixel_rows

#: Depth encodings: numpy dtype (little-endian form) of one pixel.
DEPTH_ENCODINGS = {'16UC1': '<u2', '32FC1': '<f4'}


def _is_set(msg):
    """Whether an Image field was filled in (a default Image has no size or data)."""
    return msg is not None and bool(msg.width or msg.height or msg.encoding or len(msg.data))


def depth_msg_to_numpy(msg):
    """Return a 16UC1 (uint16) or 32FC1 (float32) Image as a HxW array; ValueError if bad."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f'encoding {msg.encoding!r} is not a depth encoding: use '
                         + ' or '.join(DEPTH_ENCODINGS))
    dtype = np.dtype(DEPTH_ENCODINGS[msg.encoding])
    if msg.is_bigendian:
        dtype = dtype.newbyteorder('>')
    rows = pixel_rows(msg, dtype.itemsize)
    return np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width) \
        .astype(dtype.newbyteorder('='))


def control_image_to_numpy(msg, module):
    """
    Return the array a unit's module reads from an Image, refusing a wrong encoding.

    depth_metric reads 16UC1/32FC1; the other modules read 8-bit pictures (rgb8, bgr8, rgba8,
    bgra8, mono8). Raises ValueError with the reason.
    """
    depth = msg.encoding in DEPTH_ENCODINGS
    if module in DEPTH_FRAME_MODULES and not depth:
        raise ValueError(f'module {module} needs a depth frame (16UC1 millimetres or 32FC1 '
                         f'metres), got {msg.encoding!r}: use module depth for a depth '
                         'picture, none for any other picture')
    if depth and module not in DEPTH_FRAME_MODULES:
        raise ValueError(f'module {module or "none"} needs an 8-bit picture, got '
                         f'{msg.encoding!r}: use module depth_metric for a depth frame')
    return depth_msg_to_numpy(msg) if depth else image_msg_to_numpy(msg)


def control_topics(goal):
    """Return [(unit index, topic)] of the goal's topic-driven units; refuse both/neither."""
    topics = []
    for index, unit in enumerate(getattr(goal, 'control', ())):
        topic = unit.image_topic.strip()
        if topic and _is_set(unit.image):
            raise RequestError(f'control[{index}]: set either image or image_topic, not both')
        if not topic and not _is_set(unit.image):
            raise RequestError(f'control[{index}] has no image: set image or image_topic')
        if topic:
            topics.append((index, topic))
    return topics


def stand_in(module):
    """Return a small array of the kind `module` reads, to check a topic unit before its frame."""
    if module in DEPTH_FRAME_MODULES:
        return np.ones((8, 8), np.uint16)
    return np.zeros((8, 8, 3), np.uint8)


def goal_control_units(goal, frames=None):
    """
    Return the goal's units as ControlUnitRequests (not yet validated).

    `frames` {unit index: Image} holds the frames taken from the units' topics; a topic
    unit without one gets a stand-in array. RequestError names the unit when an image is bad.
    """
    frames = frames or {}
    units = []
    for index, unit in enumerate(getattr(goal, 'control', ())):
        module = (unit.module or 'none').strip().lower()
        topic = unit.image_topic.strip()
        source = frames.get(index) if topic else unit.image
        field = f'control[{index}].image_topic {topic}' if topic else f'control[{index}].image'
        if source is None and topic:
            image = stand_in(module)
        elif source is None or not _is_set(source):
            image = None
        else:
            try:
                image = control_image_to_numpy(source, module)
            except ValueError as error:
                raise RequestError(f'{field}: {error}') from None
        units.append(ControlUnitRequest(
            model=unit.model, image=image, module=module, weight=float(unit.weight),
            guidance_start=float(unit.guidance_start), guidance_end=float(unit.guidance_end),
            control_mode=unit.control_mode, resize_mode=unit.resize_mode,
            control_type=unit.control_type,
            canny_low_threshold=float(unit.canny_low_threshold),
            canny_high_threshold=float(unit.canny_high_threshold)))
    return tuple(units)


def request_units_to_goal(units, goal):
    """Append ControlUnit messages for `units` (settings, no images) to `goal.control`."""
    from sdxl_ros.msg import ControlUnit
    goal.control = [ControlUnit(
        model=unit.model, module=unit.module, weight=float(unit.weight),
        guidance_start=float(unit.guidance_start), guidance_end=float(unit.guidance_end),
        control_mode=unit.control_mode, resize_mode=unit.resize_mode,
        control_type=unit.control_type, canny_low_threshold=float(unit.canny_low_threshold),
        canny_high_threshold=float(unit.canny_high_threshold)) for unit in units]
    return goal
