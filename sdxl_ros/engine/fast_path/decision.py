# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Whether the fast path can run here, from plain facts (device, Triton, torch features).

When it cannot, the engine runs plain diffusers and one log line says why and what it costs
(OFF_COST). The rest of the fast path: fast_path/applying.py (what runs when it can).
"""

from dataclasses import dataclass

from sdxl_ros.engine.fast_path import torch_internals

import torch

# What it costs when the fast path is off on a GPU (bench: stock eager / ours on an H200).
OFF_COST = 'images ~2x slower (plain diffusers)'
# Compute capability from which GPUs have FP8 tensor cores (Ada 8.9, Hopper 9.0, ...).
FP8_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class Facts:
    """What the fast path needs to know about this machine (probed, or given by tests)."""

    device_type: str
    capability: tuple = ()
    triton: str = ''            # '' = importable, else why not
    torchao_float8: str = ''    # '' = torchao's float8 API present, else why not
    torch_compile: bool = True
    set_stance: bool = True
    cuda_graphs: bool = True


def probe_facts(device, simulate_cuda=False):
    """Read the facts for `device` from this process (imports Triton/torchao to check)."""
    device_type = getattr(device, 'type', str(device))
    capability = ()
    if device_type == 'cuda' and torch.cuda.is_available():
        capability = tuple(torch.cuda.get_device_capability(device))
    if simulate_cuda:
        device_type, capability = 'cuda', capability or (9, 0)
    compiler = getattr(torch, 'compiler', None)
    return Facts(device_type=device_type, capability=capability,
                 triton=torch_internals.import_problem('triton'),
                 torchao_float8=_torchao_float8_problem(),
                 torch_compile=hasattr(torch, 'compile'),
                 set_stance=hasattr(compiler, 'set_stance'),
                 cuda_graphs=hasattr(torch.cuda, 'CUDAGraph') and hasattr(torch.cuda, 'graph'))


def torchao_float8_api():
    """Return (quantize_, Float8DynamicActivationFloat8WeightConfig, PerRow) from torchao."""
    import torchao.quantization as quantization
    config = getattr(quantization, 'Float8DynamicActivationFloat8WeightConfig', None)
    per_row = getattr(quantization, 'PerRow', None)
    if per_row is None:
        from torchao.quantization.granularity import PerRow as per_row
    if config is None or not hasattr(quantization, 'quantize_'):
        raise ImportError('torchao has no Float8DynamicActivationFloat8WeightConfig/quantize_')
    return quantization.quantize_, config, per_row


def _torchao_float8_problem():
    """Return '' when torchao's float8 dynamic quantisation can be used, else why not."""
    try:
        torchao_float8_api()
    except Exception as error:  # noqa: BLE001 - absent or broken alike
        return f'torchao float8 quantisation not available ({type(error).__name__}: ' \
               f'{str(error).splitlines()[0] if str(error) else ""})'
    return ''


def decide(facts, fast_path, memory_mode, accel):
    """Return (enabled, reason): whether the fast path runs on a machine with `facts`."""
    if not fast_path:
        return False, 'fast_path false'
    if facts.device_type != 'cuda':
        return False, 'not a CUDA device'
    if memory_mode != 'resident':
        return False, f'memory_mode {memory_mode} (offloading moves weights; graphs cannot)'
    if not facts.set_stance:
        return False, 'torch.compiler.set_stance missing (torch older than 2.6)'
    if accel.cuda_graphs and not facts.cuda_graphs:
        return False, 'torch.cuda graphs missing from this torch'
    if accel.compile == 'regional':
        if not facts.torch_compile:
            return False, 'torch.compile missing (torch older than 2.0)'
        if accel.compile_backend == 'inductor' and facts.triton:
            return False, facts.triton
    return True, ''


def precision_problem(facts, fast_path, accel, dtype='bfloat16'):
    """Return why `accel.precision` cannot be used here ('' when it can): refused at load."""
    if accel.precision == 'fp16':
        return ''
    if dtype != 'bfloat16':
        # torchao's row-wise FP8 scales take bf16 weights only (an H200 run with fp16 weights
        # failed while quantising: bench/results/h200_2026-12-01_run8_fp8.json).
        return f'precision fp8 needs dtype bfloat16 (or auto), not {dtype}'
    if not fast_path:
        return 'precision fp8 needs fast_path true'
    if facts.device_type != 'cuda':
        return 'precision fp8 needs a CUDA GPU'
    if tuple(facts.capability) < FP8_CAPABILITY:
        return (f'precision fp8 needs FP8 tensor cores (compute capability >= 8.9); this GPU '
                f'has {".".join(str(c) for c in facts.capability) or "unknown"}')
    if facts.torchao_float8:
        return f'precision fp8 needs torchao: {facts.torchao_float8}'
    return ''
