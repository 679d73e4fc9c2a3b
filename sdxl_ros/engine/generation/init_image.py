# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
img2img and inpainting inputs, prepared and put back together as A1111 does.

`prepare_init` resizes the init image (and mask) to the generation size with the request's
resize mode, blurs the mask, and for "only masked" (`inpaint_full_res`) crops the masked
region plus padding and scales it to the generation size. `PreparedInit.composite` pastes a
generated picture back: for inpainting the original pixels are laid over it outside the mask
(A1111's overlay), so outside the blurred mask the result equals the input exactly whatever
the VAE round trip does.

diffusers' VaeImageProcessor does the resizing (its 'default', 'crop' and 'fill' modes are
A1111's three), the crop region and the overlay; PIL blurs. No ROS, no torch at import.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from diffusers.image_processor import VaeImageProcessor
import numpy as np
from PIL import Image, ImageFilter

#: A1111 resize mode label -> diffusers VaeImageProcessor.resize mode.
_RESIZE = {'Just resize': 'default', 'Crop and resize': 'crop', 'Resize and fill': 'fill'}


def _processor():
    """Return a VaeImageProcessor (Lanczos, as A1111) for resizing and overlays."""
    return VaeImageProcessor(vae_scale_factor=8)


@dataclass
class PreparedInit:
    """What the pipelines get (init picture, latent mask) and what compositing needs."""

    #: The picture to encode, width x height (the crop region scaled, for "only masked").
    init: Image.Image
    #: Blurred mask at width x height for the pipelines' latent blending (None: img2img).
    mask: Optional[Image.Image] = None
    #: The picture the result is laid into (output size) and the overlay's alpha mask.
    original: Optional[Image.Image] = None
    overlay_mask: Optional[Image.Image] = None
    #: (x1, y1, x2, y2) of the "only masked" region in `original`, or None.
    crop: Optional[Tuple[int, int, int, int]] = None

    def composite(self, generated):
        """Return the uint8 HxWx3 result: `generated` as is, or laid into the original."""
        if self.mask is None:
            return generated
        image = _processor().apply_overlay(self.overlay_mask, self.original,
                                           Image.fromarray(generated), self.crop)
        return np.asarray(image.convert('RGB')).copy()


def prepare_init(request):
    """Return the PreparedInit of a validated img2img/inpainting request (None: txt2img)."""
    if request.init_image is None:
        return None
    processor = _processor()
    width, height = request.width, request.height
    mode = _RESIZE[request.resize_mode]
    source = Image.fromarray(request.init_image, 'RGB')
    if request.mask_image is None:
        return PreparedInit(init=processor.resize(source, height, width, mode))
    mask = Image.fromarray(request.mask_image, 'L')
    if request.mask_blur:
        # A1111 blurs at the mask's own resolution, before any resizing or cropping.
        mask = mask.filter(ImageFilter.GaussianBlur(request.mask_blur))
    if request.inpaint_full_res:
        crop = processor.get_crop_region(mask, width, height,
                                         pad=request.inpaint_full_res_padding)
        return PreparedInit(
            init=processor.resize(source.crop(crop), height, width, 'fill'),
            mask=processor.resize(mask.crop(crop), height, width, 'fill').convert('L'),
            original=source, overlay_mask=mask, crop=crop)
    init = processor.resize(source, height, width, mode)
    # diffusers' crop/fill modes return RGB; gray RGB -> L is exact in PIL.
    mask = processor.resize(mask, height, width, mode).convert('L')
    # A1111 widens the whole-picture overlay (mask x 2, clipped) so the blurred seam blends.
    overlay = np.clip(np.asarray(mask, dtype=np.uint16) * 2, 0, 255).astype(np.uint8)
    return PreparedInit(init=init, mask=mask, original=init,
                        overlay_mask=Image.fromarray(overlay, 'L'))
