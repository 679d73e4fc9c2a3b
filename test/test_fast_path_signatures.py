# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Which UNet signatures the fast path prepares (prepare_variants) and which goals meet.

On a CPU under `simulate_cuda` the graph wrappers describe each UNet call's signature and
queue the ones a goal met, so what gets prepared is asserted here on the accelerator's
pending units and prepared keys. Capturing and replaying the graphs, their speed and the GPU
memory the extra graphs take are measured on a GPU by bench/bench_sdxl.py's `signatures`
phase (issue 22), never here.
"""

from engine_fixtures import tiny_engine, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine import AccelerationConfig
from sdxl_ros.engine.config import DEFAULT_VARIANTS, parse_variant, variant_name
from sdxl_ros.engine.fast_path.graphs import unet_key
import torch

needs_set_stance = pytest.mark.skipif(
    not hasattr(torch.compiler, 'set_stance'),
    reason='the fast path needs torch.compiler.set_stance (torch >= 2.6); here it stays off')


def passthrough_backend(graph_module, _inputs):
    """Compile nothing: a torch.compile backend that runs the traced graph as it is."""
    return graph_module.forward


def fast_engine(sizes=(), variants=DEFAULT_VARIANTS):
    """Load a tiny CPU engine with the fast path simulated and nothing prepared yet."""
    return tiny_engine(fast_path=True, acceleration=AccelerationConfig(
        simulate_cuda=True, background_prepare=False, prepare_sizes=sizes,
        prepare_variants=variants, compile_backend=passthrough_backend))


def unet_units(accel):
    """Return the pending UNet units as (which UNet, batch, tokens, latent height, width)."""
    names = {id(g): n for g, n in zip(accel.graphed, ('base', 'refiner'))}
    return [(names[id(unit[1])], unit[2][0][0][0], unit[2][2][0][1]) + unit[2][0][0][2:]
            for unit in accel._pending if unit[0] == 'unet']


def prepared_keys(accel):
    """Return the signatures prepared for each UNet, keyed 'base' / 'refiner'."""
    return dict(zip(('base', 'refiner'), (set(g.graphs) for g in accel.graphed)))


def key_for(engine, which, width, height, batch, tokens):
    """Return the signature `unet_key` computes for one UNet of the engine."""
    pipe = engine.base_pipeline if which == 'base' else engine.refiner_pipeline
    pooled = engine.base_pipeline.text_encoder_2.config.projection_dim
    return unet_key(pipe.unet, width, height, pooled, batch, tokens)


def picture(height=64, width=96):
    """Return a smooth uint8 RGB test image."""
    rng = np.random.default_rng(3)
    return np.kron(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8),
                   np.ones((8, 8, 1), dtype=np.uint8))


def test_variants_read_as_batch_and_tokens():
    """A cfg variant is batch 2, nocfg batch 1; tokens are 77 a chunk; others are refused."""
    assert parse_variant('cfg') == (2, 77) and parse_variant('nocfg') == (1, 77)
    assert parse_variant(' CFG:154') == (2, 154) and parse_variant('nocfg:231') == (1, 231)
    assert [variant_name(*parse_variant(v)) for v in ('cfg', 'nocfg:154')] == \
        ['cfg', 'nocfg:154']
    for bad, reason in (('guided', 'not cfg or nocfg'), ('cfg:100', '77 per prompt chunk'),
                        ('cfg:0', '77 per prompt chunk'), ('nocfg:x', 'not cfg or nocfg'),
                        ('cfg:693', '77 to 616')):
        with pytest.raises(ValueError, match=reason):
            parse_variant(bad)
    config = AccelerationConfig(prepare_variants=('nocfg', (2, 154), 'cfg:154'))
    assert config.prepare_variants == ((1, 77), (2, 154))  # once each, in order
    assert AccelerationConfig().prepare_variants == ((2, 77),)  # today's default
    with pytest.raises(ValueError, match='not cfg or nocfg'):
        AccelerationConfig(prepare_variants=('cfg', 'turbo'))


@needs_set_stance
def test_prepare_sizes_queue_each_configured_variant():
    """Every size gets one unit per variant and UNet (batch, 77-token chunks), then its VAE."""
    engine = fast_engine(sizes=((64, 64), (96, 64)),
                         variants=('cfg', 'nocfg', 'cfg:154', 'nocfg:231'))
    accel = engine.accelerator
    expected = [(which, batch, tokens, h, w)
                for h, w in ((8, 8), (8, 12)) for which in ('base', 'refiner')
                for batch, tokens in ((2, 77), (1, 77), (2, 154), (1, 231))]
    assert unet_units(accel) == expected
    for unit in accel._pending:
        if unit[0] == 'unet':  # the whole signature is the one unet_key gives
            which = 'base' if unit[1] is accel.graphed[0] else 'refiner'
            sample_shape, hidden_shape = unit[2][0][0], unit[2][2][0]
            assert unit[2] == key_for(engine, which, sample_shape[3] * 8, sample_shape[2] * 8,
                                      sample_shape[0], hidden_shape[1])
    assert [u for u in accel._pending if u[0] != 'unet'] == [
        ('vae', (1, 4, 8, 8)), ('size', (64, 64)), ('vae', (1, 4, 8, 12)), ('size', (96, 64))]
    engine.prepare_fast_path()
    assert not accel.has_work() and accel.prepared_sizes == [(64, 64), (96, 64)]
    assert len(prepared_keys(accel)['base']) == len(prepared_keys(accel)['refiner']) == 8


@needs_set_stance
def test_default_variant_is_cfg_with_one_chunk():
    """Without prepare_variants a size prepares what it did before: batch 2, 77 tokens."""
    accel = fast_engine(sizes=((64, 64),)).accelerator
    assert unet_units(accel) == [('base', 2, 77, 8, 8), ('refiner', 2, 77, 8, 8)]


@needs_set_stance
@pytest.mark.parametrize('fields, base_met', [
    # CFG 1 (few-step models): the UNet runs once a step on the prompt alone.
    ({'guidance_scale': 1.0}, [(1, 77)]),
    # A 2-chunk prompt with a 2-chunk negative prompt: one CFG batch of 154 tokens.
    ({'prompt': 'a robot BREAK a cat', 'negative_prompt': 'blur BREAK noise'}, [(2, 154)]),
    # An empty negative prompt (zeros) takes the prompt's length: the same batch.
    ({'prompt': 'a robot BREAK a cat'}, [(2, 154)]),
    # A 1-chunk negative prompt with pad_cond_uncond off (A1111's default): two passes a
    # step, prompt and negative prompt apart, so cfg:154 does not serve it (nocfg:154 and
    # nocfg do).
    ({'prompt': 'a robot BREAK a cat', 'negative_prompt': 'blur'}, [(1, 154), (1, 77)]),
    ({'prompt': 'a BREAK robot BREAK cat', 'negative_prompt': 'a BREAK b BREAK c',
      'guidance_scale': 1.0}, [(1, 231)]),
])
def test_a_goal_queues_its_signature_then_is_served_prepared(fields, base_met):
    """A goal meets a signature, it is queued; once prepared, the same goal queues nothing."""
    engine = fast_engine()
    accel = engine.accelerator
    assert not accel.has_work()
    request = tiny_request(refiner_switch=1.0, steps=3, **fields)
    engine.generate(request)
    assert [u[1:3] for u in unet_units(accel)] == base_met
    assert ('vae', (1, 4, 8, 8)) in accel._pending
    engine.prepare_fast_path()
    assert prepared_keys(accel)['base'] == {
        key_for(engine, 'base', 64, 64, batch, tokens) for batch, tokens in base_met}
    engine.generate(request)
    assert not accel.has_work()  # not eager forever: everything it met is prepared


@needs_set_stance
def test_img2img_goal_queues_its_size_and_refiner_signature():
    """An img2img goal at a size not prepared queues that size's signatures, both UNets."""
    engine = fast_engine(sizes=((64, 64),))
    accel = engine.accelerator
    engine.prepare_fast_path()
    request = tiny_request(init_image=picture(), width=0, height=0, steps=8,
                           denoising_strength=0.6)
    engine.generate(request)
    assert unet_units(accel) == [('base', 2, 77, 8, 12), ('refiner', 2, 77, 8, 12)]
    engine.prepare_fast_path()
    engine.generate(request)
    assert not accel.has_work()
    assert key_for(engine, 'refiner', 96, 64, 2, 77) in prepared_keys(accel)['refiner']


@needs_set_stance
def test_few_step_schedules_do_not_change_the_signature():
    """
    Timesteps are inputs of a graph, not part of its signature.

    LCM's timesteps, trailing spacing (SGM Uniform) and a long Euler schedule at CFG 1 all
    meet the one nocfg signature, so `nocfg` alone prepares every few-step schedule.
    """
    engine = fast_engine(sizes=((64, 64),), variants=('nocfg',))
    accel = engine.accelerator
    engine.prepare_fast_path()
    assert prepared_keys(accel)['base'] == {key_for(engine, 'base', 64, 64, 1, 77)}
    for fields in ({'scheduler': 'LCM', 'steps': 4}, {'scheduler': 'DDIM', 'steps': 2,
                                                      'schedule_type': 'SGM Uniform'},
                   {'scheduler': 'Euler', 'steps': 12}):
        engine.generate(tiny_request(guidance_scale=1.0, refiner_switch=1.0, **fields))
        assert not accel.has_work(), fields
