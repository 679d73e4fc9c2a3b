# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Switching the fast path off: undo what was applied, and say so with its cost in one line."""

import logging

from sdxl_ros.engine.fast_path.compiling import uncompile_regions
from sdxl_ros.engine.fast_path.decision import OFF_COST

import torch

LOG = logging.getLogger(__name__)


def undo(accel, reason):
    """Make the models plain diffusers modules again (bit-identical to fast_path false)."""
    for graphed in accel.graphed:
        graphed.uninstall()
    for module in accel.compiled:
        uncompile_regions(module)
    for hook in accel._hooks:
        hook.remove()
    for module in accel.fused:
        if hasattr(module, 'unfuse_qkv_projections'):
            module.unfuse_qkv_projections()
    for module in accel.channels_last:
        module.to(memory_format=torch.contiguous_format)
    accel.graphed, accel.compiled, accel._hooks = [], [], []
    accel.fused, accel.channels_last = [], []
    with accel._pending_lock:
        accel._pending.clear()
    accel.fast_vae = None
    accel.vae_ready.clear()
    was = accel.enabled
    accel.enabled = False
    accel.reason = reason
    return was


def switch_off(accel, reason, error=None):
    """Turn the fast path off after a failure and say so in one log line."""
    detail = reason
    if error is not None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()][:2]
        detail = f'{reason}: {type(error).__name__}: {" ".join(lines)}'[:240]
    if accel.disable(detail):
        fp8 = ' (fp8 weights stay quantised)' if accel.config.precision == 'fp8' else ''
        LOG.warning('fast path off: %s; %s%s', detail, OFF_COST, fp8)
