# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Shared helpers for the engine tests: a loaded tiny engine and a small valid request."""

import os

from sdxl_ros.engine.request import GenerationRequest, Limits

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


#: Two code paths meant to compute the same math (differently loaded models, other CPU
#: kernels) may round differently: they agree when no pixel differs by more than 2 levels of
#: 255 and the PSNR is at least 45 dB. Exactness stays the contract for one engine and seed.
MAX_LEVELS = 2
MIN_PSNR_DB = 45.0


def psnr_db(a, b):
    """Return the PSNR of two uint8 images in dB (inf when they are equal)."""
    import numpy as np
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def assert_images_close(a, b, max_levels=MAX_LEVELS, min_psnr=MIN_PSNR_DB):
    """Assert two uint8 images agree within the stated tolerance (same shape first)."""
    import numpy as np
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    worst = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
    psnr = psnr_db(a, b)
    assert worst <= max_levels and psnr >= min_psnr, \
        f'images differ: max {worst} levels (limit {max_levels}), {psnr:.1f} dB ' \
        f'(limit {min_psnr} dB)'


class DecodeCounter:
    """Counts forward passes of the real VAE decoder through a forward hook (no mock)."""

    def __init__(self, engine):
        """Install a forward hook on the engine's VAE decoder."""
        self.count = 0
        self.handle = engine.base_pipeline.vae.decoder.register_forward_hook(self._hook)

    def _hook(self, *_args):
        self.count += 1

    def close(self):
        """Remove the hook."""
        self.handle.remove()
