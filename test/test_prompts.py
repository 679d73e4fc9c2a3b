# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Prompt embeddings encoded once: the refiner's must equal what its own pipeline computes."""

from engine_fixtures import tiny_engine, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine.prompting.encoding import encode_base, encode_refiner, shares_text_encoder
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
    # The engine's own scheduler objects (A1111's Euler with its Automatic schedule type): the
    # prompt path is what this test compares, not the schedule.
    from sdxl_ros.engine.schedulers import make_scheduler
    base.scheduler = make_scheduler(request.scheduler, engine.scheduler_configs['base'],
                                    request.schedule_type)
    refiner.scheduler = make_scheduler(request.scheduler, engine.scheduler_configs['refiner'],
                                       request.schedule_type)
    latents = base(width=64, height=64, denoising_end=0.8, **common).images
    latents = refiner(image=latents, denoising_start=0.8, **common).images
    from sdxl_ros.engine.generation.decoding import decode_latents
    assert np.array_equal(ours, decode_latents(base.vae, latents)[0])


# --------------------------------------------------------------- long prompts, emphasis
def _hidden(encoder, tokens):
    """Penultimate hidden states and the first output of one 77-token chunk, by hand."""
    out = encoder(torch.tensor([tokens]), output_hidden_states=True)
    return out.hidden_states[-2], out[0]


def _chunk_ids(tokenizer, text):
    """BOS + ids + EOS + the tokenizer's pad, 77 long (one chunk, as the stock path pads)."""
    return tokenizer(text, padding='max_length', max_length=77, truncation=True).input_ids


@torch.no_grad()
def test_200_token_prompt_is_three_chunks_per_encoder(engine):
    """Tiny tokens are characters: 200 words 'a' = 200 tokens -> 3 chunks of 77, both encoders."""
    from sdxl_ros.engine.prompting.encoding import prompt_chunks, prompt_pieces
    base = engine.base_pipeline
    prompt = ' '.join(['a'] * 200)
    chunks = prompt_chunks(base, prompt_pieces(prompt))
    assert [len(c) for c in chunks] == [3, 3]
    # The two tokenizers differ only in padding: '<|endoftext|>' vs '!'.
    assert chunks[0][2].tokens[-1] == base.tokenizer.eos_token_id
    assert chunks[1][2].tokens[-1] == base.tokenizer_2.convert_tokens_to_ids('!')
    embeds = encode_base(base, prompt, 'fog', 7.0, torch.device('cpu'))
    width = base.text_encoder.config.hidden_size + base.text_encoder_2.config.hidden_size
    assert embeds.prompt_embeds.shape == (1, 3 * 77, width) == (1, 231, 80)
    assert embeds.negative_prompt_embeds.shape == (1, 231, 80)
    # Pooled = text_encoder_2's projection of the first chunk alone.
    first = _chunk_ids(base.tokenizer_2, ' '.join(['a'] * 75))
    assert chunks[1][0].tokens == first
    _, pooled = _hidden(base.text_encoder_2, first)
    assert torch.equal(embeds.pooled_prompt_embeds, pooled)
    # Each 77-token slice is that chunk encoded on its own (CLIP-L half | bigG half).
    for index in range(3):
        low, _ = _hidden(base.text_encoder, chunks[0][index].tokens)
        high, _ = _hidden(base.text_encoder_2, chunks[1][index].tokens)
        assert torch.equal(embeds.prompt_embeds[:, 77 * index:77 * (index + 1)],
                           torch.cat([low, high], dim=-1))
    # The short negative is padded with empty chunks (the encoded empty prompt).
    empty = base.encode_prompt(prompt='', device=torch.device('cpu'), num_images_per_prompt=1,
                               do_classifier_free_guidance=False)[0]
    assert torch.equal(embeds.negative_prompt_embeds[:, 77:154], empty)
    assert torch.equal(embeds.negative_prompt_embeds[:, 154:], empty)
    stock_fog = base.encode_prompt(prompt='fog', device=torch.device('cpu'),
                                   num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert torch.equal(embeds.negative_prompt_embeds[:, :77], stock_fog[0])
    assert torch.equal(embeds.negative_pooled_prompt_embeds, stock_fog[2])


def test_comma_near_a_chunk_end_moves_to_the_next_chunk(engine):
    """60 'a', a comma, 30 'b': the 14 'b' after the comma that fit chunk 1 move to chunk 2."""
    from sdxl_ros.engine.prompting.encoding import prompt_chunks, prompt_pieces
    base = engine.base_pipeline
    prompt = ' '.join(['a'] * 60) + ', ' + ' '.join(['b'] * 30)
    for chunks, tokenizer in zip(prompt_chunks(base, prompt_pieces(prompt)),
                                 (base.tokenizer, base.tokenizer_2)):
        assert len(chunks) == 2
        assert chunks[0].tokens == _chunk_ids(tokenizer, ' '.join(['a'] * 60) + ',')
        assert chunks[1].tokens == _chunk_ids(tokenizer, ' '.join(['b'] * 30))


@torch.no_grad()
def test_emphasis_scales_tokens_and_restores_the_mean(engine):
    """'(a robot:1.5) on a table': the weighted chunk equals the hand-computed A1111 result."""
    base = engine.base_pipeline
    embeds = encode_base(base, '(a robot:1.5) on a table', '', 7.0, torch.device('cpu'))
    plain = base.tokenizer('a robot on a table', padding='max_length', max_length=77).input_ids
    # Tiny tokens are characters: 'a', 'r o b o t' are tokens 1..6 after the start token.
    weights = torch.ones(77)
    weights[1:7] = 1.5
    halves = []
    for encoder, tokenizer in ((base.text_encoder, base.tokenizer),
                               (base.text_encoder_2, base.tokenizer_2)):
        ids = tokenizer('a robot on a table', padding='max_length', max_length=77).input_ids
        hidden, _ = _hidden(encoder, ids)
        scaled = hidden * weights[None, :, None]
        halves.append(scaled * (hidden.mean() / scaled.mean()))
    assert plain[1:7] == base.tokenizer('a robot', add_special_tokens=False).input_ids
    assert torch.equal(embeds.prompt_embeds, torch.cat(halves, dim=-1))
    literal = encode_base(base, 'a robot on a table', '', 7.0, torch.device('cpu'))
    assert not torch.equal(embeds.prompt_embeds, literal.prompt_embeds)
    assert torch.equal(embeds.pooled_prompt_embeds, literal.pooled_prompt_embeds)


def test_emphasis_none_reads_brackets_as_text(engine):
    """Emphasis none: the text goes to CLIP as written (= stock encode_prompt of it)."""
    base = engine.base_pipeline
    text = '(a robot:1.5) [on] a table'
    ours = encode_base(base, text, '', 7.0, torch.device('cpu'), emphasis='none')
    stock = base.encode_prompt(prompt=text, device=torch.device('cpu'), num_images_per_prompt=1,
                               do_classifier_free_guidance=True)
    assert _same(ours.prompt_embeds, stock[0]) and _same(ours.pooled_prompt_embeds, stock[2])


@pytest.mark.parametrize('negative', ['', 'blurry'])
def test_long_prompt_refiner_embeddings_equal_its_own(engine, negative):
    """Sliced chunked embeddings = the refiner encoding the chunks itself (bit for bit)."""
    from sdxl_ros.engine.prompting.encoding import encode_pipeline, prompt_pieces
    base, refiner = engine.base_pipeline, engine.refiner_pipeline
    prompt = 'a (red:1.3) robot, ' * 12 + 'BREAK studio light'
    device = torch.device('cpu')
    ours = encode_refiner(base, refiner, encode_base(base, prompt, negative, 7.0, device),
                          prompt, negative, 7.0, device)
    own = encode_pipeline(refiner, prompt_pieces(prompt), prompt_pieces(negative), True,
                          not negative and refiner.config.force_zeros_for_empty_prompt, device)
    assert ours.prompt_embeds.shape[1] == 77 * 3  # 70 tokens to a comma, 50, BREAK, 12
    for name in ('prompt_embeds', 'pooled_prompt_embeds', 'negative_prompt_embeds',
                 'negative_pooled_prompt_embeds'):
        assert _same(getattr(ours, name), getattr(own, name)), name


def test_long_prompt_generates_and_a_300_token_prompt_encodes(engine):
    """A prompt far past 77 tokens is served; the encode time is printed for the report."""
    import time
    prompt = ' '.join(['robot'] * 50)  # 300 character tokens with the tiny tokenizer
    from sdxl_ros.engine.prompting.encoding import prompt_chunks, prompt_pieces
    assert [len(c) for c in prompt_chunks(engine.base_pipeline, prompt_pieces(prompt))] == [4, 4]
    start = time.perf_counter()
    embeds = encode_base(engine.base_pipeline, prompt, 'fog', 7.0, torch.device('cpu'))
    print(f'encode 300 tokens (4 chunks x 2 encoders, + negative): '
          f'{(time.perf_counter() - start) * 1000:.1f} ms')
    assert embeds.prompt_embeds.shape[1] == 4 * 77
    short = engine.generate(tiny_request(prompt='robot')).images[0]
    long = engine.generate(tiny_request(prompt=prompt)).images[0]
    assert long.shape == short.shape and not np.array_equal(long, short)
