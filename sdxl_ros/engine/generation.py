# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
One image: base denoising, then refiner denoising, then our own VAE decode.

diffusers' `interrupt` skips the remaining steps but would still decode; so both pipelines
run with `output_type='latent'` and the engine decodes only when not cancelled.
"""

from dataclasses import dataclass, field
from typing import List

import numpy as np

from sdxl_ros.engine.errors import EngineError
from sdxl_ros.schedulers import make_scheduler


@dataclass
class GenerationResult:
    """Images (uint8 HxWx3 RGB), the seed and infotext of each, and the total time."""

    images: List[np.ndarray] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)
    infotexts: List[str] = field(default_factory=list)
    elapsed_sec: float = 0.0


@dataclass(frozen=True)
class StepPlan:
    """How many denoising-loop iterations base and refiner run for one image."""

    base_steps: int
    refiner_steps: int

    @property
    def total(self):
        """Return the iterations of base and refiner together (what progress counts)."""
        return self.base_steps + self.refiner_steps

    @property
    def uses_refiner(self):
        """Whether the refiner runs at all."""
        return self.refiner_steps > 0


def plan_steps(scheduler_name, scheduler_config, steps, switch, has_refiner):
    """
    Predict the base/refiner split exactly as diffusers will cut the schedule.

    The base keeps timesteps >= the cutoff, the refiner those below it (second-order samplers
    count each model evaluation, as the pipelines' loops do). If either side would get no
    step, the base runs the whole schedule alone.
    """
    base = make_scheduler(scheduler_name, scheduler_config)
    base.set_timesteps(steps)
    timesteps = [int(t) for t in base.timesteps]
    if not has_refiner or switch >= 1.0:
        return StepPlan(len(timesteps), 0)
    train_steps = base.config.num_train_timesteps
    cutoff = int(round(train_steps - switch * train_steps))
    base_steps = sum(1 for t in timesteps if t >= cutoff)
    refiner = make_scheduler(scheduler_name, scheduler_config)
    refiner.set_timesteps(steps)
    refiner_steps = int(sum(1 for t in refiner.timesteps if int(t) < cutoff))
    if refiner.order == 2 and refiner_steps % 2 == 0:
        refiner_steps += 1
    if base_steps == 0 or refiner_steps == 0:
        return StepPlan(len(timesteps), 0)
    return StepPlan(base_steps, refiner_steps)


def vae_needs_fp32(vae, dtype):
    """Tell whether the VAE must decode in fp32: SDXL's overflows in fp16 unless fixed."""
    import torch
    return dtype == torch.float16 and bool(getattr(vae.config, 'force_upcast', True))


def decode_latents(vae, latents):
    """Decode SDXL latents (scheduler space) to uint8 RGB images, refusing NaN/inf output."""
    import torch
    config = vae.config
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    mean = getattr(config, 'latents_mean', None)
    std = getattr(config, 'latents_std', None)
    if mean is not None and std is not None:
        shape = (1, config.latent_channels, 1, 1)
        mean = torch.tensor(mean).view(shape).to(latents)
        std = torch.tensor(std).view(shape).to(latents)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    with torch.inference_mode():
        decoded = vae.decode(latents, return_dict=False)[0]
    if not torch.isfinite(decoded).all():
        raise EngineError(
            'the VAE produced NaN/inf pixels (numeric overflow); use dtype float32 or '
            'bfloat16, or an fp16-fixed SDXL VAE')
    pixels = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [image.permute(1, 2, 0).cpu().numpy() for image in pixels]
