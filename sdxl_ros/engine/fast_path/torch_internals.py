# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Every private torch API the fast path touches, each behind a feature check.

A torch without one of them gets a False/None answer here, never an AttributeError elsewhere:
the fast path then degrades (fast_path/switching.py) instead of breaking a goal. Public
APIs (torch.compile, torch.compiler.set_stance, torch.cuda.graph) are used directly by the
other fast_path modules.
"""

import contextlib
import importlib
import os

import torch
from torch.nn.attention import SDPBackend


def import_problem(name):
    """Return '' when module `name` imports, else why not (one line)."""
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - a broken install is as absent as a missing one
        return f'{name} not importable ({type(error).__name__}: {str(error).splitlines()[0]})' \
            if str(error) else f'{name} not importable ({type(error).__name__})'
    return ''


def set_inductor_cache_dir(folder):
    """
    Point Inductor's on-disk caches at `folder` (AccelerationConfig.compile_cache_dir).

    Inductor reads its cache folder only from the TORCHINDUCTOR_CACHE_DIR variable, and
    writes its own default (a /tmp folder, lost at reboot) there as soon as it first looks:
    torch._inductor.runtime.cache_dir_utils. So this is the one process-wide setting the
    fast path makes, and it must be made even when the variable is already set.
    """
    os.makedirs(folder, exist_ok=True)
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = folder
    return folder


def enable_compile_caches():
    """Turn on Inductor's FX graph cache and the AOTAutograd cache where torch has them."""
    done = []
    for module_name, attribute in (('torch._inductor.config', 'fx_graph_cache'),
                                   ('torch._functorch.config', 'enable_autograd_cache')):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attribute):
            setattr(module, attribute, True)
            done.append(attribute)
    return done


def raise_recompile_limits(limit):
    """Let one compiled block class hold a variant for every static shape it meets."""
    try:
        import torch._dynamo.config as dynamo_config
    except ImportError:
        return False
    for name, value in (('recompile_limit', limit), ('cache_size_limit', limit),
                        ('accumulated_recompile_limit', 8 * limit),
                        ('accumulated_cache_size_limit', 8 * limit)):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), value))
    return True


@contextlib.contextmanager
def serial_compile(enabled=True):
    """Compile in this process (no Inductor worker pool) inside the block, when `enabled`."""
    config = None
    if enabled:
        try:
            import torch._inductor.config as config
        except ImportError:
            config = None
    if config is None or not hasattr(config, 'compile_threads'):
        yield
        return
    previous = config.compile_threads
    config.compile_threads = 1
    try:
        yield
    finally:
        config.compile_threads = previous


def prefer_sdpa_backend(choice):
    """Put SDPA's `choice` kernel ('cudnn' or 'flash') first in its priority order."""
    get = getattr(torch._C, '_get_sdp_priority_order', None)
    put = getattr(torch._C, '_set_sdp_priority_order', None)
    if choice in ('', 'default') or get is None or put is None:
        return False
    name = {'cudnn': 'CUDNN_ATTENTION', 'flash': 'FLASH_ATTENTION'}[choice]
    if not hasattr(SDPBackend, name):
        return False
    first = int(getattr(SDPBackend, name))
    current = [int(b) for b in get()]
    put([first] + [b for b in current if b != first])
    return True


def uncompile(module):
    """Undo nn.Module.compile on `module` and its children (it keeps one private attribute)."""
    count = 0
    for sub in module.modules():
        if getattr(sub, '_compiled_call_impl', None) is not None:
            sub._compiled_call_impl = None
            count += 1
    return count


def is_compiled(module):
    """Whether nn.Module.compile was called on `module` itself."""
    return getattr(module, '_compiled_call_impl', None) is not None
