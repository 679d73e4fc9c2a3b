# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Prompt schedules, AND and own-length negatives in the engine: tiny preset, CPU, offline.

The tiny tokenizer reads characters as tokens, so chunk counts are easy to control.
"""

from dataclasses import replace

from engine_fixtures import tiny_engine, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine.fast_path.graphs import GraphedUNet
from sdxl_ros.engine.infotext import parse_infotext
from sdxl_ros.engine.prompt_schedule import plan_prompts
from sdxl_ros.engine.prompting.guidance import (encode_empty_chunk, encode_stage, encode_texts,
                                                StageGuidance)
from sdxl_ros.engine.request import validate_request
from sdxl_ros.engine.step_plan import img2img_strength
import torch

STEPS = 4
LONG = ' '.join(['a'] * 100)  # 100 character tokens: two chunks


@pytest.fixture(scope='module')
def engine():
    """Load one tiny CPU engine shared by this module."""
    return tiny_engine()


@pytest.fixture(scope='module')
def images(engine):
    """Render (once) the images several tests compare; {prompt: image}."""
    cache = {}

    def render(prompt, **fields):
        key = (prompt,) + tuple(sorted(fields.items()))
        if key not in cache:
            cache[key] = engine.generate(tiny_request(prompt=prompt, steps=STEPS, seed=3,
                                                      **fields))
        return cache[key]
    return render


@pytest.mark.parametrize('prompt, same_as', [
    ('a [cat:dog:0]', 'a dog'),       # `to` from the start
    ('a [cat:dog:100]', 'a cat'),     # past the end: `from` throughout
    ('a cat AND a dog :0', 'a cat'),  # a zero-weight part adds nothing
    ('a cat <hypernet:x:1>', 'a cat'),  # the tag is removed from the text
    ('a cat # a comment', 'a cat'),
])
def test_syntax_that_equals_a_plain_prompt(images, prompt, same_as):
    assert np.array_equal(images(prompt).images[0], images(same_as).images[0])


@pytest.mark.parametrize('prompt', ['a [cat:dog:2]', 'a [cat|dog]', 'a cat AND a dog :0.5',
                                    'a cat :0.5'])
def test_syntax_that_changes_the_image(images, prompt):
    image = images(prompt).images[0]
    assert not np.array_equal(image, images('a cat').images[0])
    assert not np.array_equal(image, images('a dog').images[0])


def test_ignored_tags_are_named_in_the_warnings(images):
    result = images('a cat <hypernet:x:1> <LORA:y:1>')
    assert len(result.warnings) == 2
    assert '<hypernet:x:1>' in result.warnings[0] and '<LORA:y:1>' in result.warnings[1]
    assert images('a cat').warnings == []


def test_empty_prompt_generates(images):
    assert images('').images[0].shape == (64, 64, 3)


def _first_cross_attention(unet):
    """Return the first attn2 (cross-attention) module of a UNet."""
    return next(m for name, m in unet.named_modules() if name.endswith('attn2'))


def test_each_step_conditions_on_its_scheduled_text(engine):
    """`[cat:dog:2]` over 4 steps: step indices 0-2 see `cat`, 3 sees `dog` (refiner too)."""
    base, refiner = engine.base_pipeline, engine.refiner_pipeline
    seen = []

    def record(_module, _args, kwargs):
        seen.append(kwargs['encoder_hidden_states'][-1:].clone())
    hooks = [_first_cross_attention(p.unet).register_forward_pre_hook(record, with_kwargs=True)
             for p in (base, refiner)]
    try:
        engine.generate(tiny_request(prompt='[cat:dog:2]', steps=STEPS, seed=3))
    finally:
        for hook in hooks:
            hook.remove()
    device = torch.device('cpu')
    texts = encode_texts(base, ('cat', 'dog'), 'original', device)
    width = refiner.text_encoder_2.config.hidden_size
    assert len(seen) == STEPS
    for step, hidden in enumerate(seen):
        expected = 'cat' if step <= 2 else 'dog'
        other = 'dog' if expected == 'cat' else 'cat'
        want, not_want = texts[expected].embeds, texts[other].embeds
        if hidden.shape[-1] == width:  # a refiner step: its half of the embeddings
            want, not_want = want[..., -width:], not_want[..., -width:]
        assert torch.equal(hidden, want) and not torch.equal(hidden, not_want), step
    assert seen[-1].shape[-1] == width  # the last step ran in the refiner


def _unet_inputs(pipeline, seed=0):
    """Random latents (CFG batch of 2), a timestep and SDXL time ids for 64x64."""
    gen = torch.Generator('cpu').manual_seed(seed)
    latent = torch.randn((1, pipeline.unet.config.in_channels, 8, 8), generator=gen)
    ids = pipeline.unet.config.projection_class_embeddings_input_dim
    count = (ids - pipeline.text_encoder_2.config.projection_dim) \
        // pipeline.unet.config.addition_time_embed_dim
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0][:count]] * 2)
    return torch.cat([latent, latent]), torch.tensor(500.0), time_ids


def _plain(unet, x, t, encoded, time_ids):
    """One plain UNet call."""
    return unet(x, t, encoder_hidden_states=encoded.embeds,
                added_cond_kwargs={'text_embeds': encoded.pooled, 'time_ids': time_ids},
                return_dict=False)[0]


def _guidance(pipeline, prompt, negative, pad=False):
    """Return a StageGuidance of `prompt`/`negative` at step 0 for `pipeline` (the base)."""
    device = torch.device('cpu')
    plan = plan_prompts(prompt, negative, STEPS)
    positive, negatives = encode_stage(pipeline, pipeline, plan, 'original', device, False)
    empty = encode_empty_chunk(pipeline, device) if pad else None
    return StageGuidance(plan, positive, negatives, lambda: 0, True, empty), positive, negatives


def _call_through(guidance, unet, x, t, time_ids):
    """Run the pipeline's UNet call through `guidance`; return its (2, ...) prediction."""
    with guidance.installed(unet):
        return unet(x, t, encoder_hidden_states=None,
                    added_cond_kwargs={'text_embeds': None, 'time_ids': time_ids},
                    return_dict=False)[0]


@torch.no_grad()
def test_and_combines_as_a1111(engine):
    """AND gives uncond + sum_i w_i (cond_i - uncond); the pipeline's CFG scales it by cfg."""
    base = engine.base_pipeline
    guidance, positive, negative = _guidance(base, 'a cat AND a dog :0.5', 'fog')
    x, t, ids = _unet_inputs(base)
    out = _call_through(guidance, base.unet, x, t, ids)
    uncond = _plain(base.unet, x[:1], t, negative['fog'], ids[:1])
    cat = _plain(base.unet, x[1:], t, positive['a cat'], ids[1:])
    dog = _plain(base.unet, x[1:], t, positive[' a dog'], ids[1:])
    expected = uncond + (cat - uncond) * 1.0 + (dog - uncond) * 0.5
    assert guidance.unet_calls == 1  # parts and negative of one length: one batch of 3
    # One batch of 3 against three calls of 1: equal up to float32 rounding.
    assert torch.allclose(out[:1], uncond, atol=1e-5, rtol=0)
    assert torch.allclose(out[1:], expected, atol=1e-5, rtol=0)
    assert 'forward' not in base.unet.__dict__  # uninstalled


@torch.no_grad()
def test_prompt_and_negative_run_at_their_own_lengths(engine):
    """pad_cond_uncond off: a 2-chunk prompt and a 1-chunk negative are two UNet passes."""
    base = engine.base_pipeline
    guidance, positive, negative = _guidance(base, LONG, 'fog')
    assert positive[LONG].embeds.shape[1] == 154 and negative['fog'].embeds.shape[1] == 77
    x, t, ids = _unet_inputs(base)
    out = _call_through(guidance, base.unet, x, t, ids)
    assert guidance.unet_calls == 2 and not guidance.padded
    assert torch.equal(out[:1], _plain(base.unet, x[:1], t, negative['fog'], ids[:1]))
    assert torch.equal(out[1:], _plain(base.unet, x[1:], t, positive[LONG], ids[1:]))
    # pad_cond_uncond on: the negative is padded with an encoded empty chunk, one batch.
    padded, _, _ = _guidance(base, LONG, 'fog', pad=True)
    out_padded = _call_through(padded, base.unet, x, t, ids)
    assert padded.unet_calls == 1 and padded.padded
    assert not torch.equal(out_padded[:1], out[:1])


def test_pad_cond_uncond_changes_the_image_and_is_recorded(images):
    pad = tiny_engine(pad_cond_uncond=True)
    padded = pad.generate(tiny_request(prompt=LONG, negative_prompt='fog', steps=STEPS,
                                       seed=3))
    own = images(LONG, negative_prompt='fog')
    assert not np.array_equal(padded.images[0], own.images[0])
    assert 'Pad conds: True' in padded.infotexts[0]
    assert 'Pad conds' not in own.infotexts[0]
    assert 'Pad conds' not in pad.generate(tiny_request(steps=STEPS)).infotexts[0]


def test_infotext_round_trip_reproduces_a_scheduled_prompt(engine, images):
    prompt = 'a [cat:dog:2] # note\nAND a hat :0.5'
    result = images(prompt, negative_prompt='[fog|rain]')
    assert result.infotexts[0].startswith(prompt + '\nNegative prompt: [fog|rain]\n')
    again = engine.generate(validate_request(parse_infotext(result.infotexts[0]),
                                             engine.config.limits))
    assert np.array_equal(again.images[0], result.images[0])


def test_img2img_runs_a1111s_step_count(engine):
    from test_img2img_engine import picture
    events = []
    request = tiny_request(prompt='', init_image=picture(), steps=10, denoising_strength=0.6,
                           refiner_switch=1.0)
    engine.generate(request, on_progress=events.append)
    assert max(e.step for e in events if e.stage == 'base') == 7  # int(0.6 x 10) + 1
    diffusers_count = tiny_engine(a1111_img2img_steps=False)
    events.clear()
    diffusers_count.generate(request, on_progress=events.append)
    assert max(e.step for e in events if e.stage == 'base') == 6
    assert int(10 * img2img_strength(0.6, 10)) == 7
    events.clear()
    engine.generate(replace(request, steps=3, denoising_strength=0.3),
                    on_progress=events.append)
    assert max(e.step for e in events if e.stage == 'base') == 1  # diffusers would run none


class _Replay:
    """Stands in for a captured CUDA graph on the CPU: recomputes from the static buffers."""

    def __init__(self, graphed, static_in, static_out):
        self.graphed, self.static_in, self.static_out = graphed, static_in, static_out

    def replay(self):
        self.static_out.copy_(self.graphed._run(self.static_in))


@torch.no_grad()
def test_graphed_unet_takes_scheduled_embeddings_as_inputs(engine, monkeypatch):
    """
    A scheduled text keeps the fast path: each step's embeddings are a graph's inputs.

    A graph is replayed with each step's embeddings copied into its static inputs, not ones
    captured with it.

    On a CPU no signature is graphable (CUDA tensors only) and nothing can be captured, so
    the graph is a stand-in that recomputes from the static buffers the wrapper fills.
    """
    base = engine.base_pipeline
    x, t, ids = _unet_inputs(base)
    step = [0]
    plan = plan_prompts('[cat:dog:1]', 'fog', STEPS)
    device = torch.device('cpu')
    positive, negative = encode_stage(base, base, plan, 'original', device, False)
    guidance = StageGuidance(plan, positive, negative, lambda: step[0], True)
    graphed = GraphedUNet(base.unet)
    static_in = (x.clone(), t.clone(), torch.zeros_like(positive['cat'].embeds.repeat(2, 1, 1)),
                 torch.zeros_like(positive['cat'].pooled.repeat(2, 1)), ids.clone())
    static_out = torch.zeros_like(x)
    graphed.graphs['key'] = (_Replay(graphed, static_in, static_out), static_in, static_out)
    monkeypatch.setattr(GraphedUNet, 'signature_of', staticmethod(lambda *args, **kwargs: 'key'))
    graphed.install()
    try:
        outs = []
        for index in (0, 2):  # step 0 conditions on `cat`, step 2 on `dog`
            step[0] = index
            outs.append(_call_through(guidance, base.unet, x, t, ids))
    finally:
        graphed.uninstall()
    assert graphed.replays == 2 and graphed.fallbacks == 0
    for out, text in zip(outs, ('cat', 'dog')):
        expected = base.unet(x, t, encoder_hidden_states=torch.cat(
            [negative['fog'].embeds, positive[text].embeds]), added_cond_kwargs={
            'text_embeds': torch.cat([negative['fog'].pooled, positive[text].pooled]),
            'time_ids': ids}, return_dict=False)[0]
        assert torch.equal(out, expected), text
    assert not torch.equal(outs[0], outs[1])
