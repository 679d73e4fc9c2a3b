# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Textual-inversion embeddings on the tiny preset: A1111's SDXL files, used by name."""

import hashlib

from embedding_fixtures import random_embedding, token_rows, write_embedding
from engine_fixtures import tiny_engine, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine.embedding_files import (EmbeddingWidths, list_embeddings, mentions,
                                             request_embeddings)
from sdxl_ros.engine.infotext import parse_infotext
from sdxl_ros.engine.prompting.chunks import split_chunks, TokenSpec
from sdxl_ros.engine.request import RequestError
import torch


class _Evil:
    """A pickled object of a class: what a weights-only loader must refuse to build."""


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """Write an embeddings_dir: good SDXL embeddings and the files A1111 users meet."""
    folder = tmp_path_factory.mktemp('embeddings')
    base = tiny_engine(refiner_model='').base_pipeline
    write_embedding(folder / 'reddog.safetensors', token_rows(base, 'red dog'))
    (folder / 'styles').mkdir()
    write_embedding(folder / 'styles' / 'sparkle.safetensors', random_embedding(base, 3))
    torch.save(random_embedding(base, 1, seed=1), folder / 'oldstyle.pt')
    torch.save({'clip_l': torch.zeros(1, 4), 'payload': _Evil()}, folder / 'evil.pt')
    write_embedding(folder / 'sd15.safetensors', {'emb_params': torch.zeros(2, 768)})
    wide = random_embedding(base, 1)
    wide['clip_l'] = torch.zeros(1, wide['clip_l'].shape[1] + 1)
    write_embedding(folder / 'wide.safetensors', wide)
    uneven = random_embedding(base, 2)
    uneven['clip_g'] = uneven['clip_g'][:1]
    write_embedding(folder / 'uneven.safetensors', uneven)
    (folder / 'broken.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{not json}')
    return folder


@pytest.fixture(scope='module')
def engine(folder):
    """Load a base-only tiny CPU engine with embeddings_dir set."""
    return tiny_engine(refiner_model='', embeddings_dir=str(folder))


def test_listing_is_every_file_stem_at_any_depth(folder):
    assert list_embeddings(str(folder)) == [
        'broken', 'evil', 'oldstyle', 'reddog', 'sd15', 'sparkle', 'uneven', 'wide']
    assert list_embeddings('') == [] and list_embeddings(str(folder / 'none')) == []


@pytest.mark.parametrize('text, name, expected', [
    ('a cat, sitting', 'cat', True), ('A CAT', 'cat', True), ('cats', 'cat', False),
    ('cat2', 'cat', True), ('(cat:1.2)', 'cat', True), ('bobcat', 'cat', False),
    ('my-emb here', 'my-emb', True), ('x--my-emb', 'my-emb', True),
    ('xmy-emb', 'my-emb', False),
])
def test_mentions_follow_clip_word_splitting(text, name, expected):
    assert mentions(text, name) is expected


def test_embedding_vectors_stand_in_for_their_name(engine):
    """An embedding holding the rows of `red dog` reads exactly as the words `red dog`."""
    as_words = engine.generate(tiny_request(prompt='a red dog in the rain'))
    as_embedding = engine.generate(tiny_request(prompt='a reddog in the rain'))
    assert np.array_equal(as_words.images[0], as_embedding.images[0])
    literal = tiny_engine(refiner_model='').generate(tiny_request(prompt='a reddog in the rain'))
    assert not np.array_equal(literal.images[0], as_embedding.images[0])


def test_negative_prompt_embedding_and_ti_hashes_round_trip(engine, folder):
    """TI hashes = first 12 hex digits of the sha256 of the whole file, prompt's first."""
    prompt = 'a (sparkle:1.2) robot'
    request = tiny_request(prompt=prompt, negative_prompt='reddog, blurry')
    result = engine.generate(request)
    plain = engine.generate(tiny_request(prompt=prompt, negative_prompt='blurry'))
    assert not np.array_equal(result.images[0], plain.images[0])
    sparkle = hashlib.sha256(
        (folder / 'styles' / 'sparkle.safetensors').read_bytes()).hexdigest()[:12]
    reddog = hashlib.sha256((folder / 'reddog.safetensors').read_bytes()).hexdigest()[:12]
    text = result.infotexts[0]
    assert f'TI hashes: "sparkle: {sparkle}, reddog: {reddog}"' in text
    assert 'TI hashes' not in engine.generate(tiny_request(prompt='a robot')).infotexts[0]
    again = parse_infotext(text)
    assert np.array_equal(engine.generate(again).images[0], result.images[0])


def test_pt_file_read_with_weights_only(engine):
    """A .pt embedding of plain tensors is used (torch.load with weights_only=True)."""
    image = engine.generate(tiny_request(prompt='oldstyle robot')).images[0]
    assert not np.array_equal(image, engine.generate(tiny_request(prompt='robot')).images[0])


def test_an_embedding_takes_its_vector_count_in_one_chunk():
    """A1111: an N-vector embedding takes N positions; one that does not fit starts a chunk."""
    spec = TokenSpec(bos=1, eos=2, pad=3, comma=4)
    group = tuple(f'v{i}' for i in range(3))
    chunks = split_chunks([([7] * 73 + [group] + [8], 1.0)], spec)
    assert len(chunks) == 2
    assert chunks[0].tokens[1:75] == [7] * 73 + [2] and chunks[0].fixes == ()
    assert chunks[1].tokens[:6] == [1, 0, 0, 0, 8, 2]
    assert chunks[1].fixes == ((1, 'v0'), (2, 'v1'), (3, 'v2'))
    fits = split_chunks([([7] * 72 + [group], 1.2)], spec)
    assert len(fits) == 1 and [p for p, _ in fits[0].fixes] == [73, 74, 75]
    assert fits[0].weights[73:76] == [1.2] * 3


@pytest.mark.parametrize('prompt, words', [
    ('a sd15 cat', ["'sd15'", 'SD 1.x embedding', '768-wide', 'clip_l (768)']),
    ('a wide cat', ["'wide'", 'does not fit', 'clip_l']),
    ('a uneven cat', ["'uneven'", '2 clip_l vectors but 1 clip_g']),
    ('a broken cat', ['broken.safetensors', 'cannot be read']),
    ('an evil cat', ["'evil'", 'weights only']),
])
def test_bad_embeddings_refused_before_any_step(engine, prompt, words):
    """Each refusal names the embedding and the reason; the next goal is served."""
    steps = []
    with pytest.raises(RequestError) as error:
        engine.generate(tiny_request(prompt=prompt), on_progress=steps.append)
    for word in words:
        assert word in str(error.value), str(error.value)
    assert steps == []
    assert engine.generate(tiny_request(steps=1)).images


def test_admission_checks_headers_without_torch_models(engine, folder):
    """The node's check: names found in prompt and negative, headers checked, widths too."""
    widths = EmbeddingWidths(engine.base_pipeline.text_encoder.config.hidden_size,
                             engine.base_pipeline.text_encoder_2.config.hidden_size)
    used = request_embeddings(['a sparkle robot', 'reddog'], str(folder), widths, False)
    red_dog = len(engine.base_pipeline.tokenizer(['red dog'], add_special_tokens=False)[
        'input_ids'][0])
    assert [(e.name, e.vectors) for e in used] == [('reddog', red_dog), ('sparkle', 3)]
    with pytest.raises(RequestError, match='does not fit'):
        request_embeddings(['wide'], str(folder), widths, False)
    assert request_embeddings(['evil'], str(folder), None, False)[0].vectors == 0
