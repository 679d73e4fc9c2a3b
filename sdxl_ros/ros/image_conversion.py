# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
numpy RGB images <-> sensor_msgs/Image, in the exact layout cv_bridge produces and expects.

`rgb8`, `step = 3 * width`, `is_bigendian = 0`, rows top to bottom. Pure: no node needed.
"""

import numpy as np
from sensor_msgs.msg import Image

#: Bytes per pixel of the encodings `image_msg_to_numpy` reads, and whether they are BGR.
_ENCODINGS = {'rgb8': (3, False), 'bgr8': (3, True)}


def numpy_to_image_msg(array, stamp=None, frame_id=''):
    """Return a `sensor_msgs/Image` (rgb8) holding the uint8 HxWx3 RGB `array`."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f'expected a uint8 HxWx3 RGB array, got {array.dtype} {array.shape}')
    height, width, _ = array.shape
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height = height
    msg.width = width
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = 3 * width
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def image_msg_to_numpy(msg):
    """
    Return the image of an rgb8 or bgr8 `sensor_msgs/Image` as a uint8 HxWx3 RGB array.

    Honours a row `step` larger than 3 * width (padded rows), as cv_bridge does.
    """
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f'unsupported encoding {msg.encoding!r}: expected rgb8 or bgr8')
    channels, bgr = _ENCODINGS[msg.encoding]
    row_bytes = channels * msg.width
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ValueError(f'image data too short: step {msg.step}, {len(msg.data)} bytes for '
                         f'{msg.width}x{msg.height}')
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8)[:msg.step * msg.height]
    array = rows.reshape(msg.height, msg.step)[:, :row_bytes]
    array = array.reshape(msg.height, msg.width, channels)
    return np.ascontiguousarray(array[:, :, ::-1] if bgr else array)
