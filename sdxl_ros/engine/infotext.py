# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A1111 "infotext": the `parameters` string saved in PNGs, so an image can be re-generated.

Layout (as AUTOMATIC1111's web UI writes it)::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>     (omitted when empty)
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, ...

Values holding a comma, colon or newline are written as JSON strings, as A1111 does. As in
A1111, `Refiner:` appears only when a refiner ran (a file without it is re-generated base
only), `Lora hashes: "name: hash, ..."` lists the LoRAs of the prompt, and `Emphasis: none`
appears only when emphasis is not the default, and each ControlNet unit is one
`ControlNet N: "Module: ..., Model: name [hash], Weight: ..."` entry as the sd-webui-controlnet
extension writes it (its eleven fields, in its order). Prompts are written verbatim, emphasis and
LoRA tags included. Pure Python: no torch import.
"""

from dataclasses import replace
import json
import re

from sdxl_ros.engine.control_request import ControlUnitRequest
from sdxl_ros.engine.request import GenerationRequest, RequestError
from sdxl_ros.engine.schedule_types import canonical_schedule_type
from sdxl_ros.engine.schedulers import parse_sampler_name, SAMPLERS

#: Shown for inpainting with inpaint_full_res (A1111's "Inpaint area" radio labels).
_ONLY_MASKED = 'Only masked'

_NEGATIVE = 'Negative prompt:'
DEFAULT_EMPHASIS = 'original'
# One `key: value` pair of the parameters line; a value is a JSON string or runs to a comma.
_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _quote(value):
    """Quote a value the way A1111 does when it would break the comma-separated line."""
    value = str(value)
    if any(ch in value for ch in ',\n:"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def _unquote(value):
    """Undo `_quote`."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _number(value):
    """Write a float without a useless '.0' (7 not 7.0), otherwise exactly (repr)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def written_schedule_type(sampler, schedule_type):
    """
    Return the `Schedule type` A1111 writes: Automatic becomes the sampler's default, if any.

    A1111 1.9+ writes the type it resolved ("DPM++ 2M" + Automatic -> Karras) and keeps
    "Automatic" for samplers whose default is the model's own spacing (Euler, DDIM, ...).
    """
    parsed = parse_sampler_name(sampler)
    label = canonical_schedule_type(schedule_type) or schedule_type
    if parsed is not None:
        sampler, suffix = parsed
        if label == 'Automatic':
            label = suffix or SAMPLERS[sampler].default_type or 'Automatic'
    return label


def sampler_and_schedule_type(sampler_field, schedule_field):
    """
    Read `Sampler` and `Schedule type` as A1111 does: a pre-1.9 name carries its type.

    "DPM++ 2M Karras" without a `Schedule type` gives ('DPM++ 2M', 'Karras'); an unknown
    sampler is kept as written (validation refuses it with the reason).
    """
    parsed = parse_sampler_name(sampler_field)
    if parsed is None:
        return sampler_field, schedule_field or ''
    sampler, suffix = parsed
    if schedule_field and canonical_schedule_type(schedule_field) != 'Automatic':
        return sampler, canonical_schedule_type(schedule_field) or schedule_field
    return sampler, suffix or 'Automatic'


def format_infotext(request, seed, base_model_name='', refiner_model_name='', lora_hashes=(),
                    emphasis='original', ti_hashes=(), pad_conds=False, control_hashes=()):
    """
    Return the A1111 `parameters` text for one image of `request` generated with `seed`.

    `lora_hashes`: [(name, short hash)] of the prompt's LoRAs; `emphasis`: the mode used;
    `pad_conds`: pad_cond_uncond padded the prompt or negative (A1111's `Pad conds: True`).
    `ti_hashes`: [(name, short hash)] of the textual-inversion embeddings the prompts used.
    `control_hashes`: the short hash of each ControlNet unit's model ('' for a preset).
    """
    parsed = parse_sampler_name(request.scheduler)
    params = [
        ('Steps', request.steps),
        ('Sampler', _quote(parsed[0] if parsed else request.scheduler)),
        ('Schedule type', _quote(written_schedule_type(request.scheduler,
                                                       request.schedule_type))),
        ('CFG scale', _number(request.guidance_scale)),
        ('Seed', int(seed)),
        ('Size', f'{request.width}x{request.height}'),
    ]
    if base_model_name:
        params.append(('Model', _quote(base_model_name)))
    if refiner_model_name:
        params.append(('Refiner', _quote(refiner_model_name)))
    params.append(('Refiner switch at', _number(request.refiner_switch)))
    if request.init_image is not None:
        # A1111's img2img fields; its paste-parameters reads them back by these names.
        params.append(('Denoising strength', _number(request.denoising_strength)))
        params.append(('Resize mode', _quote(request.resize_mode or 'Just resize')))
    if request.mask_image is not None:
        params.append(('Mask blur', int(request.mask_blur)))
        if request.inpaint_full_res:
            params.append(('Inpaint area', _ONLY_MASKED))
            params.append(('Masked area padding', int(request.inpaint_full_res_padding)))
    if lora_hashes:
        params.append(('Lora hashes', _quote(', '.join(f'{n}: {h}' for n, h in lora_hashes))))
    if ti_hashes:
        params.append(('TI hashes', _quote(', '.join(
            f'{n.replace(":", "").replace(",", "")}: {h}' for n, h in ti_hashes))))
    if emphasis and emphasis != DEFAULT_EMPHASIS:
        params.append(('Emphasis', _quote(emphasis.capitalize())))
    if pad_conds:
        params.append(('Pad conds', 'True'))
    hashes = tuple(control_hashes) + ('',) * len(request.control)
    for index, unit in enumerate(request.control):
        params.append((f'ControlNet {index}', _quote(format_control_unit(
            unit, hashes[index], min(request.width, request.height)))))
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f'{_NEGATIVE} {request.negative_prompt}')
    lines.append(', '.join(f'{key}: {value}' for key, value in params))
    return '\n'.join(lines)


def _parse_params_line(line):
    """Return the key/value pairs of a parameters line, or None if it is not one."""
    pairs = {}
    position = 0
    line = line.strip()
    while position < len(line):
        match = _PARAM.match(line, position)
        if match is None or match.end() == position:
            return None
        pairs[match.group(1).strip()] = _unquote(match.group(2))
        position = match.end()
    # A1111's heuristic: a real parameters line has at least three pairs.
    return pairs if len(pairs) >= 3 else None


def parse_infotext_fields(text):
    """Split infotext into (prompt, negative_prompt, {key: value}) without interpreting it."""
    lines = text.replace('\r\n', '\n').split('\n')
    params = {}
    if lines:
        parsed = _parse_params_line(lines[-1])
        if parsed is not None:
            params = parsed
            lines = lines[:-1]
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if not in_negative and line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE):]
            line = line[1:] if line.startswith(' ') else line
        (negative_lines if in_negative else prompt_lines).append(line)
    return '\n'.join(prompt_lines).strip(), '\n'.join(negative_lines).strip(), params


def _field(params, key, convert, default):
    """Convert one parameter, raising RequestError with the key on bad text."""
    if key not in params:
        return default
    try:
        return convert(params[key])
    except ValueError:
        raise RequestError(f'infotext field {key!r} has a bad value: {params[key]!r}') from None


def _size(text):
    """Parse 'WxH'."""
    width, height = text.lower().split('x')
    return int(width), int(height)


def parse_infotext(text):
    """
    Turn an A1111 `parameters` string back into a (not yet validated) GenerationRequest.

    Missing fields take the request defaults, except that a file without `Refiner:` means
    no refiner (refiner_switch 1.0, as A1111 drops empty fields) and one without `Emphasis:`
    leaves emphasis '' (the engine's configured mode, `original` by default). `Sampler` and
    `Schedule type` are read as A1111 1.9+ reads them (older files' "DPM++ 2M Karras" is
    sampler DPM++ 2M with schedule type Karras). The init image and mask are not in the text:
    see
    `needs_init_image` / `needs_mask`.
    """
    if not isinstance(text, str) or not text.strip():
        raise RequestError('infotext is empty: nothing to re-generate')
    prompt, negative, params = parse_infotext_fields(text)
    defaults = GenerationRequest(prompt='')
    width, height = _field(params, 'Size', _size, (defaults.width, defaults.height))
    scheduler, schedule_type = sampler_and_schedule_type(
        params.get('Sampler', defaults.scheduler), params.get('Schedule type', ''))
    return replace(
        defaults,
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=_field(params, 'Steps', int, defaults.steps),
        guidance_scale=_field(params, 'CFG scale', float, defaults.guidance_scale),
        refiner_switch=(_field(params, 'Refiner switch at', float, defaults.refiner_switch)
                        if params.get('Refiner') else 1.0),
        seed=_field(params, 'Seed', int, defaults.seed),
        scheduler=scheduler,
        num_images=1,
        denoising_strength=_field(params, 'Denoising strength', float,
                                  defaults.denoising_strength),
        resize_mode=params.get('Resize mode', defaults.resize_mode),
        mask_blur=_field(params, 'Mask blur', int, defaults.mask_blur),
        inpaint_full_res=params.get('Inpaint area', '') == _ONLY_MASKED,
        inpaint_full_res_padding=_field(params, 'Masked area padding', int,
                                        defaults.inpaint_full_res_padding),
        emphasis=params.get('Emphasis', '').strip().lower(),
        schedule_type=schedule_type,
        control=parse_control_units(params),
    )


def needs_init_image(text):
    """Whether an infotext came from img2img/inpainting (it has a `Denoising strength`)."""
    return 'Denoising strength' in parse_infotext_fields(text)[2]


def needs_mask(text):
    """Whether an infotext came from inpainting (it has a `Mask blur`)."""
    return 'Mask blur' in parse_infotext_fields(text)[2]


# ---- ControlNet units, as sd-webui-controlnet writes them ----
_CONTROL_KEY = re.compile(r'ControlNet (\d+)$')
_MODEL_HASH = re.compile(r'^(.*?)\s*\[[0-9a-fA-F]+\]$')


def format_control_unit(unit, model_hash, processor_res):
    """
    Return one unit as the extension serialises it: its eleven `Field: value` pairs.

    Values as the extension writes them (floats with a decimal point, Python booleans).
    Preprocessing runs at the generation size, which the extension calls Pixel Perfect;
    Processor Res is then the short side. Threshold A/B are canny's thresholds, else -1
    (the extension's "unset").
    """
    canny = unit.module == 'canny'
    model = f'{unit.model} [{model_hash}]' if model_hash else unit.model
    fields = (('Module', unit.module), ('Model', model), ('Weight', float(unit.weight)),
              ('Resize Mode', unit.resize_mode), ('Processor Res', int(processor_res)),
              ('Threshold A', float(unit.canny_low_threshold) if canny else -1),
              ('Threshold B', float(unit.canny_high_threshold) if canny else -1),
              ('Guidance Start', float(unit.guidance_start)),
              ('Guidance End', float(unit.guidance_end)),
              ('Pixel Perfect', True), ('Control Mode', unit.control_mode))
    if unit.control_type:
        fields += (('Union Control Type', unit.control_type),)
    return ', '.join(f'{key}: {value}' for key, value in fields)


def parse_control_unit(text):
    """Turn one extension unit string back into a ControlUnitRequest (no image)."""
    values = {}
    for item in text.split(','):
        key, sep, value = item.strip().partition(': ')
        if not sep:
            raise RequestError(f'ControlNet infotext entry {item.strip()!r} is not '
                               '"Field: value"')
        values[key.strip()] = value.strip()
    model = values.get('Model', '')
    match = _MODEL_HASH.match(model)
    fields = {'Module': 'module', 'Weight': 'weight', 'Resize Mode': 'resize_mode',
              'Guidance Start': 'guidance_start', 'Guidance End': 'guidance_end',
              'Control Mode': 'control_mode', 'Union Control Type': 'control_type'}
    floats = ('weight', 'guidance_start', 'guidance_end')
    unit = {'model': match.group(1) if match else model}
    for key, name in fields.items():
        if key in values:
            unit[name] = _field(values, key, float, None) if name in floats else values[key]
    if unit.get('module') == 'canny':
        for key, name in (('Threshold A', 'canny_low_threshold'),
                          ('Threshold B', 'canny_high_threshold')):
            if key in values:
                unit[name] = _field(values, key, float, None)
    return ControlUnitRequest(**unit)


def parse_control_units(params):
    """Return the ControlUnitRequests of the `ControlNet N` entries, in N order."""
    found = sorted((int(m.group(1)), value) for key, value in params.items()
                   for m in [_CONTROL_KEY.match(key)] if m)
    return tuple(parse_control_unit(value) for _, value in found)
