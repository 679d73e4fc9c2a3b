# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The engine's torch feature checks, on whichever torch this venv has (2.3 in CI's py3.10)."""

import pytest
from sdxl_ros.engine.torch_features import (group_offloading_problem, library_problem,
                                            out_of_memory_error, out_of_memory_errors)
import torch


def test_out_of_memory_classes_are_the_ones_torch_raises():
    """torch.cuda.OutOfMemoryError always; torch.OutOfMemoryError too where it exists (2.5+)."""
    errors = out_of_memory_errors()
    assert torch.cuda.OutOfMemoryError in errors
    if hasattr(torch, 'OutOfMemoryError'):
        assert torch.OutOfMemoryError in errors
    with pytest.raises(errors):
        raise out_of_memory_error()('CUDA out of memory. Tried to allocate 2.00 GiB')
    assert issubclass(out_of_memory_error(), RuntimeError)


def test_the_installed_libraries_accept_this_torch():
    """The lock install.sh picked for this torch: transformers and diffusers take it."""
    assert library_problem() is None


def test_group_offloading_is_there_for_sequential_offload():
    """Every lock's diffusers (0.38 and newer) has diffusers.hooks.apply_group_offloading."""
    assert group_offloading_problem() is None
