# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The Accelerator: what the fast path applied to one model pair, its queued work, the decode.

Nothing is compiled or captured inside a goal: a UNet call or VAE decode whose signature has
no prepared graph runs eagerly and is queued here; the engine's background thread
(fast_path/preparation.py) prepares the queue between goals and yields to a waiting goal at
the next UNet stage. The VAE decodes in fp16 with the fp32 VAE as the fallback when fp16
overflows (so an image is never black or NaN).
"""

import logging
import threading
import time

from sdxl_ros.engine.config import AccelerationConfig
from sdxl_ros.engine.errors import EngineError
from sdxl_ros.engine.fast_path.compiling import force_eager
from sdxl_ros.engine.fast_path.faults import Faults
from sdxl_ros.engine.fast_path.graphs import GraphedUNet, unet_key
from sdxl_ros.engine.fast_path.switching import undo
from sdxl_ros.engine.generation.decoding import decode_latents

import torch

LOG = logging.getLogger(__name__)


class Yielded(Exception):
    """Preparation stopped at a stage boundary because a goal is waiting (resumed later)."""


class Accelerator:
    """What the fast path applied to one loaded model pair, its pending work and the decode."""

    def __init__(self, base=None, refiner=None, enabled=False, reason='', config=None):
        """Start with nothing applied; `accelerate_pipelines` fills it in."""
        self.base = base
        self.refiner = refiner
        self.enabled = enabled
        self.reason = reason
        self.config = config or AccelerationConfig()
        self.applied = []
        self.cache_dir = ''
        self.fast_vae = None
        self.fallback_vae = base.vae if base is not None else None
        self.vae_overflowed = False
        self.graphed = []
        self.compiled = []
        self.fused = []
        self.channels_last = []
        self.timings = {}
        self.vae_ready = set()      # latent shapes whose decoder is compiled
        self.prepared_sizes = []    # (width, height) fully prepared, in order
        self._pending = []          # units: ('unet', graphed, key) or ('vae', latent shape)
        self._pending_lock = threading.Lock()
        self.on_work = None         # called when work is queued (wakes the preparer)
        self._yield_check = None
        self._hooks = []
        self.faults = Faults(self.config.fault_at)

    def summary(self):
        """Return a dict for logs and benchmarks."""
        return {'enabled': self.enabled, 'reason': self.reason, 'applied': list(self.applied),
                'cache_dir': self.cache_dir, 'vae_overflowed': self.vae_overflowed,
                'precision': self.config.precision,
                'graphs': [len(g.graphs) for g in self.graphed],
                'replays': [g.replays for g in self.graphed],
                'eager_calls': [getattr(g, 'fallbacks', 0) for g in self.graphed],
                'prepared_sizes': [f'{w}x{h}' for w, h in self.prepared_sizes],
                'pending': len(self._pending), 'timings': dict(self.timings)}

    def decode(self, latents):
        """Decode latents to uint8 RGB images: fp16 when safe, fp32 when fp16 overflows."""
        if self.fast_vae is None or self.vae_overflowed:
            return decode_latents(self._fallback_vae(), latents)
        shape = tuple(latents.shape)
        ready = shape in self.vae_ready
        if not ready:
            self._queue(('vae', shape))
        try:
            if ready:
                return decode_latents(self.fast_vae, latents)
            with force_eager():
                return decode_latents(self.fast_vae, latents)
        except EngineError:
            LOG.warning('fp16 VAE decode overflowed; decoding in float32 from now on')
            self.vae_overflowed = True
            return decode_latents(self._fallback_vae(), latents)

    def _fallback_vae(self):
        """Return the engine's own VAE (fp32 when the engine upcast it) to fall back on."""
        return self.fallback_vae

    def _queue(self, unit):
        """Add one unit of preparation work (once)."""
        if not self.enabled:
            return
        with self._pending_lock:
            if unit in self._pending:
                return
            self._pending.append(unit)
        if self.on_work is not None:
            self.on_work()

    def _on_missing(self, graphed, key):
        """Queue a UNet signature a goal met without a graph (prepared later)."""
        self._queue(('unet', graphed, key))

    def queue_size(self, width, height, variants=None):
        """
        Queue everything an image of width x height needs (both UNets, the VAE decode).

        One UNet signature per (batch, tokens) of `variants` (default: the configured
        prepare_variants) for each UNet.
        """
        pooled = self.base.text_encoder_2.config.projection_dim
        if variants is None:
            variants = self.config.prepare_variants
        for graphed in self.graphed:
            if isinstance(graphed, GraphedUNet):
                for batch, tokens in variants:
                    self._queue(('unet', graphed, unet_key(graphed.unet, width, height,
                                                           pooled, batch, tokens)))
        if self.fast_vae is not None:
            channels = self.fast_vae.config.latent_channels
            self._queue(('vae', (1, channels, height // 8, width // 8)))
        self._queue(('size', (width, height)))

    def has_work(self):
        """Whether preparation work is pending."""
        return bool(self._pending) and self.enabled

    def prepare_next(self, should_yield=None):
        """
        Do one unit of pending work; return True if one was done.

        Raises Yielded (the unit stays pending) when `should_yield()` turns true at a stage
        boundary. Any other failure propagates: the caller switches the fast path off.
        """
        with self._pending_lock:
            if not self._pending or not self.enabled:
                return False
            unit = self._pending[0]
        self.faults.check('prepare')
        kind, start = unit[0], time.monotonic()
        if kind == 'unet':
            unit[1].prepare(unit[2], lambda run: self._compile_run(run, should_yield))
        elif kind == 'vae':
            self._prepare_vae(unit[1], should_yield)
        else:
            self.prepared_sizes.append(unit[1])
        with self._pending_lock:
            if unit in self._pending:
                self._pending.remove(unit)
        name = f'prepare_{kind}_sec'
        self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - start, 3)
        return True

    def _compile_run(self, run, should_yield):
        """Run `run()` once with yield checks at the UNets' stage boundaries."""
        self._yield_check = should_yield
        try:
            with torch.no_grad():  # as the pipelines call the UNet: the same Dynamo guards
                run()
        finally:
            self._yield_check = None

    def _prepare_vae(self, shape, should_yield):
        """Compile the fp16 VAE decoder for latents of `shape`."""
        if should_yield is not None and should_yield():
            raise Yielded()
        vae = self.fast_vae
        latents = torch.randn(shape, generator=torch.Generator('cpu').manual_seed(0)).to(
            device=vae.device, dtype=vae.dtype)
        self._yield_check = should_yield
        try:
            with torch.inference_mode():  # as decode_latents calls it
                vae.decode(latents, return_dict=False)
        finally:
            self._yield_check = None
        self.vae_ready.add(shape)

    def _stage_hook(self, _module, _args):
        """Forward pre-hook on each UNet stage: stop preparing when a goal is waiting."""
        check = self._yield_check
        if check is not None and check():
            raise Yielded()

    def install_stage_hooks(self, modules):
        """Let preparation yield between the down/mid/up stages (eager modules) of each."""
        for unet in modules:
            stages = list(getattr(unet, 'down_blocks', [])) + list(
                getattr(unet, 'up_blocks', []))
            if getattr(unet, 'mid_block', None) is not None:
                stages.append(unet.mid_block)
            for stage in stages:
                self._hooks.append(stage.register_forward_pre_hook(self._stage_hook))

    def disable(self, reason):
        """Undo everything applied (fast_path/switching.py); return whether it was on."""
        return undo(self, reason)
