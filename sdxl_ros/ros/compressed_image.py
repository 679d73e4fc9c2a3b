# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
numpy RGB images <-> sensor_msgs/CompressedImage, as image_transport's `compressed` plugin does.

`format` follows compressed_image_transport: `"<raw encoding>; <codec> compressed <pixfmt>"`.
Its publisher writes `bgr8` as the pixel format of colour images for both codecs, because it
hands OpenCV a BGR matrix; its subscriber turns the decoded (BGR) matrix back into `rgb8` only
when the format says `compressed bgr`. The file itself is an ordinary PNG or JPEG either way,
so `"rgb8; png compressed bgr8"` is what a C++ image_transport subscriber needs to get the
colours right. Pillow does the coding (it is a dependency already; no OpenCV needed).
"""

import io

import numpy as np
from PIL import Image as PilImage
from sensor_msgs.msg import CompressedImage

#: Values of the compressed_format parameter; 'none' publishes no compressed image.
COMPRESSED_FORMATS = ('png', 'jpeg', 'none')
#: PNG compression level: compressed_image_transport's default (OpenCV's, 3 of 9).
PNG_LEVEL = 3
#: Pillow's format names for the codecs.
_PIL_FORMATS = {'png': 'PNG', 'jpeg': 'JPEG'}


def format_string(codec, encoding='rgb8'):
    """Return the CompressedImage `format` of an rgb8 image coded with `codec`."""
    if codec not in _PIL_FORMATS:
        raise ValueError(f'codec {codec!r} is not one of: png, jpeg')
    return f'{encoding}; {codec} compressed bgr8'


def encode(array, codec, jpeg_quality=95):
    """Return the bytes of a uint8 HxWx3 RGB `array` coded as PNG or JPEG."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f'expected a uint8 HxWx3 RGB array, got {array.dtype} {array.shape}')
    if codec not in _PIL_FORMATS:
        raise ValueError(f'codec {codec!r} is not one of: png, jpeg')
    options = ({'compress_level': PNG_LEVEL} if codec == 'png'
               else {'quality': int(jpeg_quality)})
    buffer = io.BytesIO()
    PilImage.fromarray(np.ascontiguousarray(array), 'RGB').save(
        buffer, _PIL_FORMATS[codec], **options)
    return buffer.getvalue()


def numpy_to_compressed_msg(array, header, codec, jpeg_quality=95):
    """Return a `sensor_msgs/CompressedImage` of `array` with the raw image's `header`."""
    msg = CompressedImage()
    msg.header = header
    msg.format = format_string(codec)
    msg.data = encode(array, codec, jpeg_quality)
    return msg


def compressed_msg_to_numpy(msg):
    """
    Return the image of a PNG or JPEG CompressedImage as a uint8 HxWx3 RGB array.

    The file holds the colours in its own standard order whatever `format` says after
    'compressed', so Pillow's RGB decode is right for rgb8 and bgr8 sources alike.
    """
    if ' png ' not in msg.format and ' jpeg ' not in msg.format:
        raise ValueError(f'unsupported CompressedImage format {msg.format!r}')
    with PilImage.open(io.BytesIO(bytes(msg.data))) as image:
        array = np.asarray(image.convert('RGB'))
    return np.ascontiguousarray(array)
