# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The GPU fast path applied at load: the same pictures within fp16 noise, faster; it degrades.

`decide` (fast_path/decision.py) says whether the fast path can run. When it can,
`accelerate_pipelines` applies, at load:

- fused QKV projections and channels_last memory layout for both UNets and the VAE;
- optionally (`precision='fp8'`) torchao's FP8 dynamic quantisation with row-wise scales on
  both UNets' linear layers (text encoders and VAE stay fp16);
- regional `torch.compile` (static shapes) of the UNets' repeated blocks through diffusers'
  `compile_repeated_blocks`, given our block list (ResnetBlock2D, Transformer2DModel,
  Down/Upsample2D: diffusers' own list for this UNet is BasicTransformerBlock alone, which
  leaves the resnets' norms eager), and the same blocks of the VAE decoder;
- each UNet call (one CFG step) served from a CUDA graph per input signature; the text
  encoders likewise (captured on first use: milliseconds, nothing is compiled there);
- cuDNN's fused attention first in SDPA's order; VAE decode in fp16 with the fp32 VAE as the
  fallback when fp16 overflows (so an image is never black or NaN).

Nothing is compiled or captured inside a goal: a UNet call or VAE decode whose signature has
no prepared graph runs eagerly (`torch.compiler.set_stance('force_eager')`) and is queued for
preparation (fast_path/accelerator.py). Preparing (compile + capture for one signature) runs
in the engine's background thread between goals (fast_path/preparation.py), first for
`AccelerationConfig.prepare_sizes` (one UNet signature per `prepare_variants` entry), then
for what goals met; it yields to a waiting goal at the next UNet stage. A failure while
applying, preparing or replaying switches the fast path off completely (fast_path/switching.py:
plain diffusers modules again, bit-identical to fast_path false) and the goal is served
plainly.
"""

import copy
import logging
import os
import time

from sdxl_ros.engine.fast_path import torch_internals
from sdxl_ros.engine.fast_path.accelerator import Accelerator
from sdxl_ros.engine.fast_path.compiling import compile_regions, RECOMPILE_LIMIT
from sdxl_ros.engine.fast_path.decision import (decide, OFF_COST, probe_facts,
                                                torchao_float8_api)
from sdxl_ros.engine.fast_path.graphs import GraphedEncoder, GraphedUNet
from sdxl_ros.engine.fast_path.switching import switch_off

import torch

LOG = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'sdxl_ros', 'torchinductor')


def accelerate_pipelines(base, refiner, config, device, dtype=None, facts=None):
    """
    Apply the fast path to loaded pipelines (once); return an Accelerator.

    A no-op (with the reason in `Accelerator.reason`, and one log line where a GPU loses the
    fast path) when `decide` says no; a failure while applying undoes what was applied.
    """
    accel_config = config.acceleration
    facts = facts or probe_facts(device, accel_config.simulate_cuda)
    enabled, reason = decide(facts, config.fast_path, config.memory_mode, accel_config)
    if not enabled:
        if config.fast_path and facts.device_type == 'cuda':
            LOG.warning('fast path off: %s; %s', reason, OFF_COST)
        return Accelerator(base, refiner, enabled=False, reason=reason, config=accel_config)
    accel = Accelerator(base, refiner, enabled=True, config=accel_config)
    start = time.monotonic()
    try:
        _apply(accel, base, refiner, accel_config, facts, dtype)
    except Exception as error:  # noqa: BLE001 - the fast path degrades, never breaks a load
        switch_off(accel, 'applying failed', error)
        return accel
    accel.timings['apply_sec'] = round(time.monotonic() - start, 3)
    LOG.info('fast path: %s', ', '.join(accel.applied))
    return accel


def _apply(accel, base, refiner, cfg, facts, dtype):
    """Apply each part of the fast path (see the module docstring)."""
    cuda = facts.device_type == 'cuda' and not cfg.simulate_cuda
    accel.cache_dir = torch_internals.set_inductor_cache_dir(
        cfg.compile_cache_dir or os.path.expanduser(DEFAULT_CACHE_DIR))
    torch_internals.enable_compile_caches()
    if cfg.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
        accel.applied.append('cudnn.benchmark')
    if cuda and torch_internals.prefer_sdpa_backend(cfg.sdpa_backend):
        accel.applied.append('sdpa:' + cfg.sdpa_backend)
    unets = [p.unet for p in (base, refiner) if p is not None]
    for unet in unets:
        unet.fuse_qkv_projections()
        accel.fused.append(unet)
        unet.to(memory_format=torch.channels_last)
        accel.channels_last.append(unet)
    accel.applied += ['fused_qkv', 'channels_last']
    if cfg.precision == 'fp8':
        quantize, float8_config, per_row = torchao_float8_api()
        for unet in unets:
            quantize(unet, float8_config(granularity=per_row()))
        accel.applied.append('fp8_rowwise_unets')

    vae = base.vae
    if dtype == torch.float16 and vae.dtype == torch.float32:
        fast_vae = copy.deepcopy(vae).to(torch.float16)
    else:
        fast_vae = vae
        accel.fused.append(vae)
        accel.channels_last.append(vae)
    fast_vae.fuse_qkv_projections()
    fast_vae.to(memory_format=torch.channels_last)
    accel.fast_vae = fast_vae
    accel.applied.append(f'vae_decode_{str(fast_vae.dtype).replace("torch.", "")}')
    accel.faults.check('apply')

    if cfg.compile == 'regional':
        torch_internals.raise_recompile_limits(RECOMPILE_LIMIT)
        for unet in unets:
            compile_regions(unet, cfg.compile_regions, cfg.compile_mode, cfg.compile_backend)
            accel.compiled.append(unet)
        if cfg.compile_text_encoders:
            for encoder in (base.text_encoder, base.text_encoder_2):
                if encoder is not None:
                    encoder.compile(dynamic=False)
                    accel.compiled.append(encoder)
            accel.applied.append('compile_text_encoders')
        # The decoder's blocks one by one (not the decoder whole), so that preparing a new
        # size can yield to a goal between them (stage hooks on its up blocks).
        compile_regions(fast_vae.decoder, cfg.compile_regions, cfg.compile_mode,
                        cfg.compile_backend)
        accel.compiled.append(fast_vae)
        accel.applied.append(f'compile_regional:{cfg.compile_mode}')
    pool = torch.cuda.graph_pool_handle() if cuda and cfg.cuda_graphs else None
    for unet in unets:
        graphed = GraphedUNet(unet, pool=pool, on_missing=accel._on_missing,
                              capture=cuda and cfg.cuda_graphs)
        graphed.before_call = accel.faults.hook('goal')
        graphed.install()
        accel.graphed.append(graphed)
    accel.install_stage_hooks(unets + [fast_vae.decoder])
    if cuda and cfg.cuda_graphs:
        accel.applied.append('cuda_graphs')
        if cfg.graph_text_encoders:
            encoders = {id(e): e for p in (base, refiner) if p is not None
                        for e in (p.text_encoder, p.text_encoder_2) if e is not None}
            text_pool = torch.cuda.graph_pool_handle()  # kept apart from the UNets' pool
            for encoder in encoders.values():
                graphed = GraphedEncoder(encoder, pool=text_pool)
                graphed.install()
                accel.graphed.append(graphed)
            accel.applied.append('cuda_graphs_text')
    for width, height in cfg.prepare_sizes:
        accel.queue_size(width, height)
