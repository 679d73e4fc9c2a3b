# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Generation request: the validated, ROS-free description of what to draw.

The node turns an action goal into a `GenerationRequest` (resolving zero/empty fields to its
defaults first); `validate_request` then checks every field against `Limits` and returns the
normalised request, or raises `RequestError` with a message a user can act on.
"""

from dataclasses import dataclass, replace
import math
import re

from sdxl_ros.engine.prompt_parser import extract_loras, PromptSyntaxError
from sdxl_ros.engine.schedulers import canonical_scheduler_name, SCHEDULER_NAMES

#: Largest seed + 1: seeds are unsigned 32-bit as in A1111.
SEED_LIMIT = 2 ** 32

#: Guidance (CFG) bounds. 1.0 turns classifier-free guidance off; above 30 images burn out.
MIN_GUIDANCE = 1.0
MAX_GUIDANCE = 30.0

#: Emphasis modes (A1111's names, lower case); '' in a request = the engine's configured one.
EMPHASIS_MODES = ('original', 'none')

# Control characters other than tab and newline (C0, DEL, C1). They are removed from prompts
# rather than refused: they are invisible, come from copy-paste, and CLIP ignores them anyway.
_CONTROL_CHARS = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')


class RequestError(ValueError):
    """A request field is out of range; the message says which and what is allowed."""


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
    emphasis: str = ''


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


def _check_int(value, field):
    """Refuse non-integers (bool included) with a readable message."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f'{field} must be an integer, got {value!r}')
    return value


def _check_float(value, field):
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


def _check_side(value, field, limits):
    """Check that an image side is a multiple of 8 within the limits."""
    _check_int(value, field)
    if not limits.min_side <= value <= limits.max_side:
        raise RequestError(
            f'{field} {value} is out of range: use {limits.min_side}..{limits.max_side} pixels')
    if value % 8:
        lower = value - value % 8
        raise RequestError(
            f'{field} {value} is not a multiple of 8 (the VAE works on 8x8 pixel cells): '
            f'use {lower} or {lower + 8}')
    return value


def _check_prompt_tags(prompt, negative):
    """Refuse malformed `<lora:...>` tags, and LoRA tags in the negative prompt."""
    try:
        extract_loras(prompt)
        if extract_loras(negative)[1]:
            raise RequestError('negative_prompt holds a <lora:...> tag: LoRAs are applied from '
                               'the prompt only; move the tag there')
    except PromptSyntaxError as error:
        raise RequestError(str(error)) from None


def validate_request(request, limits=None):
    """
    Check every field of `request` and return the normalised request.

    Normalisation: prompts lose surrounding whitespace and control characters other than
    tab/newline, the scheduler name becomes its canonical spelling, guidance and switch are
    rounded to float32 precision (7 significant digits).
    Raises `RequestError` naming the field, the bad value and what is allowed.
    """
    limits = limits or Limits()
    if not isinstance(request, GenerationRequest):
        raise RequestError(f'expected a GenerationRequest, got {type(request).__name__}')
    prompt = _clean_text(request.prompt, 'prompt', limits)
    if not prompt:
        raise RequestError('prompt is empty: describe what to draw')
    negative = _clean_text(request.negative_prompt, 'negative_prompt', limits)
    _check_prompt_tags(prompt, negative)
    width = _check_side(request.width, 'width', limits)
    height = _check_side(request.height, 'height', limits)
    steps = _check_int(request.steps, 'steps')
    if not 1 <= steps <= limits.max_steps:
        raise RequestError(f'steps {steps} is out of range: use 1..{limits.max_steps}')
    guidance = _check_float(request.guidance_scale, 'guidance_scale')
    if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
        raise RequestError(
            f'guidance_scale {guidance} is out of range: use {MIN_GUIDANCE:g}..{MAX_GUIDANCE:g}'
            ' (1 turns guidance off, 5-9 is usual)')
    switch = _check_float(request.refiner_switch, 'refiner_switch')
    if not 0.0 < switch <= 1.0:
        raise RequestError(
            f'refiner_switch {switch} is out of range: use a fraction in (0, 1] '
            '(0.8 = base does 80% of the steps; 1 = base only)')
    num_images = _check_int(request.num_images, 'num_images')
    if not 1 <= num_images <= limits.max_images:
        raise RequestError(
            f'num_images {num_images} is out of range: use 1..{limits.max_images}')
    seed = _check_int(request.seed, 'seed')
    if seed != -1:
        if not 0 <= seed < SEED_LIMIT:
            raise RequestError(
                f'seed {seed} is out of range: use -1 (random) or 0..{SEED_LIMIT - 1}')
        if seed + num_images > SEED_LIMIT:
            raise RequestError(
                f'seed {seed} with num_images {num_images} runs past {SEED_LIMIT - 1} '
                f'(image i uses seed + i): use a seed of at most {SEED_LIMIT - num_images}')
    if not isinstance(request.scheduler, str):
        raise RequestError(f'scheduler must be a string, got {request.scheduler!r}')
    scheduler = canonical_scheduler_name(request.scheduler)
    if scheduler is None:
        raise RequestError(
            f'unknown scheduler {request.scheduler!r}: use one of '
            + ', '.join(SCHEDULER_NAMES))
    if request.emphasis not in ('',) + EMPHASIS_MODES:
        raise RequestError(f'emphasis {request.emphasis!r} is unknown: use one of '
                           + ', '.join(EMPHASIS_MODES))
    return replace(
        request, prompt=prompt, negative_prompt=negative, width=width, height=height,
        steps=steps, guidance_scale=guidance, refiner_switch=switch, seed=seed,
        scheduler=scheduler, num_images=num_images)
