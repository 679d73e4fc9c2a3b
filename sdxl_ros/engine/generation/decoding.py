# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Our own VAE decode of the refined latents (and encode of img2img init pictures).

diffusers' `interrupt` skips the remaining steps but would still decode; so both pipelines
run with `output_type='latent'` and the engine decodes only when the goal was not cancelled.
"""

import numpy as np

from sdxl_ros.engine.errors import EngineError

import torch


def vae_needs_fp32(vae, dtype):
    """Tell whether the VAE must decode in fp32: SDXL's overflows in fp16 unless fixed."""
    return dtype == torch.float16 and bool(getattr(vae.config, 'force_upcast', True))


def _latent_stats(config, like):
    """Return the VAE's per-channel latent (mean, std) as tensors like `like`, or None."""
    mean = getattr(config, 'latents_mean', None)
    std = getattr(config, 'latents_std', None)
    if mean is None or std is None:
        return None
    shape = (1, config.latent_channels, 1, 1)
    return (torch.tensor(mean).view(shape).to(like), torch.tensor(std).view(shape).to(like))


def decode_latents(vae, latents):
    """Decode SDXL latents (scheduler space) to uint8 RGB images, refusing NaN/inf output."""
    config = vae.config
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    stats = _latent_stats(config, latents)
    if stats is not None:
        mean, std = stats
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
    # HWC and C-contiguous, transposed on the device: a strided view cost the node 5-9 ms per
    # 1024x1024 image when it copied it into a message (bench/bench_node.py).
    pixels = pixels.permute(0, 2, 3, 1).contiguous().cpu()
    return [image.numpy() for image in pixels]


def encode_image(vae, image, dtype):
    """
    Encode a PIL/uint8 RGB picture to SDXL latents (scheduler space), the inverse of decode.

    The engine encodes, not the pipelines: diffusers' img2img/inpaint encoders cast an
    upcast VAE back to the pipeline dtype afterwards, which would undo `vae_needs_fp32`. The
    posterior's mode is used (deterministic; the seed's generator draws only the noise).
    """
    config = vae.config
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    pixels = pixels.permute(2, 0, 1)[None].to(device=vae.device, dtype=vae.dtype)
    pixels = pixels / 127.5 - 1.0
    with torch.inference_mode():
        latents = vae.encode(pixels).latent_dist.mode()
    stats = _latent_stats(config, latents)
    if stats is not None:
        mean, std = stats
        latents = (latents - mean) * config.scaling_factor / std
    else:
        latents = latents * config.scaling_factor
    return latents.to(dtype).clone()
