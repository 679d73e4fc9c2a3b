# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Shared helpers for the engine tests: a loaded tiny engine and a small valid request."""

import os

from sdxl_ros.request import GenerationRequest, Limits

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

TINY_LIMITS = Limits(min_side=64)


def tiny_request(**fields):
    """Return a valid request for the tiny preset: 64x64, few steps, fixed seed."""
    values = {'prompt': 'a robot', 'width': 64, 'height': 64, 'steps': 6, 'seed': 7,
              'scheduler': 'Euler', 'guidance_scale': 7.0, 'refiner_switch': 0.8}
    values.update(fields)
    return GenerationRequest(**values)


def tiny_engine(**config):
    """Return a loaded SdxlEngine on the tiny preset, on the CPU."""
    from sdxl_ros.engine import EngineConfig, SdxlEngine
    values = {'base_model': 'tiny', 'refiner_model': 'tiny', 'device': 'cpu',
              'limits': TINY_LIMITS}
    values.update(config)
    engine = SdxlEngine(EngineConfig(**values))
    engine.load()
    return engine
