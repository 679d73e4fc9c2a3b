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
turns torch OOM into OutOfMemory after freeing caches. Heavy imports (torch, diffusers) happen
only when models are loaded.
"""

from sdxl_ros.engine.config import AccelerationConfig, EngineConfig
from sdxl_ros.engine.errors import (EngineError, GenerationCancelled, ModelLoadError,
                                    OutOfMemory)
from sdxl_ros.engine.presets import PRESETS
from sdxl_ros.engine.progress import Progress
from sdxl_ros.engine.result import GenerationResult
from sdxl_ros.engine.sdxl_engine import SdxlEngine

__all__ = [
    'AccelerationConfig', 'EngineConfig', 'EngineError', 'GenerationCancelled',
    'GenerationResult', 'ModelLoadError', 'OutOfMemory', 'PRESETS', 'Progress', 'SdxlEngine',
]
