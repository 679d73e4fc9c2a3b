# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The GPU fast path: applied once at load, the same pictures within fp16 noise, faster.

What `accelerate_pipelines` does on a CUDA device with `EngineConfig.fast_path` and the models
resident (elsewhere it changes nothing and `decode` is the plain engine decode):

- fused QKV projections and channels_last memory layout for both UNets and the VAE;
- regional `torch.compile` (default mode, static shapes) of the UNets' repeated blocks
  (ResnetBlock2D, Transformer2DModel, Down/Upsample2D) and of the VAE decoder: a few distinct
  graphs instead of two whole UNets, so a cold compile takes a fraction of a whole-model
  compile and a restart with warm caches only re-traces small blocks;
- each UNet call (one CFG step) captured once per input shape as a CUDA graph and replayed:
  no Python, no guard checks and no launch gaps inside a step; the text encoders likewise;
- cuDNN's fused attention preferred over flash attention (faster alone on Hopper for SDXL's
  4096-token self-attention with the same error against fp32; end to end within the
  machine-to-machine spread: bench/NOTES.md);
- VAE decode in fp16 (an fp16 copy of the VAE) instead of the fp32 upcast; the NaN/inf check
  stays, and an overflowing decode is redone on the fp32 VAE (and that VAE is then used
  directly from then on), so an image is never black or NaN;
- compile caches (Inductor FX graph cache, AOTAutograd cache) in a persistent folder,
  `~/.cache/sdxl_ros/torchinductor` unless `TORCHINDUCTOR_CACHE_DIR` is set;
- a warm-up generation at load (`warm_up`), so the first goal pays no compile or capture;
  once a warm-up has filled the caches (a marker file says so), the next start loads the
  compiled code in-process instead of starting Inductor's pool of compile workers.

Environment knobs for experiments (defaults are the measured best, see bench/NOTES.md):
`SDXL_ROS_COMPILE` = regional | none; `SDXL_ROS_CUDA_GRAPHS` = 1 | 0;
`SDXL_ROS_GRAPH_TEXT` = 1 | 0 (CUDA graphs for the text encoders too);
`SDXL_ROS_CUDNN_BENCHMARK` = 0 | 1 (cuDNN convolution autotuning: no faster per image on
an H200, and 13 s more at every start since it is not cached across processes);
`SDXL_ROS_COMPILE_MODE` = a torch.compile mode (default: default);
`SDXL_ROS_SDPA` = cudnn | flash | default (attention kernel SDPA tries first);
`SDXL_ROS_COMPILE_REGIONS` = comma-separated block classes to compile (default: all four);
`SDXL_ROS_COMPILE_TEXT` = 0 | 1 (also compile the two text encoders; off by default).
"""

import contextlib
import copy
import logging
import os
import time

from sdxl_ros.engine.decoding import decode_latents

LOG = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'sdxl_ros', 'torchinductor')
# Block classes compiled one by one ("regional compilation"); everything else stays eager and
# is covered by the CUDA graph of the whole UNet call.
REGION_CLASSES = ('ResnetBlock2D', 'Transformer2DModel', 'Downsample2D', 'Upsample2D')
# Distinct static shapes per block class: SDXL base + refiner + VAE need about 40 variants.
RECOMPILE_LIMIT = 128
# Keyword arguments of UNet2DConditionModel.forward the graphed path supports when None.
_UNSUPPORTED_WHEN_SET = ('class_labels', 'timestep_cond', 'attention_mask',
                         'cross_attention_kwargs', 'down_block_additional_residuals',
                         'mid_block_additional_residual', 'down_intrablock_additional_residuals',
                         'encoder_attention_mask')


def _env(name, default):
    """Read an environment knob."""
    return os.environ.get(name, default).strip().lower()


def fast_path_applies(config, device):
    """Whether the GPU fast path runs: CUDA, `fast_path` on and models resident (no offload)."""
    return (bool(config.fast_path) and device is not None and getattr(device, 'type', '') == 'cuda'
            and config.memory_mode == 'resident')


def configure_compile_cache(cache_dir=None):
    """Point Inductor's on-disk caches at a persistent folder; return the folder used."""
    folder = cache_dir or os.environ.get('TORCHINDUCTOR_CACHE_DIR') or os.path.expanduser(
        DEFAULT_CACHE_DIR)
    os.makedirs(folder, exist_ok=True)
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = folder
    import torch._inductor.config as inductor_config
    inductor_config.fx_graph_cache = True
    try:
        import torch._functorch.config as functorch_config
        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # pragma: no cover - older torch
        pass
    return folder


def _raise_recompile_limits():
    """Let one block class hold a compiled variant for every distinct shape it meets."""
    import torch._dynamo.config as dynamo_config
    for name in ('recompile_limit', 'cache_size_limit'):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    for name in ('accumulated_recompile_limit', 'accumulated_cache_size_limit'):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name,
                    max(getattr(dynamo_config, name), 8 * RECOMPILE_LIMIT))


def _prefer_sdpa_backend(choice):
    """Put the chosen attention kernel first in SDPA's priority order (process-wide)."""
    if choice in ('', 'default'):
        return False
    import torch
    from torch.nn.attention import SDPBackend
    first = int({'cudnn': SDPBackend.CUDNN_ATTENTION,
                 'flash': SDPBackend.FLASH_ATTENTION}[choice])
    current = [int(b) for b in torch._C._get_sdp_priority_order()]
    torch._C._set_sdp_priority_order([first] + [b for b in current if b != first])
    return True


@contextlib.contextmanager
def _serial_compile(warm):
    """
    With warm caches, load compiled code in this process instead of starting compile workers.

    Inductor starts a pool of compile worker processes (one per core, each importing torch)
    as soon as anything is compiled, even when every graph then comes from the cache; on a
    warm restart that pool only competes with the main process for the CPU (bench/NOTES.md).
    A cold cache keeps the parallel pool, and so do later cache misses (new image sizes).
    """
    if not warm:
        yield
        return
    import torch._inductor.config as inductor_config
    previous = inductor_config.compile_threads
    inductor_config.compile_threads = 1
    try:
        yield
    finally:
        inductor_config.compile_threads = previous


def compile_regions(module, mode='default', classes=REGION_CLASSES):
    """Compile `module`'s blocks of the given classes in place; return how many."""
    count = 0
    for sub in module.modules():
        if type(sub).__name__ in classes:
            kwargs = {'dynamic': False}
            if mode and mode != 'default':
                kwargs['mode'] = mode
            sub.compile(**kwargs)
            count += 1
    return count


def uncompile_regions(module):
    """Undo `compile_regions` (nn.Module.compile keeps the compiled call in one attribute)."""
    for sub in module.modules():
        if getattr(sub, '_compiled_call_impl', None) is not None:
            sub._compiled_call_impl = None


class _GraphedModule:
    """What both graph wrappers share: the module, its graphs, and (un)installing them."""

    def __init__(self, module, pool=None, max_graphs=4):
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
    Replays one CUDA graph per input signature in place of `unet.forward`.

    The first call with a new signature (shapes, dtypes, return_dict) runs the module twice
    on a side stream (compiling the regions), captures one call into a graph and
    replays it. Later calls copy the inputs into the graph's static buffers and replay. Calls
    the graph cannot serve (extra conditioning, gradients, CPU tensors) run the plain forward.
    """

    def __init__(self, unet, pool=None, max_graphs=4):
        """Wrap `unet` (installed with `install`); graphs share memory `pool` if given."""
        super().__init__(unet, pool, max_graphs)
        self.fallbacks = 0

    @property
    def unet(self):
        """Return the wrapped UNet."""
        return self.module

    @staticmethod
    def _signature(sample, timestep, encoder_hidden_states, added_cond_kwargs, return_dict):
        """Hashable description of the inputs, or None when the graph cannot serve them."""
        import torch
        if torch.is_grad_enabled() or not torch.is_tensor(timestep):
            return None
        if not added_cond_kwargs or set(added_cond_kwargs) != {'text_embeds', 'time_ids'}:
            return None
        tensors = (sample, timestep, encoder_hidden_states, added_cond_kwargs['text_embeds'],
                   added_cond_kwargs['time_ids'])
        if not all(torch.is_tensor(t) and t.is_cuda for t in tensors):
            return None
        return tuple((tuple(t.shape), t.dtype) for t in tensors) + (bool(return_dict),)

    def forward(self, sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=None,
                return_dict=True, **kwargs):
        """UNet2DConditionModel.forward, served from a CUDA graph when possible."""
        extra = args or any(kwargs.get(name) is not None for name in _UNSUPPORTED_WHEN_SET)
        key = None if extra else self._signature(sample, timestep, encoder_hidden_states,
                                                 added_cond_kwargs, return_dict)
        if key is None or (key not in self.graphs and len(self.graphs) >= self.max_graphs):
            self.fallbacks += 1
            return self._plain(sample, timestep, encoder_hidden_states, *args,
                               added_cond_kwargs=added_cond_kwargs, return_dict=return_dict,
                               **kwargs)
        inputs = (sample, timestep, encoder_hidden_states, added_cond_kwargs['text_embeds'],
                  added_cond_kwargs['time_ids'])
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(inputs)
        graph, static_in, static_out = entry
        for buffer, value in zip(static_in, inputs):
            buffer.copy_(value, non_blocking=True)
        graph.replay()
        self.replays += 1
        out = static_out.clone()
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
        return UNet2DConditionOutput(sample=out)

    def _run(self, static_in):
        """One plain UNet call on the static buffers; returns the noise prediction."""
        sample, timestep, hidden, text_embeds, time_ids = static_in
        return self._plain(sample, timestep, hidden,
                           added_cond_kwargs={'text_embeds': text_embeds, 'time_ids': time_ids},
                           return_dict=False)[0]

    def _capture(self, inputs):
        """Capture one call on copies of `inputs`; return (graph, inputs, output)."""
        static_in = tuple(t.detach().clone() for t in inputs)
        graph, static_out = capture_graph(lambda: self._run(static_in), self.pool)
        return graph, static_in, static_out


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
    with torch.cuda.graph(graph, pool=pool):
        out = run()
    return graph, out


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
    Replays a CUDA graph in place of a text encoder's forward (fixed 77-token input).

    The text encoders are small but launch-bound (hundreds of tiny kernels per call), so a
    graph turns tens of milliseconds into a few. Only calls with one CUDA `input_ids` tensor
    and plain keyword flags are graphed; anything else, or a capture that fails (a host sync
    inside the model), runs the module's own forward from then on.
    """

    def __init__(self, module, pool=None, max_graphs=4):
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


class Accelerator:
    """What the fast path applied to one loaded model pair, and the fast VAE decode."""

    def __init__(self, base=None, refiner=None, enabled=False, reason=''):
        """Start with nothing applied; `accelerate_pipelines` fills it in."""
        self.base = base
        self.refiner = refiner
        self.enabled = enabled
        self.reason = reason
        self.applied = []
        self.cache_dir = ''
        self.fast_vae = None
        self.fallback_vae = base.vae if base is not None else None
        self.vae_overflowed = False
        self.graphed = []
        self.compiled = []
        self.timings = {}

    def summary(self):
        """Return a dict for logs and benchmarks."""
        return {'enabled': self.enabled, 'reason': self.reason, 'applied': list(self.applied),
                'cache_dir': self.cache_dir, 'vae_overflowed': self.vae_overflowed,
                'graphs': [len(g.graphs) for g in self.graphed],
                'replays': [g.replays for g in self.graphed],
                'timings': dict(self.timings)}

    def decode(self, latents):
        """Decode latents to uint8 RGB images: fp16 when safe, fp32 when fp16 overflows."""
        from sdxl_ros.engine.errors import EngineError
        if self.fast_vae is None or self.vae_overflowed:
            return decode_latents(self._fallback_vae(), latents)
        try:
            return decode_latents(self.fast_vae, latents)
        except EngineError:
            LOG.warning('fp16 VAE decode overflowed; decoding in float32 from now on')
            self.vae_overflowed = True
            return decode_latents(self._fallback_vae(), latents)

    def _fallback_vae(self):
        """Return the engine's own VAE (fp32 when the engine upcast it) to fall back on."""
        return self.fallback_vae

    def warm_up(self, engine, width=1024, height=1024):
        """Run one short generation so compile, cuDNN tuning and graph capture happen now."""
        if not self.enabled:
            return 0.0
        from sdxl_ros.engine.request import GenerationRequest
        limits = engine.config.limits
        width = min(max(width, limits.min_side), limits.max_side)
        height = min(max(height, limits.min_side), limits.max_side)
        start = time.monotonic()
        request = GenerationRequest(prompt='warm-up', width=width, height=height, steps=5,
                                    seed=0, scheduler='Euler', refiner_switch=0.8)
        marker = self._warm_marker(engine, width, height)
        self.timings['cache_was_warm'] = os.path.exists(marker)
        try:
            with _serial_compile(self.timings['cache_was_warm']):
                engine.generate(request)
        except Exception as error:  # noqa: BLE001 - a fast path that fails is switched off
            LOG.warning('fast path warm-up failed (%s); continuing without it', error)
            self.disable(f'warm-up failed: {error}')
            return 0.0
        self.timings['warm_up_sec'] = time.monotonic() - start
        with open(marker, 'w') as stream:
            stream.write(f'{self.timings["warm_up_sec"]:.1f} s\n')
        return self.timings['warm_up_sec']

    def _warm_marker(self, engine, width, height):
        """Return the file that says this exact warm-up has filled the compile caches before."""
        import hashlib
        import json
        import torch
        pipes = [p for p in (self.base, self.refiner) if p is not None]
        # Private config entries ('_use_default_values') come from sets: not a stable order.
        configs = [{k: v for k, v in dict(m.config).items() if not k.startswith('_')}
                   for m in [p.unet for p in pipes] + [self.base.vae]]
        gpu = (torch.cuda.get_device_name(engine.device) if engine.device.type == 'cuda'
               else engine.device.type)
        key = json.dumps({
            'torch': torch.__version__, 'gpu': gpu, 'size': [width, height],
            'dtype': str(engine.dtype), 'models': configs,
            'applied': self.applied,
            'knobs': {k: v for k, v in os.environ.items() if k.startswith('SDXL_ROS_')}},
            sort_keys=True, default=str)
        folder = os.path.join(self.cache_dir or configure_compile_cache(), 'sdxl_ros_warm')
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, hashlib.sha256(key.encode()).hexdigest()[:24])

    def disable(self, reason):
        """Undo graphs and compilation; keep the (harmless) layout and fusion changes."""
        for graphed in self.graphed:
            graphed.uninstall()
        for module in self.compiled:
            uncompile_regions(module)
        self.graphed, self.compiled = [], []
        self.fast_vae = None
        self.enabled = False
        self.reason = reason


def accelerate_pipelines(base, refiner, config, device):
    """
    Apply the fast path to loaded pipelines (once); return an Accelerator.

    A no-op (with the reason in `Accelerator.reason`) on the CPU, with `fast_path` off, or when
    the models are offloaded: offloading moves weights between devices, which CUDA graphs
    and compiled kernels cannot follow.
    """
    if not fast_path_applies(config, device):
        reason = ('fast off' if not config.fast_path else
                  'not a CUDA device' if getattr(device, 'type', '') != 'cuda' else
                  f'memory_mode {config.memory_mode}')
        return Accelerator(base, refiner, enabled=False, reason=reason)
    import torch
    start = time.monotonic()
    accel = Accelerator(base, refiner, enabled=True)
    accel.cache_dir = configure_compile_cache()
    if _env('SDXL_ROS_CUDNN_BENCHMARK', '0') in ('1', 'true', 'yes'):
        torch.backends.cudnn.benchmark = True
        accel.applied.append('cudnn.benchmark')
    sdpa = _env('SDXL_ROS_SDPA', 'cudnn')
    try:
        if _prefer_sdpa_backend(sdpa):
            accel.applied.append('sdpa:' + sdpa)
    except (AttributeError, KeyError, RuntimeError) as error:
        LOG.warning('cannot prefer SDPA backend %r: %s', sdpa, error)
    unets = [p.unet for p in (base, refiner) if p is not None]
    for unet in unets:
        unet.fuse_qkv_projections()
        unet.to(memory_format=torch.channels_last)
    accel.applied += ['fused_qkv', 'channels_last']

    vae = base.vae
    if vae.dtype == torch.float32 and getattr(config, 'dtype', '') in ('auto', 'float16'):
        fast_vae = copy.deepcopy(vae).to(torch.float16)
    else:
        fast_vae = vae
    fast_vae.fuse_qkv_projections()
    fast_vae.to(memory_format=torch.channels_last)
    accel.fast_vae = fast_vae
    accel.applied.append(f'vae_decode_{str(fast_vae.dtype).replace("torch.", "")}')

    compile_kind = _env('SDXL_ROS_COMPILE', 'regional')
    if compile_kind == 'regional':
        _raise_recompile_limits()
        mode = _env('SDXL_ROS_COMPILE_MODE', 'default')
        classes = tuple(name.strip() for name in os.environ.get(
            'SDXL_ROS_COMPILE_REGIONS', ','.join(REGION_CLASSES)).split(',') if name.strip())
        for unet in unets:
            compile_regions(unet, mode, classes)
            accel.compiled.append(unet)
        if _env('SDXL_ROS_COMPILE_TEXT', '0') in ('1', 'true', 'yes'):
            for encoder in (base.text_encoder, base.text_encoder_2):
                if encoder is not None:
                    encoder.compile(dynamic=False)
                    accel.compiled.append(encoder)
            accel.applied.append('compile_text_encoders')
        fast_vae.decoder.compile(dynamic=False)
        accel.compiled.append(fast_vae)
        accel.applied.append(f'compile_regional:{mode}')
    if _env('SDXL_ROS_CUDA_GRAPHS', '1') in ('1', 'true', 'yes'):
        pool = torch.cuda.graph_pool_handle()
        for unet in unets:
            graphed = GraphedUNet(unet, pool=pool)
            graphed.install()
            accel.graphed.append(graphed)
        accel.applied.append('cuda_graphs')
        if _env('SDXL_ROS_GRAPH_TEXT', '1') in ('1', 'true', 'yes'):
            encoders = {id(e): e for p in (base, refiner) if p is not None
                        for e in (p.text_encoder, p.text_encoder_2) if e is not None}
            text_pool = torch.cuda.graph_pool_handle()  # kept apart from the UNets' pool
            for encoder in encoders.values():
                graphed = GraphedEncoder(encoder, pool=text_pool)
                graphed.install()
                accel.graphed.append(graphed)
            accel.applied.append('cuda_graphs_text')
    accel.timings['apply_sec'] = time.monotonic() - start
    LOG.info('fast path: %s', ', '.join(accel.applied))
    return accel
