# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Engine configuration: which models, where, on what device, and how to use memory."""

from dataclasses import dataclass, field, replace
import re
from typing import Callable, Tuple, Union

from sdxl_ros.engine.request import EMPHASIS_MODES, Limits

DEVICES = ('auto', 'cuda', 'cpu')
DTYPES = ('auto', 'float16', 'bfloat16', 'float32')
MEMORY_MODES = ('resident', 'model_offload', 'sequential_offload')
FAULT_POINTS = ('', 'apply', 'prepare', 'goal')
PRECISIONS = ('fp16', 'fp8')
COMPILE_KINDS = ('regional', 'none')
SDPA_CHOICES = ('cudnn', 'flash', 'default')
#: SDXL's standard sizes (width, height): the fast path prepares these in the background.
STANDARD_SIZES = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
                  (1344, 768), (768, 1344), (1536, 640), (640, 1536))
#: Block classes compiled one by one ("regional compilation"), as measured best.
REGION_CLASSES = ('ResnetBlock2D', 'Transformer2DModel', 'Downsample2D', 'Upsample2D')


def parse_size(text):
    """Turn 'WxH' into (W, H); raise ValueError with the expected form otherwise."""
    parts = str(text).lower().replace(' ', '').split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f'size {text!r} is not WIDTHxHEIGHT (e.g. 1024x1024)')
    return int(parts[0]), int(parts[1])


#: The UNet signature of a CFG goal with a one-chunk prompt: (batch, tokens).
DEFAULT_VARIANTS = ((2, 77),)
#: Longest prompt a variant may name, in 77-token chunks.
MAX_VARIANT_CHUNKS = 8


def parse_variant(text):
    """
    Turn 'cfg', 'nocfg', 'cfg:154' or 'nocfg:231' into the UNet's (batch, tokens).

    cfg (guidance scale > 1) runs the UNet on a batch of 2 (negative and positive prompt),
    nocfg (guidance scale <= 1) on 1; tokens (77 unless given) is 77 per prompt chunk.
    """
    kind, _, tokens = str(text).lower().replace(' ', '').partition(':')
    batches = {'cfg': 2, 'nocfg': 1}
    if kind not in batches or (tokens and not tokens.isdigit()):
        raise ValueError(f'variant {text!r} is not cfg or nocfg, optionally :TOKENS '
                         '(e.g. cfg, nocfg, cfg:154, nocfg:231)')
    count = int(tokens or 77)
    if count % 77 or not 77 <= count <= 77 * MAX_VARIANT_CHUNKS:
        raise ValueError(f'variant {text!r}: tokens must be 77 per prompt chunk, 77 to '
                         f'{77 * MAX_VARIANT_CHUNKS} (77, 154, 231, ...)')
    return batches[kind], count


def variant_name(batch, tokens):
    """Return the parameter's spelling of a (batch, tokens) variant (parse_variant's inverse)."""
    name = 'cfg' if batch == 2 else 'nocfg'
    return name if tokens == 77 else f'{name}:{tokens}'


@dataclass
class AccelerationConfig:
    """
    How the GPU fast path works (used only when EngineConfig.fast_path applies).

    The defaults are the measured best on an H200 (bench/NOTES.md); the node exposes only
    precision, prepare_sizes, prepare_variants and compile_cache_dir, the rest are for
    benchmarks and tests.
    precision: fp16 (same pictures as plain diffusers) or fp8 (opt-in: FP8 matmuls in both
    UNets through torchao, compute capability >= 8.9; other pictures within a few dB).
    prepare_sizes: (width, height) pairs compiled and graph-captured in the background after
    load; a goal at a size not (yet) prepared runs eagerly and is prepared afterwards.
    prepare_variants: the UNet signatures prepared for each of prepare_sizes, as (batch,
    tokens) pairs or parse_variant's strings ('cfg', 'nocfg', 'cfg:154'); the default is a
    CFG goal with a one-chunk prompt. Other signatures are prepared once a goal meets them.
    compile_cache_dir: Inductor's persistent cache ('' = ~/.cache/sdxl_ros/torchinductor);
    it sets TORCHINDUCTOR_CACHE_DIR, the only way Inductor takes one.
    background_prepare: False prepares nothing by itself (benchmarks call
    SdxlEngine.prepare_fast_path and wait).
    compile_backend: torch.compile backend (a name or a callable; tests pass one that raises).
    fault_at: test hook: raise inside 'apply', 'prepare' or a goal's UNet call ('goal').
    """

    precision: str = 'fp16'
    prepare_sizes: Tuple[Tuple[int, int], ...] = STANDARD_SIZES
    prepare_variants: Tuple[Tuple[int, int], ...] = DEFAULT_VARIANTS
    compile_cache_dir: str = ''
    background_prepare: bool = True
    compile: str = 'regional'  # noqa: A003 - the torch.compile choice, by its name
    compile_mode: str = 'default'
    compile_regions: Tuple[str, ...] = REGION_CLASSES
    compile_backend: Union[str, Callable] = 'inductor'
    compile_text_encoders: bool = False
    cuda_graphs: bool = True
    graph_text_encoders: bool = True
    sdpa_backend: str = 'cudnn'
    cudnn_benchmark: bool = False
    fault_at: str = ''
    simulate_cuda: bool = False  # test hook: decide and apply as if a CPU were a CUDA GPU

    def __post_init__(self):
        """Refuse unknown choices early, with the allowed values; normalise the sizes."""
        for name, value, allowed in (('precision', self.precision, PRECISIONS),
                                     ('compile', self.compile, COMPILE_KINDS),
                                     ('sdpa_backend', self.sdpa_backend, SDPA_CHOICES),
                                     ('fault_at', self.fault_at, FAULT_POINTS)):
            if value not in allowed:
                raise ValueError(f'{name} {value!r} is not one of: ' + ', '.join(allowed))
        self.prepare_sizes = tuple(
            parse_size(s) if isinstance(s, str) else (int(s[0]), int(s[1]))
            for s in self.prepare_sizes)
        variants = (parse_variant(v) if isinstance(v, str) else (int(v[0]), int(v[1]))
                    for v in self.prepare_variants)
        self.prepare_variants = tuple(dict.fromkeys(variants))  # once each, in order
        self.compile_regions = tuple(self.compile_regions)


@dataclass
class EngineConfig:
    """
    Settings read once when the engine is created (the node fills it from parameters).

    base_model / refiner_model: a preset name (`tiny`, `sdxl-random`), a single-file
    checkpoint (`.safetensors`/`.ckpt`) or a diffusers folder; relative paths are resolved
    against `model_dir`. An empty refiner_model means base only.
    device: auto, cuda, cpu, or cuda:N (one GPU of several).
    tokenizer_dir: a folder holding CLIP tokenizer files (vocab.json + merges.txt, or
    `tokenizer/` and `tokenizer_2/` subfolders) for single-file checkpoints.
    fast_path: the GPU fast path (engine/fast_path/accelerator.py), tuned by `acceleration`.
    emphasis: how `(word:1.2)` / `[word]` / BREAK are read: `original` (A1111's default
    emphasis) or `none` (literal text); a request may override it.
    lora_dir: folder with the LoRA files `<lora:NAME:WEIGHT>` tags name (NAME.safetensors);
    empty = no LoRAs.
    controlnet_dir: folder with the ControlNets goals name (before model_dir); empty =
    model_dir only.
    fault_oom_at_step: test hook; at this 1-based step of every image the engine raises an
    out-of-memory error as torch would (0 = off).
    pad_cond_uncond: A1111's "Pad prompt/negative prompt" option (off there by default): pad
    the shorter of prompt and negative prompt with empty chunks; off runs each at its own
    length (two UNet passes per step when their chunk counts differ).
    prompt_comments: strip `#` comments from prompts (A1111's "Enable comments", on there).
    a1111_img2img_steps: img2img runs int(min(strength, 0.999) x steps) + 1 steps as A1111's
    k-diffusion samplers do; false keeps diffusers' int(steps x strength).
    embeddings_dir: folder with textual-inversion embeddings (NAME.safetensors with clip_l and
    clip_g tensors) that prompts use by NAME; empty = none.
    """

    base_model: str = 'tiny'
    refiner_model: str = 'tiny'
    model_dir: str = ''
    tokenizer_dir: str = ''
    device: str = 'auto'
    dtype: str = 'auto'
    memory_mode: str = 'resident'
    vae_tiling: bool = False
    fast_path: bool = True
    acceleration: AccelerationConfig = field(default_factory=AccelerationConfig)
    emphasis: str = 'original'
    lora_dir: str = ''
    limits: Limits = field(default_factory=Limits)
    fault_oom_at_step: int = 0
    pad_cond_uncond: bool = False
    prompt_comments: bool = True
    a1111_img2img_steps: bool = True
    embeddings_dir: str = ''
    controlnet_dir: str = ''

    def __post_init__(self):
        """Refuse unknown choices early, with the allowed values."""
        if re.fullmatch(r'cuda:\d+', self.device):  # one of several GPUs (engine/devices.py)
            allowed_devices = (self.device,)
        else:
            allowed_devices = DEVICES
        for name, value, allowed in (('device', self.device, allowed_devices),
                                     ('dtype', self.dtype, DTYPES),
                                     ('memory_mode', self.memory_mode, MEMORY_MODES),
                                     ('emphasis', self.emphasis, EMPHASIS_MODES)):
            if value not in allowed:
                raise ValueError(f'{name} {value!r} is not one of: ' + ', '.join(allowed))


def load_key(config):
    """Return the part of an EngineConfig that fixes the loaded models (limits etc. do not)."""
    return replace(config, limits=Limits(), emphasis='original', lora_dir='',
                   pad_cond_uncond=False, prompt_comments=True, a1111_img2img_steps=True,
                   embeddings_dir='', controlnet_dir='')


def needs_reload(old, new):
    """Whether going from EngineConfig `old` to `new` means loading the models again."""
    return load_key(old) != load_key(new)
