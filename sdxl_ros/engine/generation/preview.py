# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Cheap previews: SDXL latents to RGB by a linear projection, no VAE involved."""

import numpy as np

# Least-squares fit of RGB (-1..1) from SDXL's 4 latent channels, as published by the
# ComfyUI/A1111 "approx NN/cheap" previewers (public numbers).
SDXL_LATENT_RGB_FACTORS = np.array([
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
], dtype=np.float32)
SDXL_LATENT_RGB_BIAS = np.array([0.1084, -0.0175, -0.0011], dtype=np.float32)


def latents_to_rgb(latents):
    """
    Project one latent (4xhxw torch tensor or array) to a uint8 hxwx3 RGB preview.

    The preview has the latent's resolution (1/8 of the image side); subscribers scale it.
    """
    if hasattr(latents, 'detach'):
        latents = latents.detach().float().cpu().numpy()
    latents = np.asarray(latents, dtype=np.float32)
    rgb = np.einsum('chw,cr->hwr', latents, SDXL_LATENT_RGB_FACTORS) + SDXL_LATENT_RGB_BIAS
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip((rgb + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
