# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Prompt embeddings encoded once: the refiner's must equal what its own pipeline computes."""

from engine_fixtures import tiny_engine, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine.prompts import encode_base, encode_refiner, shares_text_encoder
import torch


@pytest.fixture(scope='module')
def engine():
    """Load one tiny CPU engine shared by this module."""
    return tiny_engine()


def _same(a, b):
    """Bit-identical tensors, or both None."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize('negative, guidance', [('', 7.0), ('blurry, text', 5.0),
                                                ('', 1.0), ('ugly', 1.0)])
def test_refiner_embeddings_equal_its_own_encoding(engine, negative, guidance):
    """Sliced from the base's (plus an encoded empty negative) = refiner.encode_prompt."""
    base, refiner = engine.base_pipeline, engine.refiner_pipeline
    assert shares_text_encoder(base, refiner)
    prompt = 'a red robot arm, studio light'
    device = torch.device('cpu')
    ours = encode_refiner(base, refiner, encode_base(base, prompt, negative, guidance, device),
                          prompt, negative, guidance, device)
    stock = refiner.encode_prompt(prompt=prompt, device=device, num_images_per_prompt=1,
                                  do_classifier_free_guidance=guidance > 1,
                                  negative_prompt=negative or None)
    assert _same(ours.prompt_embeds, stock[0])
    assert _same(ours.negative_prompt_embeds, stock[1])
    assert _same(ours.pooled_prompt_embeds, stock[2])
    assert _same(ours.negative_pooled_prompt_embeds, stock[3])
    if guidance > 1:
        assert ours.negative_prompt_embeds is not None
        # An empty negative is zeros for the base but encoded text for the refiner.
        assert bool(ours.negative_prompt_embeds.abs().sum() > 0)


def test_base_embeddings_equal_its_own_encoding(engine):
    """The base's embeddings are its encode_prompt's, with the empty negative zeroed."""
    base = engine.base_pipeline
    ours = encode_base(base, 'a robot', '', 7.0, torch.device('cpu'))
    stock = base.encode_prompt(prompt='a robot', device=torch.device('cpu'),
                               num_images_per_prompt=1, do_classifier_free_guidance=True)
    assert _same(ours.prompt_embeds, stock[0]) and _same(ours.pooled_prompt_embeds, stock[2])
    assert not bool(ours.negative_prompt_embeds.any())


def test_refiner_with_its_own_encoder_encodes_itself(engine):
    """A refiner that does not share the base's encoder is not given sliced embeddings."""
    import copy
    base, refiner = engine.base_pipeline, engine.refiner_pipeline
    other = copy.copy(refiner)
    other.text_encoder_2 = copy.deepcopy(refiner.text_encoder_2)
    with torch.no_grad():
        next(other.text_encoder_2.parameters()).add_(1.0)
    assert not shares_text_encoder(base, other)
    device = torch.device('cpu')
    embeds = encode_refiner(base, other, encode_base(base, 'x', '', 7.0, device), 'x', '',
                            7.0, device)
    stock = other.encode_prompt(prompt='x', device=device, num_images_per_prompt=1,
                                do_classifier_free_guidance=True)
    assert _same(embeds.prompt_embeds, stock[0])
    shared = encode_refiner(base, refiner, encode_base(base, 'x', '', 7.0, device), 'x', '',
                            7.0, device)
    assert not torch.equal(embeds.prompt_embeds, shared.prompt_embeds)


def test_engine_image_equals_stock_pipelines_given_strings(engine):
    """The engine's image is bit-identical to both stock pipelines called with the prompts."""
    request = tiny_request(seed=21, negative_prompt='fog')
    ours = engine.generate(request).images[0]
    base, refiner = engine.base_pipeline, engine.refiner_pipeline
    generator = torch.Generator('cpu').manual_seed(21)
    common = {'prompt': request.prompt, 'negative_prompt': 'fog',
              'num_inference_steps': request.steps, 'guidance_scale': request.guidance_scale,
              'generator': generator, 'output_type': 'latent'}
    from diffusers import EulerDiscreteScheduler
    base.scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config)
    refiner.scheduler = EulerDiscreteScheduler.from_config(refiner.scheduler.config)
    latents = base(width=64, height=64, denoising_end=0.8, **common).images
    latents = refiner(image=latents, denoising_start=0.8, **common).images
    from sdxl_ros.engine.decoding import decode_latents
    assert np.array_equal(ours, decode_latents(base.vae, latents)[0])
