# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The node's parameters: one table (name, default, description, range) and the values' class.

The node declares every entry of `PARAMETERS` with a descriptor built from it, reads the values
once into `NodeParameters` (a dataclass generated from the table), and checks changes with
`check_parameters` before accepting them. Whether a change reloads the models is the engine's
rule (`engine.config.needs_reload`). No rclpy here, so the table and the checks are tested
without ROS.
"""

from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Optional

from sdxl_ros.engine.config import (AccelerationConfig, DEVICES, DTYPES, EngineConfig,
                                    MEMORY_MODES, needs_reload, parse_size, parse_variant,
                                    PRECISIONS, STANDARD_SIZES)
from sdxl_ros.engine.devices import parse_devices
from sdxl_ros.engine.request import (DEFAULT_DENOISING_STRENGTH, EMPHASIS_MODES, Limits,
                                     MAX_GUIDANCE, MIN_GUIDANCE)
from sdxl_ros.engine.schedule_types import canonical_schedule_type, SCHEDULE_TYPES
from sdxl_ros.engine.schedulers import canonical_scheduler_name, SCHEDULER_NAMES


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its default (which fixes its type), what it does and its bounds."""

    name: str
    default: object
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: int = 0
    choices: tuple = ()
    read_only: bool = False


PARAMETERS = (
    ParameterSpec('autostart', True,
                  'Configure and activate at start-up, so ros2 run and the launch file '
                  'just work; false leaves the node unconfigured for a lifecycle manager.',
                  read_only=True),
    ParameterSpec('base_model', 'sd_xl_base_1.0.safetensors',
                  'SDXL base model: a single-file checkpoint, a diffusers folder (relative '
                  'names are looked up in model_dir) or a preset (tiny, sdxl-random). '
                  'Changing it at run time reloads the models before the next goal.'),
    ParameterSpec('refiner_model', 'sd_xl_refiner_1.0.safetensors',
                  'SDXL refiner model, as base_model; empty = base only. Changing it at run '
                  'time reloads the models before the next goal.'),
    ParameterSpec('model_dir', '',
                  'Directory where model checkpoints and diffusers folders are looked for '
                  '(and listed by ~/list_models).'),
    ParameterSpec('tokenizer_dir', '',
                  'Folder with CLIP tokenizer files for single-file checkpoints (vocab.json + '
                  'merges.txt, or tokenizer/ and tokenizer_2/); empty = bundled/installed.'),
    ParameterSpec('lora_dir', '',
                  'Folder with the LoRA files that <lora:NAME:WEIGHT> prompt tags name '
                  '(NAME.safetensors, also in direct subfolders; listed by ~/list_models); '
                  'empty = goals with LoRA tags are refused.'),
    ParameterSpec('emphasis', 'original',
                  'How prompts read (word:1.2), [word] and BREAK: original (the A1111 default '
                  'emphasis) or none (literal text). Long prompts are chunked either way.',
                  choices=EMPHASIS_MODES),
    ParameterSpec('device', 'auto', 'Where to run: auto (CUDA if present), cuda or cpu.',
                  choices=DEVICES),
    ParameterSpec('dtype', 'auto', 'Weight precision: auto (float16 on CUDA, float32 on CPU), '
                  'float16, bfloat16 or float32.', choices=DTYPES),
    ParameterSpec('memory_mode', 'resident',
                  'resident (fastest, ~13 GB), model_offload (one UNet on the GPU at a time) '
                  'or sequential_offload (least memory, slowest).', choices=MEMORY_MODES),
    ParameterSpec('vae_tiling', False, 'Decode the image in tiles to save memory at large sizes.'),
    ParameterSpec('fast_path', True,
                  'On CUDA, compile the UNets and serve them from CUDA graphs, prepared in the '
                  'background after serving starts (prepare_sizes; compiled code cached '
                  'across restarts) for ~2x faster images than plain diffusers with the same '
                  'pictures; where it cannot run the node logs why and serves plain diffusers. '
                  'false = plain diffusers. No effect on CPU or with offloading.'),
    ParameterSpec('precision', 'fp16',
                  'fp16: the same pictures as plain diffusers. fp8 (opt-in, needs fast_path, '
                  'torchao and a GPU of compute capability >= 8.9; models in bfloat16): FP8 '
                  'matmuls in both UNets, other pictures (speed and quality not measured yet). '
                  'Refused with the reason where it cannot run.', choices=PRECISIONS),
    ParameterSpec('prepare_sizes', ','.join(f'{w}x{h}' for w, h in STANDARD_SIZES),
                  'Comma-separated WIDTHxHEIGHT sizes the fast path compiles and captures in '
                  'the background after the node starts serving (goals first). A goal at a '
                  'size not prepared yet runs eagerly (about 2x slower) and its size is '
                  'prepared afterwards; empty = prepare only what goals meet.'),
    ParameterSpec('prepare_variants', 'cfg',
                  'Comma-separated UNet signatures prepared for each of prepare_sizes: cfg '
                  '(guidance scale > 1), nocfg (guidance scale <= 1, e.g. few-step models), '
                  'either with :TOKENS for long prompts (77 per chunk: cfg:154, nocfg:231). '
                  'Each costs one compile and graph per size and UNet; a signature not listed '
                  'is prepared after the first goal that meets it. Timesteps and schedulers do '
                  "not change a signature; img2img at a size uses that size's."),
    ParameterSpec('compile_cache_dir', '',
                  "Folder for the fast path's compiled code, kept across restarts; empty = "
                  '~/.cache/sdxl_ros/torchinductor.'),
    ParameterSpec('default_width', 1024, 'Image width for goals with width 0 (multiple of 8).',
                  minimum=8, maximum=8192, step=8),
    ParameterSpec('default_height', 1024,
                  'Image height for goals with height 0 (multiple of 8).',
                  minimum=8, maximum=8192, step=8),
    ParameterSpec('default_steps', 30, 'Denoising steps for goals with steps 0.',
                  minimum=1, maximum=1000),
    ParameterSpec('default_guidance_scale', 7.0,
                  'CFG scale for goals with guidance_scale 0 (1.0 disables CFG).',
                  minimum=MIN_GUIDANCE, maximum=MAX_GUIDANCE),
    ParameterSpec('default_refiner_switch', 0.8,
                  'Fraction of the steps done by the base for goals with refiner_switch 0 '
                  '(1.0 = base only).', minimum=0.0, maximum=1.0),
    ParameterSpec('default_scheduler', 'DPM++ 2M Karras',
                  'Sampler for goals with an empty scheduler: ' + ', '.join(SCHEDULER_NAMES)
                  + ' (older names with a schedule type, "DPM++ 2M Karras", are accepted).'),
    ParameterSpec('default_negative_prompt', '',
                  'Negative prompt for goals with an empty negative_prompt.'),
    ParameterSpec('default_denoising_strength', DEFAULT_DENOISING_STRENGTH,
                  'img2img/inpainting: fraction of the schedule re-noised for goals with '
                  'denoising_strength 0 (A1111 meaning and default).',
                  minimum=0.01, maximum=1.0),
    ParameterSpec('init_image_timeout_sec', 5.0,
                  'Seconds a goal with init_image_topic waits for the next frame on that '
                  'topic once it starts running; none in time = refused with the reason.',
                  minimum=0.1, maximum=600.0),
    ParameterSpec('min_side', 256, 'Smallest width/height a goal may ask for (the tiny '
                  'preset needs 64 or less).', minimum=8, maximum=8192, step=8),
    ParameterSpec('max_side', 2048, 'Largest width/height a goal may ask for.',
                  minimum=8, maximum=8192, step=8),
    ParameterSpec('max_steps', 150, 'Most denoising steps a goal may ask for.',
                  minimum=1, maximum=1000),
    ParameterSpec('max_images', 8, 'Most images one goal may ask for.', minimum=1, maximum=64),
    ParameterSpec('max_queue', 4,
                  'Goals that may wait behind the running one; more are refused with a '
                  'reason. Read at start-up only.', minimum=0, maximum=64, read_only=True),
    ParameterSpec('preview_every_n_steps', 5,
                  'Publish a small preview on ~/preview every N denoising steps (0 = never).',
                  minimum=0, maximum=1000),
    ParameterSpec('frame_id', 'sdxl', 'frame_id of the header of published images.'),
    ParameterSpec('compressed_format', 'png',
                  'Codec of ~/image/compressed and ~/preview/compressed '
                  '(sensor_msgs/CompressedImage, image_transport format): png (lossless), '
                  'jpeg, or none (publish no compressed images).',
                  choices=('png', 'jpeg', 'none')),
    ParameterSpec('jpeg_quality', 95, 'JPEG quality of the compressed images (1-100).',
                  minimum=1, maximum=100),
    ParameterSpec('output_dir', '',
                  'If set, also save every result as PNG with its infotext here; the node '
                  'chooses the file names.'),
    ParameterSpec('pad_cond_uncond', False,
                  'A1111 "Pad prompt/negative prompt": pad the shorter of prompt and negative '
                  'prompt with empty chunks. false (as A1111) runs each at its own length.'),
    ParameterSpec('prompt_comments', True,
                  'Strip # comments (to the end of the line) from prompts, as A1111 does.'),
    ParameterSpec('a1111_img2img_steps', True,
                  'img2img runs int(min(strength, 0.999) x steps) + 1 steps as A1111; '
                  "false = diffusers' int(steps x strength)."),
    ParameterSpec('embeddings_dir', '',
                  'Folder with textual-inversion embeddings (SDXL .safetensors with clip_l and '
                  'clip_g tensors, at any depth; listed by ~/list_models): a word of the prompt '
                  'or negative prompt equal to a file name without extension uses it; '
                  'empty = none.'),
    ParameterSpec('devices', (),
                  'Run one engine per device and give each goal to the next free one, e.g. '
                  '[cuda:0, cuda:1] (cpu:0, cpu:1, ... are engines on the CPU); each device '
                  'is checked (exists, models fit) at configure. Unset = one engine on '
                  'device. Read at start-up only.', read_only=True),
    ParameterSpec('default_schedule_type', '',
                  'A1111 schedule type for goals with an empty schedule_type: '
                  + ', '.join(SCHEDULE_TYPES) + " (empty = Automatic, the sampler's own "
                  'default; a "DPM++ 2M Karras"-style scheduler name sets it too).'),
    ParameterSpec('controlnet_dir', '',
                  'Folder with the ControlNets that goals name in control[].model (diffusers '
                  'folders or .safetensors files; listed by ~/list_models); empty = model_dir '
                  'only. The presets tiny and tiny-union need no file.'),
    ParameterSpec('max_control_units', 3,
                  'Most ControlNet units one goal may use (A1111 shows 3 by default); each '
                  'unit adds a ControlNet pass per controlled step.', minimum=0, maximum=16),
)

#: Test hooks: declared only when the process runs under the test harness (node_process.py
#: reads its environment), never part of the parameters a user sees or sets.
TEST_HOOKS = (
    ParameterSpec('fault_oom_at_step', 0,
                  'Test hook: raise an out-of-memory error at this step of every image '
                  '(0 = off). Reloads the models when changed.', minimum=0, maximum=1000),
    ParameterSpec('fault_device', '',
                  'Test hook: goals on this device (a name from devices) fail at their second '
                  'step as when a GPU is lost (empty = off).'),
)


class _ParameterValues:
    """The behaviour of NodeParameters; its fields come from PARAMETERS and TEST_HOOKS."""

    @classmethod
    def defaults(cls):
        """Return the values of the table, as the node starts without overrides."""
        return cls()

    def updated(self, changes):
        """Return a copy with `changes` ({name: value}) applied; unknown names are ignored."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in names})

    def limits(self):
        """Return the request limits goals are validated against."""
        return Limits(min_side=self.min_side, max_side=self.max_side,
                      max_steps=self.max_steps, max_images=self.max_images,
                      max_control_units=self.max_control_units)

    def engine_config(self):
        """Return the engine configuration these values describe."""
        return EngineConfig(
            base_model=self.base_model, refiner_model=self.refiner_model,
            model_dir=self.model_dir, tokenizer_dir=self.tokenizer_dir, device=self.device,
            dtype=self.dtype, memory_mode=self.memory_mode, vae_tiling=self.vae_tiling,
            fast_path=self.fast_path, acceleration=self.acceleration(), limits=self.limits(),
            fault_oom_at_step=self.fault_oom_at_step, emphasis=self.emphasis,
            lora_dir=self.lora_dir, embeddings_dir=self.embeddings_dir,
            pad_cond_uncond=self.pad_cond_uncond, prompt_comments=self.prompt_comments,
            a1111_img2img_steps=self.a1111_img2img_steps, controlnet_dir=self.controlnet_dir)

    def sizes_to_prepare(self):
        """Return prepare_sizes as (width, height) pairs (ValueError names a bad entry)."""
        return tuple(parse_size(item) for item in self.prepare_sizes.split(',') if item.strip())

    def variants_to_prepare(self):
        """Return prepare_variants as (batch, tokens) pairs (ValueError names a bad entry)."""
        return tuple(parse_variant(item) for item in self.prepare_variants.split(',')
                     if item.strip())

    def acceleration(self):
        """Return the fast path's configuration these values describe."""
        return AccelerationConfig(precision=self.precision,
                                  prepare_sizes=self.sizes_to_prepare(),
                                  prepare_variants=self.variants_to_prepare(),
                                  compile_cache_dir=self.compile_cache_dir)

    def device_names(self):
        """
        Return the devices the node runs engines on: `devices` (canonical), or [device].

        Never empty: with no valid name in `devices` it is [device] (configure then refuses
        the list with the reason, and the node keeps running unconfigured).
        """
        return (parse_devices(self.devices)[0] if self.devices else []) or [self.device]

    def reloads_models(self, new):
        """Whether going from these values to `new` loads the models again (engine's rule)."""
        return needs_reload(self.engine_config(), new.engine_config())


def _field(spec):
    """Return the dataclass field of a table entry: type, default, the entry as metadata."""
    return (spec.name, type(spec.default), field(default=spec.default, metadata={'spec': spec}))


#: The parameter values the node works with, one field per entry of PARAMETERS and TEST_HOOKS
#: (built from the tables, so a parameter is written down once). Frozen: a change makes a
#: new object (`updated`), so a goal keeps the values it started with.
NodeParameters = make_dataclass(
    'NodeParameters', [_field(spec) for spec in PARAMETERS + TEST_HOOKS],
    bases=(_ParameterValues,), frozen=True,
    namespace={'__doc__': 'The parameter values the node works with (see PARAMETERS).',
               '__module__': __name__})


def check_parameters(params, check_models=True):
    """
    Return the problems of a set of values as readable strings (empty list: all fine).

    Ranges and types are enforced by the descriptors; this checks what they cannot: choices,
    the scheduler name, min_side <= max_side and (with `check_models`) that the models can
    be found.
    """
    problems = []
    for spec in PARAMETERS:
        value = getattr(params, spec.name)
        if spec.choices and value not in spec.choices:
            problems.append(f'{spec.name} {value!r} is not one of: ' + ', '.join(spec.choices))
    if canonical_scheduler_name(params.default_scheduler) is None:
        problems.append(f'default_scheduler {params.default_scheduler!r} is unknown: use one '
                        'of ' + ', '.join(SCHEDULER_NAMES))
    if canonical_schedule_type(params.default_schedule_type) is None:
        problems.append(f'default_schedule_type {params.default_schedule_type!r} is unknown: '
                        'use one of ' + ', '.join(SCHEDULE_TYPES))
    if params.min_side > params.max_side:
        problems.append(f'min_side {params.min_side} is larger than max_side {params.max_side}')
    try:
        for width, height in params.sizes_to_prepare():
            if width % 8 or height % 8:
                problems.append(f'prepare_sizes entry {width}x{height} is not a multiple of 8')
    except ValueError as error:
        problems.append(f'prepare_sizes: {error}')
    try:
        if not params.variants_to_prepare():
            problems.append('prepare_variants is empty: name at least one (e.g. cfg)')
    except ValueError as error:
        problems.append(f'prepare_variants: {error}')
    problems += parse_devices(params.devices)[1]
    if check_models:
        problems.extend(_model_problems(params))
    return problems


def _model_problems(params):
    """Problems finding the configured base and refiner models."""
    from sdxl_ros.engine.errors import ModelLoadError
    from sdxl_ros.engine.model_files import resolve_source
    problems = []
    for role, name in (('base', params.base_model), ('refiner', params.refiner_model)):
        if role == 'base' and not name:
            problems.append('base_model is empty: name a checkpoint, folder or preset')
            continue
        if name:
            try:
                resolve_source(name, params.model_dir, role)
            except ModelLoadError as error:
                problems.append(str(error))
    return problems
