# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
What the installed torch and diffusers can do, found by looking rather than by version.

A Jetson runs whatever PyTorch its JetPack has (NVIDIA's 2.3.0a0 up to the newest), with the
libraries of the lock scripts/install.sh picked for it. Where an API differs between those
torch versions, the engine asks here. scripts/install.sh calls `main()` after a sync: it
prints the one-line problem and returns 1, or returns 0.
"""

import sys

# What to do when the installed libraries do not suit the torch found.
REINSTALL = ('run scripts/install.sh again: it picks the lock for the torch it finds '
             '(README "Dependency profiles")')


def out_of_memory_errors():
    """
    Return the exception classes torch raises when memory runs out.

    `torch.OutOfMemoryError` exists from torch 2.5; older torch has only
    `torch.cuda.OutOfMemoryError` (from 2.5 the same class).
    """
    import torch
    found = []
    for owner in (torch, getattr(torch, 'cuda', None)):
        error = getattr(owner, 'OutOfMemoryError', None)
        if isinstance(error, type) and error not in found:
            found.append(error)
    return tuple(found) or (MemoryError,)


def out_of_memory_error():
    """Return the class torch raises for a failed device allocation (for fault injection)."""
    return out_of_memory_errors()[0]


def library_problem():
    """
    Return one line saying why the engine's libraries cannot run on this torch, or None.

    Catches what a lock that does not match the torch does deep inside the libraries:
    transformers 5 disables torch < 2.6.0, diffusers >= 0.41 calls `torch.accelerator`
    (torch >= 2.6), and a torch built for numpy 1 cannot exchange arrays with numpy 2.
    """
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any import failure is reported in one line
        return f'torch does not import ({_first_line(error)}); install PyTorch (README)'
    problem = _numpy_problem(torch)
    if problem:
        return problem
    try:
        import transformers
        from transformers.utils import is_torch_available
    except Exception as error:  # noqa: BLE001
        return f'transformers does not import with torch {torch.__version__} ' \
            f'({_first_line(error)}); {REINSTALL}'
    if not is_torch_available():
        return (f'transformers {transformers.__version__} does not accept torch '
                f'{torch.__version__}; {REINSTALL}')
    try:
        from diffusers import StableDiffusionXLPipeline  # noqa: F401 - the import is the test
    except Exception as error:  # noqa: BLE001
        return f'diffusers does not import with torch {torch.__version__} ' \
            f'({_first_line(error)}); {REINSTALL}'
    return None


def check_libraries():
    """Raise ModelLoadError with `library_problem()`'s line, if there is one."""
    problem = library_problem()
    if problem:
        from sdxl_ros.engine.errors import ModelLoadError
        raise ModelLoadError(problem)


def group_offloading_problem():
    """Return why diffusers' group offloading (sequential_offload) is missing, or None."""
    try:
        from diffusers.hooks import apply_group_offloading  # noqa: F401
    except ImportError as error:
        import diffusers
        return (f'diffusers {diffusers.__version__} has no diffusers.hooks.'
                f'apply_group_offloading ({_first_line(error)})')
    return None


def _numpy_problem(torch):
    """Return why torch cannot exchange arrays with the numpy installed, or None."""
    try:
        import numpy
    except ImportError:
        return None
    try:
        torch.from_numpy(numpy.zeros(2)).numpy()
    except Exception as error:  # noqa: BLE001
        return (f'torch {torch.__version__} cannot use numpy {numpy.__version__} '
                f'({_first_line(error)}): it was built for another numpy major; {REINSTALL}')
    return None


def _first_line(error):
    """Return the first line of an exception's message, with its type."""
    return f'{type(error).__name__}: {error}'.splitlines()[0]


def main():
    """Print why the libraries cannot run on this torch (one line); return the exit code."""
    found = library_problem()
    if found:
        print(f'sdxl_ros: {found}', file=sys.stderr)
    return 1 if found else 0
