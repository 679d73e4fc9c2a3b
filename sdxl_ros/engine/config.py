# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Engine configuration: which models, where, on what device, and how to use memory."""

from dataclasses import dataclass, field

from sdxl_ros.engine.request import EMPHASIS_MODES, Limits

DEVICES = ('auto', 'cuda', 'cpu')
DTYPES = ('auto', 'float16', 'bfloat16', 'float32')
MEMORY_MODES = ('resident', 'model_offload', 'sequential_offload')


@dataclass
class EngineConfig:
    """
    Settings read once when the engine is created (the node fills it from parameters).

    base_model / refiner_model: a preset name (`tiny`, `sdxl-random`), a single-file
    checkpoint (`.safetensors`/`.ckpt`) or a diffusers folder; relative paths are resolved
    against `model_dir`. An empty refiner_model means base only.
    tokenizer_dir: a folder holding CLIP tokenizer files (vocab.json + merges.txt, or
    `tokenizer/` and `tokenizer_2/` subfolders) for single-file checkpoints.
    emphasis: how `(word:1.2)` / `[word]` / BREAK are read: `original` (A1111's default
    emphasis) or `none` (literal text); a request may override it.
    lora_dir: folder with the LoRA files `<lora:NAME:WEIGHT>` tags name (NAME.safetensors);
    empty = no LoRAs.
    fault_oom_at_step: test hook; at this 1-based step of every image the engine raises an
    out-of-memory error as torch would (0 = off).
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
    emphasis: str = 'original'
    lora_dir: str = ''
    limits: Limits = field(default_factory=Limits)
    fault_oom_at_step: int = 0

    def __post_init__(self):
        """Refuse unknown choices early, with the allowed values."""
        for name, value, allowed in (('device', self.device, DEVICES),
                                     ('dtype', self.dtype, DTYPES),
                                     ('memory_mode', self.memory_mode, MEMORY_MODES),
                                     ('emphasis', self.emphasis, EMPHASIS_MODES)):
            if value not in allowed:
                raise ValueError(f'{name} {value!r} is not one of: ' + ', '.join(allowed))
