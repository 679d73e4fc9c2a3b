# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The GPU fast path: the same pictures within fp16 noise, faster; it degrades, never breaks.

`decide` says from plain facts (device, Triton importable, torch features: `probe_facts`)
whether the fast path can run; when it cannot, the engine runs plain diffusers and one log
line says why and what it costs. When it can, `accelerate_pipelines` applies, at load:

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
preparation. Preparing (compile + capture for one signature) runs in the engine's background
thread between goals (`engine/preparation.py`), first for `AccelerationConfig.prepare_sizes`,
then for what goals met; it yields to a waiting goal at the next UNet stage. A failure while
applying, preparing or replaying switches the fast path off completely (`disable`: plain
diffusers modules again, bit-identical to fast_path false) and the goal is served plainly.
"""

import copy
from dataclasses import dataclass
import logging
import os
import threading
import time

from sdxl_ros.engine import torch_internals
from sdxl_ros.engine.decoding import decode_latents

LOG = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'sdxl_ros', 'torchinductor')
# Distinct static shapes per block class: SDXL base + refiner + VAE need about 40 variants a
# size; nine standard sizes and long prompts need more.
RECOMPILE_LIMIT = 512
# Graphs kept per UNet: nine standard sizes, with and without CFG, and some long prompts.
MAX_GRAPHS = 48
# What it costs when the fast path is off on a GPU (bench: stock eager / ours on an H200).
OFF_COST = 'images ~2x slower (plain diffusers)'
# Keyword arguments of UNet2DConditionModel.forward the graphed path supports when None.
_UNSUPPORTED_WHEN_SET = ('class_labels', 'timestep_cond', 'attention_mask',
                         'cross_attention_kwargs', 'down_block_additional_residuals',
                         'mid_block_additional_residual', 'down_intrablock_additional_residuals',
                         'encoder_attention_mask')
# Compute capability from which GPUs have FP8 tensor cores (Ada 8.9, Hopper 9.0, ...).
FP8_CAPABILITY = (8, 9)


class Yielded(Exception):
    """Preparation stopped at a stage boundary because a goal is waiting (resumed later)."""


class InjectedFault(RuntimeError):
    """Raised by the `fault_at` test hook."""


# ------------------------------------------------------------------- the decision
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
    import torch
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


def _torchao_float8_api():
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
        _torchao_float8_api()
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


def force_eager():
    """Context in which compiled regions run as plain eager code (nothing compiles)."""
    import torch
    return torch.compiler.set_stance('force_eager')


# ------------------------------------------------------------------- compiling
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


# ------------------------------------------------------------------- CUDA graphs
def capture_graph(run, pool=None):
    """Run `run()` twice on a side stream (compile, tune), then capture it; return both."""
    import torch
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    # thread_local: a capture in the preparer thread is not broken by (and does not break)
    # CUDA calls another thread of the process makes meanwhile.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode='thread_local'):
        out = run()
    return graph, out


class _GraphedModule:
    """What both graph wrappers share: the module, its graphs, and (un)installing them."""

    def __init__(self, module, pool=None, max_graphs=MAX_GRAPHS):
        """Wrap `module` (installed with `install`); graphs share memory `pool` if given."""
        self.module = module
        self.pool = pool
        self.max_graphs = max_graphs
        self.graphs = {}
        self.replays = 0

    def install(self):
        """Route `module(...)` calls through this wrapper's `forward`."""
        self.module.forward = self.forward

    def uninstall(self):
        """Restore the module's own forward and free the graphs."""
        if self.module.__dict__.get('forward') is not None:
            del self.module.forward
        self.graphs.clear()

    def _plain(self, *args, **kwargs):
        """Call the module's own forward (bypassing the instance attribute)."""
        return type(self.module).forward(self.module, *args, **kwargs)

    def forward(self, *args, **kwargs):
        """Serve one call (subclasses)."""
        raise NotImplementedError


class GraphedUNet(_GraphedModule):
    """
    Replays one CUDA graph per prepared input signature in place of `unet.forward`.

    A call whose signature has a graph copies its inputs into the graph's static buffers and
    replays it. Any other call runs the UNet's own forward eagerly (compiled regions
    bypassed, so nothing compiles inside a goal) and, when a graph could serve it, reports
    its signature to `on_missing` so that it is prepared between goals (`prepare`).
    """

    def __init__(self, unet, pool=None, max_graphs=MAX_GRAPHS, on_missing=None,
                 capture=True):
        """Wrap `unet`; `capture` False (a CPU under simulate_cuda) prepares without graphs."""
        super().__init__(unet, pool, max_graphs)
        self.fallbacks = 0
        self.on_missing = on_missing
        self.capture = capture
        self.before_call = None  # test hook (fault_at)

    @property
    def unet(self):
        """Return the wrapped UNet."""
        return self.module

    @staticmethod
    def signature_of(sample, timestep, encoder_hidden_states, added_cond_kwargs, return_dict):
        """
        Hashable description of the inputs, or None when a graph cannot serve them.

        The timestep is graphed as a float32 tensor whatever the scheduler's dtype: the UNet's
        time projection converts it to float32 first, so the result is the same.
        """
        import torch
        if torch.is_grad_enabled() or not torch.is_tensor(timestep):
            return None
        if not added_cond_kwargs or set(added_cond_kwargs) != {'text_embeds', 'time_ids'}:
            return None
        tensors = (sample, encoder_hidden_states, added_cond_kwargs['text_embeds'],
                   added_cond_kwargs['time_ids'])
        if not all(torch.is_tensor(t) and t.is_cuda for t in tensors) or not timestep.is_cuda:
            return None
        return ((tuple(sample.shape), sample.dtype), (tuple(timestep.shape), torch.float32)) \
            + tuple((tuple(t.shape), t.dtype) for t in tensors[1:]) + (bool(return_dict),)

    def forward(self, sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=None,
                return_dict=True, **kwargs):
        """UNet2DConditionModel.forward, served from a CUDA graph when one is prepared."""
        if self.before_call is not None:
            self.before_call()
        extra = args or any(kwargs.get(name) is not None for name in _UNSUPPORTED_WHEN_SET)
        key = None if extra else self.signature_of(sample, timestep, encoder_hidden_states,
                                                   added_cond_kwargs, return_dict)
        entry = self.graphs.get(key) if key is not None else None
        if entry is None:
            self.fallbacks += 1
            if key is not None and self.on_missing is not None \
                    and len(self.graphs) < self.max_graphs:
                self.on_missing(self, key)
            with force_eager():
                return self._plain(sample, timestep, encoder_hidden_states, *args,
                                   added_cond_kwargs=added_cond_kwargs,
                                   return_dict=return_dict, **kwargs)
        graph, static_in, static_out = entry
        inputs = (sample, timestep, encoder_hidden_states, added_cond_kwargs['text_embeds'],
                  added_cond_kwargs['time_ids'])
        for buffer, value in zip(static_in, inputs):
            buffer.copy_(value, non_blocking=True)
        graph.replay()
        self.replays += 1
        out = static_out.clone()
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
        return UNet2DConditionOutput(sample=out)

    def _run(self, static_in, return_dict=False):
        """One plain UNet call on the static buffers; returns the noise prediction."""
        sample, timestep, hidden, text_embeds, time_ids = static_in
        return self._plain(sample, timestep, hidden,
                           added_cond_kwargs={'text_embeds': text_embeds, 'time_ids': time_ids},
                           return_dict=False)[0]

    def inputs_for(self, key):
        """Random static inputs with signature `key` (a graph depends on shapes, not values)."""
        import torch
        device = self.unet.device
        gen = torch.Generator('cpu').manual_seed(0)
        tensors = []
        for index, (shape, dtype) in enumerate(key[:5]):
            if index == 1:
                tensors.append(torch.full(shape, 500.0, dtype=dtype, device=device))
            else:
                tensors.append(torch.randn(shape, generator=gen).to(device=device, dtype=dtype))
        return tuple(tensors)

    def prepare(self, key, compile_run):
        """Compile (inside `compile_run`, which may raise Yielded) and capture `key`."""
        if key in self.graphs:
            return False
        static_in = self.inputs_for(key)
        compile_run(lambda: self._run(static_in))  # compiles the blocks, may yield
        if self.capture:
            import torch
            with torch.no_grad():
                graph, static_out = capture_graph(lambda: self._run(static_in), self.pool)
            self.graphs[key] = (graph, static_in, static_out)
        else:
            self.graphs[key] = None  # compiled, nothing captured (CPU under simulate_cuda)
        return True

    def has_graph(self, key):
        """Whether `key` is served from a graph."""
        return self.graphs.get(key) is not None


def unet_key(unet, width, height, pooled, batch=2, tokens=77):
    """
    Return the graph signature the pipelines produce for `unet` at a size (CFG: batch 2).

    `pooled` is the pooled text embedding's width (text_encoder_2's projection_dim); the
    UNet's added-condition input is that plus one addition_time_embed_dim per time id.
    """
    import torch
    config = unet.config
    dtype = unet.dtype
    n_ids = (config.projection_class_embeddings_input_dim - pooled) \
        // config.addition_time_embed_dim
    return (((batch, config.in_channels, height // 8, width // 8), dtype),
            ((), torch.float32),
            ((batch, tokens, config.cross_attention_dim), dtype),
            ((batch, pooled), dtype), ((batch, n_ids), dtype), False)


def _clone_output(value):
    """Copy a graph's static output (tensor, tuple of tensors or a model output) for the caller."""
    import torch
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_clone_output(v) for v in value)
    if isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict dataclass
        return type(value)(**{k: _clone_output(v) for k, v in value.items()})
    return value


class GraphedEncoder(_GraphedModule):
    """
    Replays a CUDA graph in place of a text encoder's forward (one per token length).

    The text encoders are small but launch-bound (hundreds of tiny kernels per call), so a
    graph turns tens of milliseconds into a few. They are not compiled, so capturing a new
    length (a long prompt) inside a goal costs three encoder calls, not a compile. Only calls
    with one CUDA `input_ids` tensor and plain keyword flags are graphed; anything else, or a
    capture that fails (a host sync inside the model), runs the module's own forward.
    """

    def __init__(self, module, pool=None, max_graphs=8):
        """Wrap `module` (installed with `install`)."""
        super().__init__(module, pool, max_graphs)
        self.failed = set()

    def forward(self, input_ids=None, *args, **kwargs):
        """Run the encoder's forward, from a CUDA graph when possible."""
        import torch
        simple = all(v is None or isinstance(v, (bool, int, str)) for v in kwargs.values())
        if (args or not simple or not torch.is_tensor(input_ids) or not input_ids.is_cuda
                or torch.is_grad_enabled()):
            return self._plain(input_ids, *args, **kwargs)
        key = (tuple(input_ids.shape), input_ids.dtype, tuple(sorted(kwargs.items())))
        entry = self.graphs.get(key)
        if entry is None:
            if key in self.failed or len(self.graphs) >= self.max_graphs:
                return self._plain(input_ids, **kwargs)
            static_ids = input_ids.clone()
            try:
                graph, out = capture_graph(lambda: self._plain(static_ids, **kwargs),
                                           self.pool)
            except RuntimeError as error:
                LOG.warning('text encoder cannot be graphed (%s); running it eagerly',
                            str(error).splitlines()[0])
                self.failed.add(key)
                torch.cuda.synchronize()
                return self._plain(input_ids, **kwargs)
            entry = self.graphs[key] = (graph, static_ids, out)
        graph, static_ids, out = entry
        static_ids.copy_(input_ids, non_blocking=True)
        graph.replay()
        self.replays += 1
        return _clone_output(out)


# ------------------------------------------------------------------- the accelerator
class Accelerator:
    """What the fast path applied to one loaded model pair, its pending work and the decode."""

    def __init__(self, base=None, refiner=None, enabled=False, reason='', config=None):
        """Start with nothing applied; `accelerate_pipelines` fills it in."""
        from sdxl_ros.engine.config import AccelerationConfig
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

    # ---------------------------------------------------------------- decoding
    def decode(self, latents):
        """Decode latents to uint8 RGB images: fp16 when safe, fp32 when fp16 overflows."""
        from sdxl_ros.engine.errors import EngineError
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

    # ---------------------------------------------------------------- preparing
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

    def queue_size(self, width, height):
        """Queue everything an image of width x height needs (both UNets, the VAE decode)."""
        pooled = self.base.text_encoder_2.config.projection_dim
        for graphed in self.graphed:
            if isinstance(graphed, GraphedUNet):
                self._queue(('unet', graphed, unet_key(graphed.unet, width, height, pooled)))
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
        if self.config.fault_at == 'prepare':
            raise InjectedFault('fault_at prepare (test hook)')
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
        import torch
        self._yield_check = should_yield
        try:
            with torch.no_grad():  # as the pipelines call the UNet: the same Dynamo guards
                run()
        finally:
            self._yield_check = None

    def _prepare_vae(self, shape, should_yield):
        """Compile the fp16 VAE decoder for latents of `shape`."""
        import torch
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

    # ---------------------------------------------------------------- switching off
    def disable(self, reason):
        """Undo everything applied: the models are plain diffusers modules again."""
        import torch
        for graphed in self.graphed:
            graphed.uninstall()
        for module in self.compiled:
            uncompile_regions(module)
        for hook in self._hooks:
            hook.remove()
        for module in self.fused:
            if hasattr(module, 'unfuse_qkv_projections'):
                module.unfuse_qkv_projections()
        for module in self.channels_last:
            module.to(memory_format=torch.contiguous_format)
        self.graphed, self.compiled, self._hooks = [], [], []
        self.fused, self.channels_last = [], []
        with self._pending_lock:
            self._pending.clear()
        self.fast_vae = None
        self.vae_ready.clear()
        was = self.enabled
        self.enabled = False
        self.reason = reason
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
    import torch
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
        quantize, float8_config, per_row = _torchao_float8_api()
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
    if cfg.fault_at == 'apply':
        raise InjectedFault('fault_at apply (test hook)')

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
        if cfg.fault_at == 'goal':
            graphed.before_call = _raise_in_goal
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


def _raise_in_goal():
    """Raise inside a fast-path UNet call (the `fault_at='goal'` test hook)."""
    raise InjectedFault('fault_at goal (test hook)')
