# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
numpy RGB images <-> sensor_msgs/Image, in the exact layout cv_bridge produces and expects.

Written: `rgb8` (`mono8` for masks), `step = channels * width`, `is_bigendian = 0`, rows top to
bottom. Read: rgb8, bgr8, rgba8, bgra8 and mono8 (what camera drivers publish), checked
field by field so a malformed message is refused with a reason. Pure: no node needed.
"""

import numpy as np
from sensor_msgs.msg import Image

#: Encodings `image_msg_to_numpy` reads: bytes per pixel and the RGB channel order in them
#: (None: one gray channel, copied to R, G and B). Alpha is dropped.
_ENCODINGS = {'rgb8': (3, (0, 1, 2)), 'bgr8': (3, (2, 1, 0)), 'rgba8': (4, (0, 1, 2)),
              'bgra8': (4, (2, 1, 0)), 'mono8': (1, None)}


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


def numpy_to_mono_msg(array, stamp=None, frame_id=''):
    """Return a `sensor_msgs/Image` (mono8, step = width) holding the uint8 HxW `array`."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f'expected a uint8 HxW array, got {array.dtype} {array.shape}')
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = array.shape
    msg.encoding = 'mono8'
    msg.is_bigendian = 0
    msg.step = array.shape[1]
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def pixel_rows(msg, bytes_per_pixel):
    """
    Return the HxW*bytes_per_pixel uint8 rows of `msg`, row padding dropped.

    Checks size, step and data length first (ValueError with the reason); the one reader of
    raw Image geometry for pictures and depth frames alike.
    """
    if msg.width == 0 or msg.height == 0:
        raise ValueError(f'image is {msg.width}x{msg.height} pixels: nothing to read')
    row_bytes = bytes_per_pixel * msg.width
    if msg.step < row_bytes:
        raise ValueError(f'step {msg.step} is less than width {msg.width} x {bytes_per_pixel} '
                         f'byte(s) per {msg.encoding} pixel = {row_bytes}')
    if len(msg.data) < msg.step * msg.height:
        raise ValueError(f'image data too short: {len(msg.data)} bytes, but height '
                         f'{msg.height} x step {msg.step} = {msg.step * msg.height}')
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8)[:msg.step * msg.height]
    return rows.reshape(msg.height, msg.step)[:, :row_bytes]


def _pixels(msg, channels):
    """Return the HxWxC uint8 pixels of `msg` after checking its size, step and data length."""
    return pixel_rows(msg, channels).reshape(msg.height, msg.width, channels)


def image_msg_to_numpy(msg):
    """
    Return the picture of a `sensor_msgs/Image` as a uint8 HxWx3 RGB array.

    Reads rgb8, bgr8, rgba8, bgra8 (alpha dropped) and mono8 (gray copied to R, G, B).
    Honours a row `step` larger than channels * width (padded rows), as cv_bridge does.
    Raises ValueError saying what is wrong (encoding, zero size, step, data length).
    """
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f'unsupported encoding {msg.encoding!r}: use '
                         + ', '.join(_ENCODINGS))
    channels, order = _ENCODINGS[msg.encoding]
    array = _pixels(msg, channels)
    if order is None:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    return np.ascontiguousarray(array[:, :, list(order)])


def mask_msg_to_numpy(msg):
    """Return the uint8 HxW array of a mono8 mask message (white = repaint); ValueError else."""
    if msg.encoding != 'mono8':
        raise ValueError(f'encoding {msg.encoding!r} is not mono8: a mask is one gray '
                         'channel, white = repaint, black = keep')
    return np.ascontiguousarray(_pixels(msg, 1)[:, :, 0])
