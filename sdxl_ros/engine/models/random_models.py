# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Randomly initialised SDXL components for the presets (engine/presets.py), seeded."""

from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

from sdxl_ros.engine.models.resources import model_config_dir

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

# Seed of the random init, fixed so a preset is the same model in every process.
PRESET_SEED = 0


def _seeded(build, seed):
    """Run `build()` with torch's global CPU RNG seeded, restoring the caller's RNG after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_component(config_name, component, device, dtype):
    """
    Build one randomly initialised component from a bundled config folder.

    Modules are created directly on `device` (fast for full-size models on a GPU) in float32
    and then cast. The init is seeded, so a preset is the same model every time on the same
    kind of device; CPU and CUDA random streams differ, so a preset built on the CPU (offload
    memory modes build there) has other weights than one built on the GPU.
    """
    folder = model_config_dir(config_name) / component
    if component == 'scheduler':
        return EulerDiscreteScheduler.from_pretrained(str(folder))

    def build():
        with torch.device(device):
            if component == 'unet':
                return UNet2DConditionModel.from_config(
                    UNet2DConditionModel.load_config(str(folder)))
            if component == 'vae':
                return AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder)))
            config = CLIPTextConfig.from_pretrained(str(folder))
            if component == 'text_encoder':
                return CLIPTextModel(config)
            return CLIPTextModelWithProjection(config)

    if torch.device(device).type == 'cpu':
        module = _seeded(build, PRESET_SEED)
    else:
        # CUDA init draws from the device RNG: seed it too, without disturbing the caller.
        with torch.random.fork_rng(devices=[torch.device(device)]):
            torch.manual_seed(PRESET_SEED)
            module = build()
    if module.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.eval().requires_grad_(False)
