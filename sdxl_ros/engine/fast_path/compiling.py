# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Regional torch.compile of repeated blocks (static shapes), its undo, and eager stance."""

from sdxl_ros.engine.fast_path import torch_internals

import torch

# Distinct static shapes per block class: SDXL base + refiner + VAE need about 40 variants a
# size; nine standard sizes and long prompts need more.
RECOMPILE_LIMIT = 512


def force_eager():
    """Context in which compiled regions run as plain eager code (nothing compiles)."""
    return torch.compiler.set_stance('force_eager')


def compile_regions(module, classes, mode='default', backend='inductor'):
    """Compile `module`'s blocks of the given classes in place; return how many."""
    kwargs = {'dynamic': False}
    if mode and mode != 'default':
        kwargs['mode'] = mode
    if backend != 'inductor':
        kwargs['backend'] = backend
    count = sum(1 for sub in module.modules() if type(sub).__name__ in classes)
    if count and hasattr(module, 'compile_repeated_blocks'):
        # diffusers' public regional compile, given our list instead of the class's own.
        module._repeated_blocks = list(classes)
        try:
            module.compile_repeated_blocks(**kwargs)
        finally:
            del module._repeated_blocks
        return count
    for sub in module.modules():  # diffusers without compile_repeated_blocks
        if type(sub).__name__ in classes:
            sub.compile(**kwargs)
    return count


def uncompile_regions(module):
    """Undo `compile_regions`."""
    return torch_internals.uncompile(module)
