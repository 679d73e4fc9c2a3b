# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""PNG files carrying A1111 infotext in their `parameters` text chunk (engine CLI and client)."""

import os

import numpy as np
from PIL import Image, PngImagePlugin


def output_paths(output, count):
    """Return the file names of `count` images: out.png, out-1.png, out-2.png, ..."""
    root, ext = os.path.splitext(str(output))
    ext = ext or '.png'
    return [f'{root}{ext}' if index == 0 else f'{root}-{index}{ext}' for index in range(count)]


def save_png(path, image, parameters=''):
    """Write an RGB uint8 HxWx3 array as PNG, with `parameters` in a tEXt/iTXt chunk."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f'expected a uint8 HxWx3 RGB array, got {array.dtype} {array.shape}')
    info = PngImagePlugin.PngInfo()
    if parameters:
        # Pillow writes iTXt for non-Latin-1 text, as A1111 does, so any prompt survives.
        info.add_itxt('parameters', parameters)
    Image.fromarray(array, 'RGB').save(path, format='PNG', pnginfo=info)


def read_png_parameters(path):
    """Return the `parameters` text of a PNG ('' if it has none)."""
    with Image.open(path) as image:
        image.load()
        return image.text.get('parameters', '') if hasattr(image, 'text') else ''
