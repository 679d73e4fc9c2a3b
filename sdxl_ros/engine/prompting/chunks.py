# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Long prompts as A1111 reads them: 75-token chunks, each framed by start/end tokens (77).

Pure Python (no torch): token ids and per-token weights only; `prompting/encoding.py` encodes them.
Rules (DESIGN.md "A1111 prompt semantics"): tokens fill a chunk of 75; when a chunk is full
and the last comma lies at most 20 tokens before its end, the tokens after that comma move to
the next chunk; BREAK pads the current chunk and starts a new one; a chunk is padded after
its end token with the tokenizer's pad token (weight 1); an empty prompt is one chunk.
A textual-inversion embedding (a tuple of vector items in place of a token id) takes one
position per vector and is never split: when it does not fit, the chunk ends before it.
"""

from dataclasses import dataclass
from typing import List, Tuple

from sdxl_ros.engine.prompt_parser import is_break

#: Tokens of text per chunk (CLIP's 77 minus start and end).
CHUNK_TOKENS = 75
#: How far back (in tokens) a comma may lie for the chunk to be cut after it.
COMMA_BACKTRACK = 20


@dataclass(frozen=True)
class TokenSpec:
    """The special token ids of one tokenizer."""

    bos: int
    eos: int
    pad: int
    comma: int

    @classmethod
    def of(cls, tokenizer):
        """Read the ids from a transformers CLIP tokenizer."""
        comma = tokenizer.convert_tokens_to_ids(',</w>')
        unknown = getattr(tokenizer, 'unk_token_id', None)
        return cls(bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                   pad=tokenizer.pad_token_id,
                   comma=-1 if comma is None or comma == unknown else comma)


#: The token id standing where an embedding vector goes in (A1111 uses 0 too).
VECTOR_PLACEHOLDER = 0


@dataclass
class Chunk:
    """77 token ids and their weights; `fixes`: (position, embedding vector) pairs."""

    tokens: List[int]
    weights: List[float]
    fixes: Tuple = ()


def split_chunks(segments, spec, chunk_tokens=CHUNK_TOKENS, backtrack=COMMA_BACKTRACK):
    """
    Turn [(token ids, weight) or None for BREAK, ...] into a list of `Chunk`.

    `segments` are the emphasis pieces already tokenized without special tokens.
    """
    chunks = []
    tokens, weights = [], []
    last_comma = -1

    def close():
        nonlocal tokens, weights, last_comma
        chunks.append(_frame(tokens, weights, spec, chunk_tokens))
        tokens, weights, last_comma = [], [], -1

    for segment in segments:
        if segment is None:
            close()
            continue
        ids, weight = segment
        for token in ids:
            if token == spec.comma:
                last_comma = len(tokens)
            elif (len(tokens) == chunk_tokens and last_comma >= 0
                  and len(tokens) - last_comma <= backtrack):
                # Full, with a comma near the end: the words after the comma move on.
                keep = last_comma + 1
                moved, moved_weights = tokens[keep:], weights[keep:]
                tokens, weights = tokens[:keep], weights[:keep]
                close()
                tokens, weights = moved, moved_weights
            if len(tokens) == chunk_tokens:
                close()
            if isinstance(token, tuple):
                # An embedding's vectors stay together in one chunk.
                if len(tokens) + len(token) > chunk_tokens:
                    close()
                tokens.extend(token)
                weights.extend([weight] * len(token))
                continue
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close()
    return chunks


def _frame(tokens, weights, spec, chunk_tokens):
    """Put start/end around the tokens and pad to chunk_tokens + 2."""
    pad = chunk_tokens - len(tokens)
    fixes = tuple((1 + i, t) for i, t in enumerate(tokens) if not isinstance(t, int))
    ids = [t if isinstance(t, int) else VECTOR_PLACEHOLDER for t in tokens]
    return Chunk([spec.bos] + ids + [spec.eos] + [spec.pad] * pad,
                 [1.0] + list(weights) + [1.0] + [1.0] * pad, fixes)


def empty_chunk(spec, chunk_tokens=CHUNK_TOKENS):
    """Return the chunk of an empty prompt (what shorter prompts are padded with)."""
    return _frame([], [], spec, chunk_tokens)


def tokenize_segments(parsed, tokenize):
    """
    Tokenize emphasis pieces: [(text, weight) or BREAK] -> [(ids, weight) or None].

    `tokenize(list of str)` returns the ids of each text without start/end tokens; each
    piece is tokenized on its own, as A1111 does. Only the exact BREAK marker breaks: a
    negative weight is an ordinary weight (`(a:-1)` keeps `a` at -1 in its chunk).
    """
    texts = [text for text, weight in parsed if not is_break((text, weight))]
    ids = iter(tokenize(texts) if texts else [])
    return [None if is_break((text, weight)) else (next(ids), weight)
            for text, weight in parsed]


def chunk_prompt(parsed, tokenize, spec):
    """Return the chunks of one prompt for one tokenizer."""
    return split_chunks(tokenize_segments(parsed, tokenize), spec)
