# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Memory: rough estimates for admission control, free memory, and releasing caches."""

from dataclasses import dataclass
import gc
import os
from typing import Optional

import torch

# Activation bytes per output pixel, measured on an H200 for SDXL (PyTorch SDPA) at 1024x1024,
# rounded up: the UNet's peak on top of its weights (fp16, CFG batch of 2), and the VAE decode
# in fp32 (4.8 GiB at 1024x1024: the decode, not the UNet, sets the peak).
UNET_BYTES_PER_PIXEL = 1400
VAE_DECODE_BYTES_PER_PIXEL = 5200


def module_bytes(modules):
    """Bytes held by the parameters and buffers of distinct modules (shared ones once)."""
    seen, total = set(), 0
    for module in modules:
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        for tensor in list(module.parameters()) + list(module.buffers()):
            total += tensor.numel() * tensor.element_size()
    return total


def activation_bytes(width, height, dtype_size=2, vae_tiling=False, scale=1.0,
                     tile_pixels=1024 * 1024):
    """
    Rough peak activation bytes for one image (CFG batch of 2) of width x height.

    `scale` shrinks the estimate for small models (ratio of the model's UNet channel width to
    SDXL's 320), so that the tiny preset is not over-estimated by orders of magnitude. With
    VAE tiling the decode works on tiles of `tile_pixels` (diffusers tiles at the VAE's
    sample_size, 1024x1024 for SDXL, so tiling only helps above that).
    """
    pixels = width * height
    unet = UNET_BYTES_PER_PIXEL * pixels * dtype_size / 2 * scale
    decode_pixels = min(pixels, tile_pixels) if vae_tiling else pixels
    vae = VAE_DECODE_BYTES_PER_PIXEL * decode_pixels * scale
    return int(max(unet, vae))


def usable_device_bytes(device):
    """
    Bytes a generation may use on a CUDA device, or None where unknown (CPU).

    That is the free memory plus all that PyTorch already reserves, since the estimates it is
    compared with count the resident weights and PyTorch reuses its cached blocks.
    """
    if device is None or torch.device(device).type != 'cuda' or not torch.cuda.is_available():
        return None
    device = torch.device(device)
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device))


@dataclass(frozen=True)
class MemoryReport:
    """
    Memory of the device the models run on, for health reports (bytes; None = unknown).

    used: held by this process (CUDA: reserved by PyTorch; CPU: resident set). free: CUDA:
    what the driver has free; CPU: MemAvailable. needed / usable: the estimate for one image
    of the size asked about, and what a generation may use (CUDA: free + PyTorch's reserve;
    CPU: MemAvailable, the weights being resident already).
    """

    device: str
    used_bytes: Optional[int] = None
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    needed_bytes: Optional[int] = None
    usable_bytes: Optional[int] = None

    @property
    def short(self):
        """Whether one image of the size asked about would not fit."""
        return (self.needed_bytes is not None and self.usable_bytes is not None
                and self.usable_bytes < self.needed_bytes)


def _meminfo_bytes(key, path='/proc/meminfo'):
    """Return a `kB` field of a /proc file in bytes, or None where unreadable (not Linux)."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_memory():
    """Return (this process's resident bytes, available bytes, total bytes) of the host RAM."""
    return (_meminfo_bytes('VmRSS', f'/proc/{os.getpid()}/status'),
            _meminfo_bytes('MemAvailable'), _meminfo_bytes('MemTotal'))


def cuda_memory(device):
    """Return (bytes reserved by PyTorch, free bytes, total bytes) of a CUDA device."""
    free, total = torch.cuda.mem_get_info(device)
    return int(torch.cuda.memory_reserved(device)), int(free), int(total)


def release_cached_memory():
    """Drop Python garbage and return PyTorch's cached CUDA blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def estimate_bytes(models, width, height, memory_mode, device, dtype, vae_tiling,
                   weights_too=True):
    """
    Rough peak bytes for one width x height image of `models` (activations, plus weights).

    Weights count what `memory_mode` keeps on the device at once; off CUDA every weight is
    resident.
    """
    base, refiner = models.base, models.refiner
    modules = [base.vae, base.text_encoder, base.text_encoder_2]
    unets = [base.unet] + ([refiner.unet] if refiner is not None else [])
    if memory_mode == 'resident' or device.type != 'cuda':
        weights = module_bytes(modules + unets)
    elif memory_mode == 'model_offload':
        weights = module_bytes(modules) + max(module_bytes([u]) for u in unets)
    else:
        weights = module_bytes([base.vae])
    scale = base.unet.config.block_out_channels[0] / 320
    itemsize = 2 if dtype is not None and dtype.itemsize == 2 else 4
    tile = getattr(base.vae.config, 'sample_size', 1024) or 1024
    tile = int(tile[0] if isinstance(tile, (list, tuple)) else tile)
    activations = activation_bytes(width, height, itemsize, vae_tiling, scale, tile * tile)
    return int((weights if weights_too else 0) + activations)


def memory_report(models, device, dtype, config, width, height):
    """
    Return a MemoryReport of `device` with the estimate for one width x height image.

    Before the models load the device is not known yet and only the configured name
    (`config.device`) is reported.
    """
    if models is None or device is None:
        return MemoryReport(device=config.device)

    def estimate(weights_too):
        return estimate_bytes(models, width, height, config.memory_mode, device, dtype,
                              config.vae_tiling, weights_too)

    if device.type == 'cuda':
        used, free, total = cuda_memory(device)
        return MemoryReport(str(device), used, free, total, estimate(True),
                            usable_device_bytes(device))
    used, free, total = host_memory()
    return MemoryReport(str(device), used, free, total, estimate(False), free)
