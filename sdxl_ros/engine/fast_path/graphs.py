# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
CUDA graphs in place of the UNets' and text encoders' forward, one per input signature.

GPU-only: capture and replay need CUDA, so CI (CPU, `simulate_cuda`) exercises the
signatures, the eager fallback and the queueing, never a real capture or replay; those are
measured by bench/bench_sdxl.py on a GPU (bench/README.md).
"""

import logging

from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from sdxl_ros.engine.fast_path.compiling import force_eager

import torch

LOG = logging.getLogger(__name__)

# Graphs kept per UNet: nine standard sizes, with and without CFG, and some long prompts.
MAX_GRAPHS = 48
# Keyword arguments of UNet2DConditionModel.forward the graphed path supports when None.
_UNSUPPORTED_WHEN_SET = ('class_labels', 'timestep_cond', 'attention_mask',
                         'cross_attention_kwargs', 'down_block_additional_residuals',
                         'mid_block_additional_residual', 'down_intrablock_additional_residuals',
                         'encoder_attention_mask')


def capture_graph(run, pool=None):
    """Run `run()` twice on a side stream (compile, tune), then capture it; return both."""
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
    def signature_of(sample, timestep, encoder_hidden_states, added_cond_kwargs, return_dict,
                     cuda_only=True):
        """
        Hashable description of the inputs, or None when a graph cannot serve them.

        `cuda_only` False (a CPU under simulate_cuda) describes CPU tensors too, so that the
        queueing of what goals meet is tested without a GPU.

        The timestep is graphed as a float32 tensor whatever the scheduler's dtype: the UNet's
        time projection converts it to float32 first, so the result is the same.
        """
        if torch.is_grad_enabled() or not torch.is_tensor(timestep):
            return None
        if not added_cond_kwargs or set(added_cond_kwargs) != {'text_embeds', 'time_ids'}:
            return None
        tensors = (sample, encoder_hidden_states, added_cond_kwargs['text_embeds'],
                   added_cond_kwargs['time_ids'])
        if not all(torch.is_tensor(t) for t in tensors):
            return None
        if cuda_only and not (all(t.is_cuda for t in tensors) and timestep.is_cuda):
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
                                                   added_cond_kwargs, return_dict,
                                                   cuda_only=self.capture)
        entry = self.graphs.get(key) if key is not None else None
        if entry is None:
            self.fallbacks += 1
            if key is not None and key not in self.graphs and self.on_missing is not None \
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
        return UNet2DConditionOutput(sample=out)

    def _run(self, static_in, return_dict=False):
        """One plain UNet call on the static buffers; returns the noise prediction."""
        sample, timestep, hidden, text_embeds, time_ids = static_in
        return self._plain(sample, timestep, hidden,
                           added_cond_kwargs={'text_embeds': text_embeds, 'time_ids': time_ids},
                           return_dict=False)[0]

    def inputs_for(self, key):
        """Random static inputs with signature `key` (a graph depends on shapes, not values)."""
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
