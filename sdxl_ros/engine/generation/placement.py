# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Where the loaded models live for each memory mode: resident, model_offload, offloaded."""

from sdxl_ros.engine.errors import ModelLoadError
from sdxl_ros.engine.generation.decoding import vae_needs_fp32
from sdxl_ros.engine.torch_features import group_offloading_problem

import torch


def place_models(models, memory_mode, device, dtype, vae_tiling):
    """Put the models where `memory_mode` wants them; upcast an fp16-unsafe VAE."""
    base, refiner = models.base, models.refiner
    if vae_needs_fp32(base.vae, dtype):
        # Kept in fp32 for good (~170 MB): decoding fp16 SDXL latents overflows otherwise.
        base.vae.to(torch.float32)
    if vae_tiling:
        base.vae.enable_tiling()
    cuda = device.type == 'cuda'
    if memory_mode == 'resident' or not cuda:
        base.to(device)
        if refiner is not None:
            refiner.to(device)
        return
    # Offloaded modes keep the small VAE resident: it makes the pipelines' device the GPU.
    base.vae.to(device)
    if memory_mode == 'model_offload':
        base.text_encoder.to(device)
        base.text_encoder_2.to(device)
        return
    modules = [base.text_encoder, base.text_encoder_2, base.unet]
    if refiner is not None:
        modules.append(refiner.unet)
    problem = group_offloading_problem()
    if problem:
        raise ModelLoadError(f'memory_mode sequential_offload needs {problem}; use '
                             'model_offload or resident')
    # Lazy on purpose: diffusers.hooks is newer than some supported diffusers, and only
    # this memory mode needs it.
    from diffusers.hooks import apply_group_offloading
    for module in modules:
        apply_group_offloading(module, onload_device=device,
                               offload_device=torch.device('cpu'),
                               offload_type='leaf_level')


def enter_stage(models, stage, memory_mode, device):
    """In model_offload mode on CUDA, keep only the UNet of `stage` ('base'/'refiner') there."""
    if memory_mode != 'model_offload' or device.type != 'cuda':
        return
    base, refiner = models.base, models.refiner
    active = base.unet if stage == 'base' else refiner.unet
    idle = refiner.unet if (stage == 'base' and refiner is not None) else (
        base.unet if stage == 'refiner' else None)
    if idle is not None:
        idle.to(torch.device('cpu'))
    active.to(device)
