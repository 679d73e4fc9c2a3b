# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The GPU fast path on a CPU: it must change nothing, and its pieces must fall back cleanly."""

import os

from engine_fixtures import tiny_engine, tiny_request
import numpy as np

from sdxl_ros.engine import EngineConfig
from sdxl_ros.engine.acceleration import (accelerate_pipelines, Accelerator, compile_regions,
                                          configure_compile_cache, fast_path_applies,
                                          GraphedEncoder, GraphedUNet, uncompile_regions)
import torch


def test_fast_path_applies_only_to_resident_cuda():
    """CUDA + fast_path + resident: yes; CPU, fast_path off or any offload mode: no."""
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    assert fast_path_applies(EngineConfig(fast_path=True), cuda)
    assert not fast_path_applies(EngineConfig(fast_path=True), cpu)
    assert not fast_path_applies(EngineConfig(fast_path=False), cuda)
    for mode in ('model_offload', 'sequential_offload'):
        assert not fast_path_applies(EngineConfig(fast_path=True, memory_mode=mode), cuda)


def test_cpu_engine_is_untouched_and_gives_the_same_image():
    """fast_path=True on a CPU applies nothing and renders bit-identical images to False."""
    fast = tiny_engine(fast_path=True)
    plain = tiny_engine(fast_path=False)
    accel = fast.accelerator
    assert accel is not None and not accel.enabled and accel.applied == []
    assert 'CUDA' in accel.reason
    unet = fast.base_pipeline.unet
    assert 'forward' not in unet.__dict__
    assert all(getattr(m, '_compiled_call_impl', None) is None for m in unet.modules())
    a = fast.generate(tiny_request(seed=11)).images[0]
    b = plain.generate(tiny_request(seed=11)).images[0]
    assert a.dtype == np.uint8 and np.array_equal(a, b)


def test_accelerate_pipelines_is_a_noop_when_fast_is_off():
    """With fast_path off the Accelerator says so and decodes like the engine."""
    engine = tiny_engine(fast_path=False)
    accel = accelerate_pipelines(engine.base_pipeline, engine.refiner_pipeline,
                                 engine.config, torch.device('cuda'))
    assert not accel.enabled and accel.reason == 'fast off'
    assert accel.warm_up(engine) == 0.0
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    from sdxl_ros.engine.decoding import decode_latents
    expected = decode_latents(engine.base_pipeline.vae, latents)[0]
    assert np.array_equal(accel.decode(latents)[0], expected)


def _unet_inputs(unet, batch=2):
    """CFG-shaped inputs for the tiny UNet."""
    config = unet.config
    gen = torch.Generator().manual_seed(3)
    text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    sample = torch.randn(batch, config.in_channels, 8, 8, generator=gen)
    hidden = torch.randn(batch, 77, config.cross_attention_dim, generator=gen)
    cond = {'text_embeds': torch.randn(batch, text_dim, generator=gen),
            'time_ids': torch.ones(batch, 6)}
    return sample, torch.tensor(500.0), hidden, cond


def test_graphed_unet_falls_back_to_the_plain_forward_on_cpu():
    """CPU tensors cannot be graphed: the wrapper calls the module's own forward, same result."""
    engine = tiny_engine(fast_path=False)
    unet = engine.base_pipeline.unet
    sample, t, hidden, cond = _unet_inputs(unet)
    with torch.no_grad():
        expected = unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=cond,
                        return_dict=False)[0]
        graphed = GraphedUNet(unet)
        graphed.install()
        try:
            got = unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=cond,
                       return_dict=False)[0]
            wrapped = unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=cond)
        finally:
            graphed.uninstall()
    assert torch.equal(expected, got) and torch.equal(expected, wrapped.sample)
    assert graphed.fallbacks == 2 and graphed.replays == 0 and not graphed.graphs
    assert 'forward' not in unet.__dict__


def test_graphed_encoder_falls_back_to_the_plain_forward_on_cpu():
    """A text encoder wrapped for graphs gives the same outputs through its own forward."""
    pipe = tiny_engine(fast_path=False).base_pipeline
    ids = pipe.tokenizer_2('a robot', padding='max_length', max_length=77,
                           return_tensors='pt').input_ids
    encoder = pipe.text_encoder_2
    with torch.no_grad():
        expected = encoder(ids, output_hidden_states=True)
        graphed = GraphedEncoder(encoder)
        graphed.install()
        try:
            got = encoder(ids, output_hidden_states=True)
        finally:
            graphed.uninstall()
    assert type(got) is type(expected)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got.hidden_states[-2], expected.hidden_states[-2])
    assert graphed.replays == 0 and not graphed.graphs
    assert 'forward' not in encoder.__dict__


def test_graph_signature_refuses_what_a_graph_cannot_serve():
    """No signature (so no graph) for CPU tensors, gradients or missing conditioning."""
    sample, t, hidden, cond = _unet_inputs(tiny_engine(fast_path=False).base_pipeline.unet)
    with torch.no_grad():
        assert GraphedUNet._signature(sample, t, hidden, cond, False) is None
        assert GraphedUNet._signature(sample, t, hidden, None, False) is None
        assert GraphedUNet._signature(sample, 500, hidden, cond, False) is None


def test_compile_regions_marks_blocks_and_can_be_undone():
    """Regional compile wraps each repeated block (lazily) and uncompile restores them."""
    unet = tiny_engine(fast_path=False).base_pipeline.unet
    count = compile_regions(unet)
    names = {type(m).__name__ for m in unet.modules()
             if getattr(m, '_compiled_call_impl', None) is not None}
    assert count > 0 and names <= {'ResnetBlock2D', 'Transformer2DModel', 'Downsample2D',
                                   'Upsample2D'}
    uncompile_regions(unet)
    assert all(getattr(m, '_compiled_call_impl', None) is None for m in unet.modules())


def test_compile_cache_folder(tmp_path, monkeypatch):
    """The Inductor cache goes to the given folder (persistent across restarts)."""
    monkeypatch.delenv('TORCHINDUCTOR_CACHE_DIR', raising=False)
    folder = tmp_path / 'inductor'
    assert configure_compile_cache(str(folder)) == str(folder)
    assert folder.is_dir() and os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(folder)


_MARKER_SCRIPT = """
import sys
sys.path.insert(0, {test_dir!r})
from engine_fixtures import tiny_engine
from sdxl_ros.engine.acceleration import Accelerator
engine = tiny_engine()
accel = Accelerator(engine.base_pipeline, engine.refiner_pipeline, enabled=True)
accel.cache_dir = {cache!r}
print(accel._warm_marker(engine, 64, 64))
"""


def test_warm_marker_is_the_same_in_every_process(tmp_path):
    """The 'caches are warm' marker must not depend on the process (set order, ids)."""
    import subprocess
    import sys
    script = _MARKER_SCRIPT.format(test_dir=os.path.dirname(__file__), cache=str(tmp_path))
    paths = {subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            check=True, timeout=300).stdout.strip().splitlines()[-1]
             for _ in range(2)}
    assert len(paths) == 1
    path = paths.pop()
    assert path.startswith(str(tmp_path / 'sdxl_ros_warm'))
    engine = tiny_engine()
    other = Accelerator(engine.base_pipeline, None, enabled=True)
    other.cache_dir = str(tmp_path)
    assert other._warm_marker(engine, 64, 64) != path  # no refiner: another warm-up


def test_serial_compile_only_when_warm_and_restored():
    """Warm caches compile in-process; the previous thread count comes back afterwards."""
    import torch._inductor.config as inductor_config
    from sdxl_ros.engine.acceleration import _serial_compile
    before = inductor_config.compile_threads
    with _serial_compile(False):
        assert inductor_config.compile_threads == before
    with _serial_compile(True):
        assert inductor_config.compile_threads == 1
    assert inductor_config.compile_threads == before
    try:
        with _serial_compile(True):
            raise ValueError('boom')
    except ValueError:
        pass
    assert inductor_config.compile_threads == before
