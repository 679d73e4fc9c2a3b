# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
`sdxl_generate --control` specs -> ControlUnit messages.

    --control MODULE:SOURCE[:KEY=VALUE...]

SOURCE is a picture file when it ends in an image suffix (.png, .jpg, .jpeg, .bmp, .tif,
.tiff, .webp), a topic when it starts with `/`; `file=PATH` or `topic=NAME` say it
explicitly. Keys: model, weight, start, end, mode (control mode), resize, type (union
control type), low, high (canny thresholds). Example:

    --control depth_metric:/camera/depth/image_raw:model=xl_depth:weight=0.8
    --control canny:sketch.png:model=xl_canny:low=50:high=150

A depth_metric file is a 16-bit PNG in millimetres (what depth cameras save). With
--from-png, one --control per unit of the PNG gives its picture or topic; MODULE may then be
left empty (`--control :depth.png`) and keys override the PNG's settings.
"""

from pathlib import Path

from sdxl_ros.engine.request import RequestError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
#: Spec keys -> (ControlUnit field, type).
KEYS = {'model': ('model', str), 'weight': ('weight', float),
        'start': ('guidance_start', float), 'end': ('guidance_end', float),
        'mode': ('control_mode', str), 'resize': ('resize_mode', str),
        'type': ('control_type', str), 'low': ('canny_low_threshold', float),
        'high': ('canny_high_threshold', float)}


def parse_spec(spec):
    """Return (module, ('file' | 'topic' | '', source), {field: value}) of one --control."""
    module, _, rest = spec.partition(':')
    parts = rest.split(':') if rest else []
    source = ('', '')
    values = {}
    for index, part in enumerate(parts):
        key, sep, value = part.partition('=')
        if not sep:
            if index or source[0]:
                raise RequestError(f'--control {spec!r}: {part!r} is not KEY=VALUE')
            suffix = Path(part).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                source = ('file', part)
            elif part.startswith('/'):
                source = ('topic', part)
            else:
                raise RequestError(
                    f'--control {spec!r}: {part!r} is neither a picture file (ends in '
                    + ', '.join(IMAGE_SUFFIXES) + ') nor a topic (starts with /): write '
                    'file=PATH or topic=NAME')
        elif key in ('file', 'topic'):
            source = (key, value)
        elif key in KEYS:
            field, kind = KEYS[key]
            try:
                values[field] = kind(value)
            except ValueError:
                raise RequestError(f'--control {spec!r}: {key}={value!r} is not a number') \
                    from None
        else:
            raise RequestError(f'--control {spec!r}: unknown key {key!r}; use file, topic, '
                               + ', '.join(KEYS))
    return module.strip(), source, values


def read_control_file(path, module):
    """Return the Image message of a control picture (16-bit depth PNG for depth_metric)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from sdxl_ros.ros.image_conversion import numpy_to_image_msg
    try:
        with Image.open(path) as image:
            if module != 'depth_metric':
                return numpy_to_image_msg(np.asarray(image.convert('RGB')).copy())
            depth = np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise RequestError(f'cannot read {path}: {error}') from None
    if depth.ndim != 2 or depth.dtype.kind not in 'ui' or depth.min() < 0 \
            or depth.max() > 65535:
        raise RequestError(f'{path}: module depth_metric reads a 16-bit one-channel PNG in '
                           f'millimetres, got {depth.dtype} {depth.shape}')
    return depth_msg(depth.astype(np.uint16))


def depth_msg(depth):
    """Return a 16UC1 Image (millimetres, little-endian) holding a uint16 HxW array."""
    import numpy as np
    from sensor_msgs.msg import Image
    msg = Image(height=depth.shape[0], width=depth.shape[1], encoding='16UC1',
                is_bigendian=0, step=2 * depth.shape[1])
    msg.data = np.ascontiguousarray(depth, '<u2').tobytes()
    return msg


def control_unit(spec, base=None):
    """
    Return the ControlUnit message of one --control spec.

    `base`: a ControlUnit with the settings read from --from-png (the spec's module and keys
    override them; its image source is required).
    """
    from sdxl_ros.msg import ControlUnit
    module, (kind, source), values = parse_spec(spec)
    unit = base if base is not None else ControlUnit()
    if module:
        unit.module = module
    for field, value in values.items():
        setattr(unit, field, value)
    if not kind or not source:
        raise RequestError(f'--control {spec!r} names no picture file or topic')
    if kind == 'topic':
        unit.image_topic = source
    else:
        unit.image = read_control_file(source, unit.module)
    if not unit.model:
        raise RequestError(f'--control {spec!r} names no ControlNet: add model=NAME '
                           '(see ros2 service call /sdxl/list_models)')
    return unit
