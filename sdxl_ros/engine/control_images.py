# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
ControlNet preprocessors: a camera frame in, the control map a ControlNet reads out.

Modules (A1111's names where it has them):

- `none`: the image is the control map as it is (uint8 RGB).
- `depth`: the image already is a depth map, near = bright (what SDXL depth ControlNets were
  trained on, MiDaS-style); used as it is.
- `depth_metric`: a depth camera's frame, uint16 millimetres (16UC1) or float32 metres
  (32FC1). Invalid pixels (0, NaN, +-inf, negative) become black; valid ones become inverse
  depth (1/metres) scaled min-max over the frame's valid pixels to 0..255 (nearest = 255,
  farthest = 0), as relative-inverse-depth maps of MiDaS are. Black for invalid pixels is
  what a depth camera's holes mostly are: too far or no return.
- `canny`: OpenCV's Canny edges (white on black) with A1111's two thresholds (low, high),
  run on the RGB picture. OpenCV is imported when used; without it the module is refused.

numpy only (OpenCV for canny): no torch, so the node can check goals with it.
"""

import numpy as np

#: Preprocessors by name, and the kinds of image each takes.
MODULES = ('none', 'depth', 'depth_metric', 'canny')
#: Modules that take a depth frame (uint16 millimetres or float32 metres, HxW).
DEPTH_FRAME_MODULES = ('depth_metric',)
#: A1111's canny defaults and slider range (Threshold A = low, Threshold B = high).
DEFAULT_CANNY_LOW = 100.0
DEFAULT_CANNY_HIGH = 200.0
CANNY_RANGE = (1.0, 255.0)


class ControlImageError(ValueError):
    """An image cannot be turned into a control map by a module; the message says why."""


def opencv_problem():
    """Return why OpenCV cannot be used ('' when `import cv2` works)."""
    try:
        import cv2  # noqa: F401
    except ImportError as error:
        return (f'module canny needs OpenCV (pip package opencv-python-headless), which is '
                f'not installed here ({error}); use module none with an edge picture')
    return ''


def image_problem(module, image):
    """Return why `image` (numpy array) does not suit `module`, or ''."""
    if not isinstance(image, np.ndarray):
        return f'the control image must be a numpy array, got {type(image).__name__}'
    if module in DEPTH_FRAME_MODULES:
        if image.ndim != 2 or image.dtype not in (np.uint16, np.float32):
            return (f'module {module} needs a depth frame (16UC1 millimetres or 32FC1 metres, '
                    f'one channel), got {image.dtype} {image.shape}: use module depth for a '
                    'depth picture, none for any other picture')
    elif image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return (f'module {module} needs an 8-bit picture (rgb8, bgr8, rgba8, bgra8 or mono8), '
                f'got {image.dtype} {image.shape}'
                + (': use module depth_metric for a depth frame'
                   if image.ndim == 2 and image.dtype in (np.uint16, np.float32) else ''))
    if image.shape[0] == 0 or image.shape[1] == 0:
        return f'the control image is empty ({image.shape[1]}x{image.shape[0]} pixels)'
    return ''


def depth_metric_map(depth):
    """
    Return the uint8 HxW near-bright map of a uint16 (mm) or float32 (m) depth frame.

    Valid pixels: finite and > 0. Their inverse depth is scaled min-max to 0..255 and
    rounded (numpy's round half to even); a frame at one single distance is all 255;
    invalid pixels (and a frame without valid ones) are 0.
    """
    metres = depth.astype(np.float64)
    if depth.dtype == np.uint16:
        metres /= 1000.0
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(metres) & (metres > 0)
    result = np.zeros(depth.shape, np.uint8)
    if not valid.any():
        return result
    inverse = 1.0 / metres[valid]
    low, high = inverse.min(), inverse.max()
    if high == low:
        result[valid] = 255
        return result
    result[valid] = np.rint((inverse - low) * (255.0 / (high - low))).astype(np.uint8)
    return result


def canny_map(picture, low, high):
    """Return OpenCV's Canny edges (uint8 HxW, 0 or 255) of a uint8 RGB picture."""
    problem = opencv_problem()
    if problem:
        raise ControlImageError(problem)
    import cv2
    return cv2.Canny(np.ascontiguousarray(picture), float(low), float(high))


def to_rgb(gray):
    """Repeat a uint8 HxW map into the three channels a ControlNet reads."""
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def preprocess(module, image, canny_low=DEFAULT_CANNY_LOW, canny_high=DEFAULT_CANNY_HIGH):
    """
    Return the uint8 HxWx3 control map of `image` for `module`.

    Raises ControlImageError when the module is unknown, needs another kind of image or
    cannot run here (canny without OpenCV).
    """
    if module not in MODULES:
        raise ControlImageError(f'unknown module {module!r}: use one of ' + ', '.join(MODULES))
    problem = image_problem(module, image)
    if problem:
        raise ControlImageError(problem)
    if module == 'depth_metric':
        return to_rgb(depth_metric_map(image))
    if module == 'canny':
        return to_rgb(canny_map(image, canny_low, canny_high))
    return np.ascontiguousarray(image)
