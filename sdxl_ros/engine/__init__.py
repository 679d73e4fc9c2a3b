# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
SDXL base + refiner generation engine (no ROS inside).

Contract used by the node::

    engine = SdxlEngine(EngineConfig(base_model='tiny', refiner_model='tiny'))
    engine.load()                       # ModelLoadError says what to provide
    result = engine.generate(request, on_progress=cb, cancel=event, preview_every_n_steps=5)

`generate` validates the request (RequestError), resolves seed -1 to a random seed, renders
image i with seed + i, reports Progress at least once per denoising step and once on entering
'decoding', stops at once without decoding when `cancel` is set (GenerationCancelled), and
turns torch OOM into OutOfMemory after freeing caches.

Rooms: this top level is torch-free (request, config, errors, result, progress, infotext,
png_io, prompt_parser, step_plan, schedulers, presets, model_files, lora_files, engine_slot);
the ROS layer imports only these (test/test_layers.py pins it). The torch side lives in
`generation/` (SdxlEngine and its stages), `models/` (loading), `prompting/` (chunking,
encoding, LoRA application) and `fast_path/` (compile, CUDA graphs, preparation); each of
those modules imports torch at its top. `SdxlEngine` is importable from here, loaded on
first access.
"""

from sdxl_ros.engine.config import AccelerationConfig, EngineConfig
from sdxl_ros.engine.errors import (EngineError, GenerationCancelled, ModelLoadError,
                                    OutOfMemory)
from sdxl_ros.engine.library_logs import quiet_library_logs
from sdxl_ros.engine.presets import PRESETS
from sdxl_ros.engine.progress import Progress
from sdxl_ros.engine.result import GenerationResult

__all__ = [
    'AccelerationConfig', 'EngineConfig', 'EngineError', 'GenerationCancelled',
    'GenerationResult', 'ModelLoadError', 'OutOfMemory', 'PRESETS', 'Progress', 'SdxlEngine',
]

quiet_library_logs()


def __getattr__(name):
    """Import the torch side only when SdxlEngine is asked for (PEP 562)."""
    if name == 'SdxlEngine':
        from sdxl_ros.engine.torch_features import check_libraries
        check_libraries()   # a lock that does not suit this torch: one line, not a traceback
        from sdxl_ros.engine.generation.engine import SdxlEngine
        return SdxlEngine
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
