# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The GenerateImage goal of sdxl_generate's command line: flags, --from-png and picture files.

Builds the goal message only; sending it and saving the result stay in sdxl_generate.py.
"""

from sdxl_ros.client.control_specs import control_unit
from sdxl_ros.engine.infotext import needs_init_image, needs_mask, parse_infotext
from sdxl_ros.engine.png_io import read_png_parameters
from sdxl_ros.engine.request import RequestError
from sdxl_ros.ros.goal_conversion import request_to_goal

#: Goal fields settable by flags: (flag, goal field, type, help).
GOAL_FLAGS = (
    ('--negative-prompt', 'negative_prompt', str, 'what to steer away from'),
    ('--width', 'width', int, 'image width in pixels, multiple of 8 (0 = node default)'),
    ('--height', 'height', int, 'image height in pixels, multiple of 8 (0 = node default)'),
    ('--steps', 'steps', int, 'denoising steps, base and refiner together (0 = default)'),
    ('--guidance-scale', 'guidance_scale', float, 'CFG scale (1 disables CFG; 0 = default)'),
    ('--refiner-switch', 'refiner_switch', float,
     'fraction of the steps done by the base, (0, 1]; 1 = base only (0 = default)'),
    ('--seed', 'seed', int, 'seed of the first image; -1 = random (default)'),
    ('--scheduler', 'scheduler', str, 'sampler, e.g. "DPM++ 2M", "Euler a", "LCM"'),
    ('--num-images', 'num_images', int, 'how many images (seeds seed, seed+1, ...)'),
    ('--init-topic', 'init_image_topic', str,
     'img2img from the next frame of this camera topic (sensor_msgs/Image)'),
    ('--strength', 'denoising_strength', float,
     'img2img denoising strength, (0, 1]: fraction of the schedule re-noised (0 = default)'),
    ('--resize-mode', 'resize_mode', str,
     'how the init image fits the size: "just resize", "crop and resize", "resize and fill"'),
    ('--mask-blur', 'mask_blur', int, 'inpainting: mask edge blur in pixels (default 4)'),
    ('--inpaint-padding', 'inpaint_full_res_padding', int,
     'with --inpaint-full-res: pixels around the mask (default 32)'),
    ('--schedule-type', 'schedule_type', str,
     'A1111 schedule type, e.g. "Karras", "SGM Uniform", "Align Your Steps" (empty = '
     'Automatic)'),
)


def read_picture(path, mode):
    """Read an image file as a uint8 array in PIL `mode` ('RGB' or 'L'); RequestError if not."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode)).copy()
    except (OSError, UnidentifiedImageError) as error:
        raise RequestError(f'cannot read {path}: {error}') from None


def _init_from_png(args, text):
    """Refuse an img2img/inpainting infotext whose init image (or mask) was not given."""
    if needs_init_image(text) and not (args.init_image or args.init_image_topic):
        raise RequestError(f'{args.from_png} was made from an init image (img2img): pass '
                           '--init-image FILE or --init-topic TOPIC')
    if needs_mask(text) and not args.mask:
        raise RequestError(f'{args.from_png} was inpainted: pass its mask with --mask FILE')


def _control_from_png(args, goal):
    """Give the PNG's ControlNet units their pictures from --control (one per unit)."""
    units = list(goal.control)
    if len(args.control) != len(units):
        listed = '; '.join(f'{i}: {u.module} with {u.model}' for i, u in enumerate(units))
        raise RequestError(
            f'{args.from_png} used {len(units)} ControlNet unit(s) ({listed or "none"}) but '
            f'{len(args.control)} --control were given: pass one per unit, in order, with its '
            'picture file or topic (its settings come from the PNG; keys override them)')
    goal.control = [control_unit(spec, unit) for spec, unit in zip(args.control, units)]


def build_goal(args, goal):
    """Fill the goal message `goal` from --from-png and the flags; raise RequestError."""
    if args.from_png:
        try:
            text = read_png_parameters(args.from_png)
        except OSError as error:
            raise RequestError(f'cannot read {args.from_png}: {error}') from None
        if not text:
            raise RequestError(f'{args.from_png} holds no "parameters" infotext')
        _init_from_png(args, text)
        request_to_goal(parse_infotext(text), goal)
        _control_from_png(args, goal)
    elif args.control:
        goal.control = [control_unit(spec) for spec in args.control]
    if args.init_image or args.mask:
        from sdxl_ros.ros.image_conversion import numpy_to_image_msg, numpy_to_mono_msg
        if args.init_image:
            goal.init_image = numpy_to_image_msg(read_picture(args.init_image, 'RGB'))
        if args.mask:
            goal.mask_image = numpy_to_mono_msg(read_picture(args.mask, 'L'))
    if args.inpaint_full_res:
        goal.inpaint_full_res = True
    if args.prompt is not None:
        goal.prompt = args.prompt
    for _flag, field, _kind, _text in GOAL_FLAGS:
        value = getattr(args, field)
        if value is not None:
            setattr(goal, field, value)
    if not args.from_png and args.prompt is None:
        raise RequestError('give a prompt or --from-png')
    return goal
