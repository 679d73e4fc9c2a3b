# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""A1111 prompt syntax, text side: emphasis parsing, LoRA tags, 75-token chunking."""

import pytest

from sdxl_ros.engine.prompt_parser import (BREAK, extract_loras, extract_networks, is_break,
                                           LoraTag, merge_loras, parse_emphasis,
                                           PromptSyntaxError, strip_comments)
from sdxl_ros.engine.prompting.chunks import Chunk, split_chunks, tokenize_segments, TokenSpec

W = 1.1


def _close(pieces, expected):
    """Compare parses with weights to 1e-12 (products of 1.1 are not exact in binary)."""
    assert [t for t, _ in pieces] == [t for t, _ in expected], pieces
    assert all(abs(a - b) < 1e-12 for (_, a), (_, b) in zip(pieces, expected)), pieces


@pytest.mark.parametrize('text, expected', [
    ('a cat', [('a cat', 1.0)]),
    ('', [('', 1.0)]),
    ('a (cat)', [('a ', 1.0), ('cat', W)]),
    ('a ((cat))', [('a ', 1.0), ('cat', W * W)]),
    ('a [cat]', [('a ', 1.0), ('cat', 1 / W)]),
    ('a [[cat]]', [('a ', 1.0), ('cat', 1 / W / W)]),
    ('(masterpiece:1.2), cat', [('masterpiece', 1.2), (', cat', 1.0)]),
    ('( masterpiece : 1.5 )', [(' masterpiece ', 1.5)]),
    ('((a:1.5) b)', [('a', 1.5 * W), (' b', W)]),
    ('(a [b] c:2)', [('a ', 2.0), ('b', 2 / W), (' c', 2.0)]),
    ('(a:-1)', [('a', -1.0)]),
    ('x (a:-1) y', [('x ', 1.0), ('a', -1.0), (' y', 1.0)]),
    ('(a:-0.5)', [('a', -0.5)]),
    (r'\(not weighted\)', [('(not weighted)', 1.0)]),
    (r'a \[b\] \\ c', [('a [b] \\ c', 1.0)]),
    # A backslash not before ()[]\ is dropped, a trailing one too.
    (r'a \x', [('a x', 1.0)]),
    ('a\\', [('a', 1.0)]),
    ('time: noon', [('time: noon', 1.0)]),
    ('(time: noon)', [('time: noon', W)]),
    ('(a:1.2.3)', [('a:1.2.3', W)]),
    ('a :1.2) b', [('a :1.2) b', 1.0)]),
    # Unbalanced, as A1111 reads them: a closer without opener is text, an opener without
    # closer weights the rest (the bracket is dropped).
    ('a) b] c', [('a) b] c', 1.0)]),
    ('a (b c', [('a ', 1.0), ('b c', W)]),
    ('a [b (c', [('a ', 1.0), ('b ', 1 / W), ('c', 1.0)]),
    ('(a) (b)', [('a', W), (' ', 1.0), ('b', W)]),
])
def test_emphasis(text, expected):
    _close(parse_emphasis(text), expected)


def test_break_splits_and_is_case_sensitive():
    assert parse_emphasis('a cat BREAK a dog') == [('a cat', 1.0), BREAK, ('a dog', 1.0)]
    assert parse_emphasis('a cat break a dog') == [('a cat break a dog', 1.0)]
    assert parse_emphasis('BREAKFAST BREAK') == [('BREAKFAST', 1.0), BREAK]
    # Inside brackets the BREAK marker is scaled too: A1111 then reads the word BREAK.
    _close(parse_emphasis('(a BREAK b)'), [('a', W), ('BREAK', -W), ('b', W)])
    assert not is_break(parse_emphasis('(a BREAK b)')[1])
    assert parse_emphasis('(a BREAK b:1)') == [('a', 1.0), BREAK, ('b', 1.0)]
    assert is_break(parse_emphasis('a BREAK b')[1])


def test_negative_weights_are_ordinary_weights_not_breaks():
    def tokenize(texts):
        return [[len(text)] for text in texts]
    pieces = parse_emphasis('x (a:-1) y BREAK z')
    assert tokenize_segments(pieces, tokenize) == [([2], 1.0), ([1], -1.0), ([2], 1.0), None,
                                                   ([1], 1.0)]
    assert tokenize_segments(parse_emphasis('(a:-1)'), tokenize) == [([1], -1.0)]


def test_lora_tags_are_removed_and_read():
    text, tags = extract_loras('a cat <lora:detail:0.7>, <lora:style> sharp')
    assert text == 'a cat ,  sharp'
    assert tags == [LoraTag('detail', 0.7), LoraTag('style', 1.0)]
    assert extract_loras('<hypernet:x:1> cat')[0] == ' cat'
    assert merge_loras(tags + [LoraTag('detail', 0.3)]) == [('detail', 1.0), ('style', 1.0)]


def test_every_extra_network_tag_is_removed_and_only_lora_lyco_apply():
    text, networks = extract_networks('a <lyco:soft:0.5> <hypernet:x:1> <LORA:y:1> b')
    assert text == 'a    b'
    assert networks.loras == (LoraTag('soft', 0.5, 'lyco'),)
    # Type names are case-sensitive, as in A1111: <LORA:...> is not a LoRA.
    assert networks.ignored == ('<hypernet:x:1>', '<LORA:y:1>')
    assert extract_networks('<a b:c>')[0] == '<a b:c>'  # not a tag: the type is one word


@pytest.mark.parametrize('text, expected', [
    ('a cat # fluffy\nsharp', 'a cat \nsharp'),
    ('# a note\na cat', '\na cat'),
    ('a cat\n# note\n# more\nsharp', 'a cat\n\nsharp'),
    ('a#b#c', 'a\n'),
    ('no comment', 'no comment'),
    ('<lora:x:1> # <lora:y:1>', '<lora:x:1> \n'),
])
def test_comments_are_stripped_to_the_line_end(text, expected):
    assert strip_comments(text) == expected


@pytest.mark.parametrize('tag, words', [
    ('<lora:x:6>', ['weight 6', '-5..5']),
    ('<lora:x:-5.5>', ['-5.5', 'out of range']),
    ('<lora:x:abc>', ['not a number']),
    ('<lora:x:0.5:0.2>', ['more than one weight']),
    ('<lora::1>', ['no usable name']),
    ('<lora:../etc/passwd:1>', ['no usable name']),
])
def test_bad_lora_tags_refused(tag, words):
    with pytest.raises(PromptSyntaxError) as error:
        extract_loras(f'a cat {tag}')
    for word in words:
        assert word in str(error.value)


SPEC = TokenSpec(bos=900, eos=901, pad=0, comma=5)


def _text(chunk):
    """Return the text tokens of a chunk (between start and the first end token)."""
    return chunk.tokens[1:chunk.tokens.index(SPEC.eos)]


def test_chunks_are_77_with_start_end_and_padding():
    chunks = split_chunks([([7] * 200, 1.0)], SPEC)
    assert len(chunks) == 3
    assert all(len(c.tokens) == 77 and len(c.weights) == 77 for c in chunks)
    assert [len(_text(c)) for c in chunks] == [75, 75, 50]
    assert chunks[2].tokens[-26:] == [901] + [0] * 25
    assert split_chunks([([], 1.0)], SPEC) == [Chunk([900, 901] + [0] * 75, [1.0] * 77)]
    assert len(split_chunks([([7] * 75, 1.0)], SPEC)) == 1


def test_comma_near_the_end_moves_the_words_after_it():
    # 60 words, a comma (index 60), then 30 more: 15 tokens before the end -> moved.
    chunks = split_chunks([([7] * 60 + [5] + [8] * 30, 1.0)], SPEC)
    assert _text(chunks[0]) == [7] * 60 + [5]
    assert _text(chunks[1]) == [8] * 30
    # A comma 25 tokens before the end is too far back: the chunk is cut at 75.
    chunks = split_chunks([([7] * 50 + [5] + [8] * 30, 1.0)], SPEC)
    assert _text(chunks[0]) == [7] * 50 + [5] + [8] * 24
    assert _text(chunks[1]) == [8] * 6
    # Exactly 20 back still moves (A1111's "within 20 tokens").
    chunks = split_chunks([([7] * 55 + [5] + [8] * 30, 1.0)], SPEC)
    assert _text(chunks[0]) == [7] * 55 + [5]


def test_moved_words_keep_their_weights():
    chunks = split_chunks([([7] * 60 + [5], 1.0), ([8] * 30, 1.5)], SPEC)
    assert chunks[1].weights[1:31] == [1.5] * 30
    assert chunks[0].weights[1:62] == [1.0] * 61 and chunks[0].weights[62:] == [1.0] * 15


def test_break_pads_and_starts_a_new_chunk():
    chunks = split_chunks([([7] * 3, 1.0), None, ([8] * 2, 1.2)], SPEC)
    assert [_text(c) for c in chunks] == [[7] * 3, [8] * 2]
    assert chunks[1].weights[1:3] == [1.2, 1.2]
    assert len(split_chunks([None], SPEC)) == 1
