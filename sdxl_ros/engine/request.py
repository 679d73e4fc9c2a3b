# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Generation request: the validated, ROS-free description of what to draw.

The node turns an action goal into a `GenerationRequest` (resolving zero/empty fields to its
defaults first); `validate_request` then checks every field against `Limits` and returns the
normalised request, or raises `RequestError` with a message a user can act on.
"""

from dataclasses import dataclass, field, replace
import re
from typing import Optional

import numpy as np

from sdxl_ros.engine.control_request import validate_control_units
from sdxl_ros.engine.prompt_parser import extract_loras, PromptSyntaxError, strip_comments
from sdxl_ros.engine.request_checks import check_float, check_int, RequestError
from sdxl_ros.engine.schedule_types import ScheduleError
from sdxl_ros.engine.schedulers import (parse_sampler_name, schedule_problem,
                                        unknown_sampler_message)

#: Largest seed + 1: seeds are unsigned 32-bit as in A1111.
SEED_LIMIT = 2 ** 32

#: A1111's img2img resize modes by their UI labels (what infotext writes), keyed by a
#: lower-case spelling; empty means 'Just resize'.
RESIZE_MODES = ('Just resize', 'Crop and resize', 'Resize and fill')
#: A1111's defaults and slider limits for the inpainting fields.
DEFAULT_DENOISING_STRENGTH = 0.75
DEFAULT_MASK_BLUR = 4
MAX_MASK_BLUR = 64
DEFAULT_INPAINT_PADDING = 32
MAX_INPAINT_PADDING = 256

#: Guidance (CFG) bounds. At 1.0 or below classifier-free guidance is off (one UNet pass per
#: step, what few-step models want); above 30 images burn out.
MIN_GUIDANCE = 0.0
MAX_GUIDANCE = 30.0

#: Emphasis modes (A1111's names, lower case); '' in a request = the engine's configured one.
EMPHASIS_MODES = ('original', 'none')

# Control characters other than tab and newline (C0, DEL, C1). They are removed from prompts
# rather than refused: they are invisible, come from copy-paste, and CLIP ignores them anyway.
_CONTROL_CHARS = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate; field meanings follow the GenerateImage action goal."""

    prompt: str
    negative_prompt: str = ''
    width: int = 1024
    height: int = 1024
    steps: int = 30
    guidance_scale: float = 7.0
    refiner_switch: float = 0.8
    seed: int = -1
    scheduler: str = 'DPM++ 2M Karras'
    num_images: int = 1
    #: img2img: uint8 HxWx3 RGB picture to start from (None = text-to-image). With an init
    #: image, width/height 0 mean "the init image's size" (see `size_for_init_image`).
    init_image: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    #: Fraction of the schedule re-noised and denoised again (A1111 meaning), in (0, 1].
    denoising_strength: float = DEFAULT_DENOISING_STRENGTH
    #: One of RESIZE_MODES (any case; empty = 'Just resize').
    resize_mode: str = RESIZE_MODES[0]
    #: Inpainting: uint8 HxW mask of the init image's size, white (>= 128) = repaint.
    mask_image: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    mask_blur: int = DEFAULT_MASK_BLUR
    #: A1111 "Only masked": inpaint the masked region (+ padding) at width x height.
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = DEFAULT_INPAINT_PADDING
    emphasis: str = ''
    #: A1111 schedule type ('' or 'Automatic' = the sampler's default; see schedule_types).
    schedule_type: str = ''
    #: ControlNet units (ControlUnitRequest), applied to the base pass; () = none.
    control: tuple = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Limits:
    """
    Bounds a request must respect; the node may tighten or widen them per deployment.

    Defaults: sides 256..2048 px (SDXL is trained at ~1024 px; smaller gives cartoonish
    results, larger exhausts memory), at most 150 steps, 8 images per request and
    4000 characters per prompt (long prompts are read in 77-token chunks as in A1111; the
    limit just stops absurd payloads). The `tiny` preset needs `min_side` 64
    or lower.
    """

    min_side: int = 256
    max_side: int = 2048
    max_steps: int = 150
    max_images: int = 8
    max_prompt_chars: int = 4000
    max_control_units: int = 3


def _clean_text(text, field, limits):
    """Normalise newlines, drop control characters and strip; check the length."""
    if not isinstance(text, str):
        raise RequestError(f'{field} must be a string, got {type(text).__name__}')
    text = text.replace('\r\n', '\n').replace('\r', '\n')
    text = _CONTROL_CHARS.sub('', text).strip()
    if len(text) > limits.max_prompt_chars:
        raise RequestError(
            f'{field} is {len(text)} characters long; at most {limits.max_prompt_chars} '
            'are allowed')
    return text


def _check_side(value, field, limits):
    """Check that an image side is a multiple of 8 within the limits."""
    check_int(value, field)
    if not limits.min_side <= value <= limits.max_side:
        raise RequestError(
            f'{field} {value} is out of range: use {limits.min_side}..{limits.max_side} pixels')
    if value % 8:
        lower = value - value % 8
        raise RequestError(
            f'{field} {value} is not a multiple of 8 (the VAE works on 8x8 pixel cells): '
            f'use {lower} or {lower + 8}')
    return value


def canonical_resize_mode(name):
    """Return the A1111 label of a resize mode name (case and spaces ignored), or None."""
    key = ' '.join(str(name).lower().split())
    if not key:
        return RESIZE_MODES[0]
    return next((mode for mode in RESIZE_MODES if mode.lower() == key), None)


def size_for_init_image(image_width, image_height, limits):
    """
    Pick the generation size for width/height 0: the init image's size, fitted into the limits.

    The aspect ratio is kept while scaling into [min_side, max_side] (down first, so a huge
    frame fits), then each side is rounded to the nearest multiple of 8 and clamped.
    """
    scale = min(1.0, limits.max_side / max(image_width, image_height))
    scale = max(scale, limits.min_side / min(image_width, image_height))

    def side(value):
        rounded = int(round(value * scale / 8.0)) * 8
        low = -(-limits.min_side // 8) * 8
        return max(low, min(limits.max_side - limits.max_side % 8, rounded))
    return side(image_width), side(image_height)


def _check_image(value, field, channels):
    """Check a uint8 image array: HxWx3 (`channels` 3) or HxW (`channels` None), not empty."""
    shape = 'HxWx3 RGB' if channels else 'HxW'
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 \
            or value.ndim != (3 if channels else 2) or (channels and value.shape[2] != 3):
        got = f'{value.dtype} {value.shape}' if isinstance(value, np.ndarray) \
            else type(value).__name__
        raise RequestError(f'{field} must be a uint8 {shape} array, got {got}')
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise RequestError(f'{field} is empty ({value.shape[1]}x{value.shape[0]} pixels)')
    return value


def _check_init_fields(request, steps):
    """Validate the img2img/inpainting fields; return the changes for `replace`."""
    strength = check_float(request.denoising_strength, 'denoising_strength')
    if not 0.0 < strength <= 1.0:
        raise RequestError(
            f'denoising_strength {strength} is out of range: use a fraction in (0, 1] '
            '(0.75 = re-noise 75% of the schedule; 1 = start from pure noise)')
    if not isinstance(request.resize_mode, str) or \
            canonical_resize_mode(request.resize_mode) is None:
        raise RequestError(f'unknown resize_mode {request.resize_mode!r}: use one of '
                           + ', '.join(m.lower() for m in RESIZE_MODES))
    resize_mode = canonical_resize_mode(request.resize_mode)
    blur = check_int(request.mask_blur, 'mask_blur')
    if not 0 <= blur <= MAX_MASK_BLUR:
        raise RequestError(f'mask_blur {blur} is out of range: use 0..{MAX_MASK_BLUR} pixels')
    padding = check_int(request.inpaint_full_res_padding, 'inpaint_full_res_padding')
    if not 0 <= padding <= MAX_INPAINT_PADDING:
        raise RequestError(f'inpaint_full_res_padding {padding} is out of range: use '
                           f'0..{MAX_INPAINT_PADDING} pixels')
    changes = {'denoising_strength': strength, 'resize_mode': resize_mode, 'mask_blur': blur,
               'inpaint_full_res_padding': padding,
               'inpaint_full_res': bool(request.inpaint_full_res)}
    init, mask = request.init_image, request.mask_image
    if init is None:
        if mask is not None:
            raise RequestError('mask_image needs an init image to inpaint (init_image or '
                               'init_image_topic)')
        return changes
    init = _check_image(init, 'init_image', 3)
    if mask is not None:
        mask = _check_image(mask, 'mask_image', None)
        if mask.shape != init.shape[:2]:
            raise RequestError(
                f'mask_image is {mask.shape[1]}x{mask.shape[0]} but the init image is '
                f'{init.shape[1]}x{init.shape[0]}: they must be the same size')
        if not (mask >= 128).any():
            raise RequestError('mask_image has no white pixel (>= 128): nothing to repaint '
                               '(white = repaint, black = keep)')
    changes.update(init_image=init, mask_image=mask)
    return changes


def _check_prompt_tags(prompt, negative):
    """Refuse malformed `<lora:...>` tags, and LoRA tags in the negative prompt."""
    try:
        extract_loras(strip_comments(prompt))
        if extract_loras(strip_comments(negative))[1]:
            raise RequestError('negative_prompt holds a <lora:...> tag: LoRAs are applied from '
                               'the prompt only; move the tag there')
    except PromptSyntaxError as error:
        raise RequestError(str(error)) from None


def _check_sampler(request, steps):
    """
    Return (sampler, schedule type label) of a request, or raise RequestError with the reason.

    A pre-1.9 A1111 name ("DPM++ 2M Karras") is split into sampler and schedule type; its
    suffix applies when schedule_type is empty or Automatic (an explicit type wins).
    """
    if not isinstance(request.scheduler, str):
        raise RequestError(f'scheduler must be a string, got {request.scheduler!r}')
    if not isinstance(request.schedule_type, str):
        raise RequestError(f'schedule_type must be a string, got {request.schedule_type!r}')
    parsed = parse_sampler_name(request.scheduler)
    if parsed is None:
        raise RequestError(unknown_sampler_message(request.scheduler))
    sampler, suffix = parsed
    schedule_type = request.schedule_type
    if ' '.join(schedule_type.split()).lower() in ('', 'automatic') and suffix:
        schedule_type = suffix
    try:
        label = schedule_problem(sampler, schedule_type, steps)
    except ScheduleError as error:
        raise RequestError(str(error)) from None
    return sampler, label


def validate_request(request, limits=None):
    """
    Check every field of `request` and return the normalised request.

    With an init image, width/height 0 become its size fitted into the limits; the resize mode
    becomes its A1111 label. Normalisation: prompts lose surrounding whitespace and control
    characters other than tab/newline, the scheduler name becomes its canonical A1111 sampler
    name and schedule_type its A1111 label (a name such as "DPM++ 2M Karras" is split),
    guidance and switch are rounded to float32 precision (7 significant digits).
    Raises `RequestError` naming the field, the bad value and what is allowed.
    """
    limits = limits or Limits()
    if not isinstance(request, GenerationRequest):
        raise RequestError(f'expected a GenerationRequest, got {type(request).__name__}')
    # An empty prompt is allowed, as in A1111 (common in img2img: "more of the same").
    prompt = _clean_text(request.prompt, 'prompt', limits)
    negative = _clean_text(request.negative_prompt, 'negative_prompt', limits)
    _check_prompt_tags(prompt, negative)
    steps = check_int(request.steps, 'steps')
    if not 1 <= steps <= limits.max_steps:
        raise RequestError(f'steps {steps} is out of range: use 1..{limits.max_steps}')
    init_changes = _check_init_fields(request, steps)
    width, height = request.width, request.height
    init = init_changes.get('init_image')
    if init is not None and (width == 0 or height == 0):
        fitted = size_for_init_image(init.shape[1], init.shape[0], limits)
        width, height = width or fitted[0], height or fitted[1]
    width = _check_side(width, 'width', limits)
    height = _check_side(height, 'height', limits)
    guidance = check_float(request.guidance_scale, 'guidance_scale')
    if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
        raise RequestError(
            f'guidance_scale {guidance} is out of range: use {MIN_GUIDANCE:g}..{MAX_GUIDANCE:g}'
            ' (1 or less turns guidance off, as few-step models want; 5-9 is usual)')
    switch = check_float(request.refiner_switch, 'refiner_switch')
    if not 0.0 < switch <= 1.0:
        raise RequestError(
            f'refiner_switch {switch} is out of range: use a fraction in (0, 1] '
            '(0.8 = base does 80% of the steps; 1 = base only)')
    num_images = check_int(request.num_images, 'num_images')
    if not 1 <= num_images <= limits.max_images:
        raise RequestError(
            f'num_images {num_images} is out of range: use 1..{limits.max_images}')
    seed = check_int(request.seed, 'seed')
    if seed != -1:
        if not 0 <= seed < SEED_LIMIT:
            raise RequestError(
                f'seed {seed} is out of range: use -1 (random) or 0..{SEED_LIMIT - 1}')
        if seed + num_images > SEED_LIMIT:
            raise RequestError(
                f'seed {seed} with num_images {num_images} runs past {SEED_LIMIT - 1} '
                f'(image i uses seed + i): use a seed of at most {SEED_LIMIT - num_images}')
    scheduler, schedule_type = _check_sampler(request, steps)
    if request.emphasis not in ('',) + EMPHASIS_MODES:
        raise RequestError(f'emphasis {request.emphasis!r} is unknown: use one of '
                           + ', '.join(EMPHASIS_MODES))
    return replace(
        request, prompt=prompt, negative_prompt=negative, width=width, height=height,
        steps=steps, guidance_scale=guidance, refiner_switch=switch, seed=seed,
        scheduler=scheduler, schedule_type=schedule_type, num_images=num_images,
        **init_changes, control=validate_control_units(request.control, limits))
