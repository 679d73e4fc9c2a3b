# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Textual-inversion embeddings in prompts, as A1111 uses them: a name's tokens become vectors.

Where a prompt piece's token ids hold the ids of an embedding's name (the name tokenized by
the same tokenizer, longest name first), they are replaced by the embedding's N vectors, one
token position each (`EmbeddingVector` items, grouped so the chunker keeps them in one
chunk, as A1111 does). At encoding the vectors go in where the token embeddings are read
(`vectors_at`: a forward hook on the encoder's token-embedding layer for that one call), so
the models are never changed: diffusers' `load_textual_inversion` would add tokens and resize
the embedding matrices, which the fast path's captured text-encoder graphs read in place.
`clip_l` vectors go to `text_encoder`, `clip_g` ones to `text_encoder_2`.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
import inspect
import os

from safetensors.torch import load_file

from sdxl_ros.engine.embedding_files import (check_shapes, EmbeddingError, EmbeddingWidths,
                                             request_embeddings)

import torch

#: Where each pipeline text encoder takes its vectors from in an SDXL embedding file.
ENCODER_KEYS = {'text_encoder': 'clip_l', 'text_encoder_2': 'clip_g'}


@dataclass(frozen=True)
class EmbeddingVector:
    """Vector `index` of embedding `name`, standing at one token position of a chunk."""

    name: str
    index: int
    vectors: object = field(compare=False, hash=False, repr=False)  # (N, width) tensor


@dataclass
class Embedding:
    """A loaded embedding: its file's facts and one (N, width) tensor per encoder key."""

    file: object  # embedding_files.EmbeddingFile
    tensors: dict

    @property
    def name(self):
        """Return the name used in prompts."""
        return self.file.name

    def vectors_for(self, key):
        """Return the group of EmbeddingVector items for encoder key 'clip_l' or 'clip_g'."""
        tensor = self.tensors[key]
        return tuple(EmbeddingVector(self.name, i, tensor) for i in range(tensor.shape[0]))


def embedding_widths(base):
    """Return the EmbeddingWidths (plain ints) of a loaded base pipeline's text encoders."""
    def width(encoder):
        return int(encoder.config.hidden_size) if encoder is not None else None
    return EmbeddingWidths(width(base.text_encoder), width(base.text_encoder_2))


def _weights_only_load():
    """Return torch.load with weights_only=True, or None where this torch lacks it."""
    if 'weights_only' not in inspect.signature(torch.load).parameters:
        return None
    return lambda path: torch.load(path, map_location='cpu', weights_only=True)


def read_tensors(name, path):
    """Return {key: tensor} of an embedding file; .pt only through weights-only loading."""
    if not path.lower().endswith('.pt'):
        try:
            return load_file(path, device='cpu')
        except Exception as error:  # noqa: BLE001 - any parse failure
            raise EmbeddingError(f'embedding {name!r} ({path}) cannot be read: '
                                 f'{" ".join(str(error).split())}') from error
    load = _weights_only_load()
    if load is None:
        raise EmbeddingError(f'embedding {name!r} is a .pt pickle and this torch cannot read '
                             'pickles safely (no weights_only loading): convert it to '
                             '.safetensors')
    try:
        data = load(path)
    except Exception as error:  # noqa: BLE001 - refused or broken pickle
        raise EmbeddingError(f'embedding {name!r} ({path}) cannot be read as plain tensors '
                             f'(weights only): {" ".join(str(error).split())}') from error
    if isinstance(data, dict) and 'string_to_param' in data:
        data = dict(data['string_to_param'])  # A1111's own training output (SD 1.x/2.x)
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise EmbeddingError(f'embedding {name!r} ({path}) holds no tensors by name')
    return data


def load_embedding(file, widths):
    """Read and check one EmbeddingFile; return an Embedding with float32 CPU tensors."""
    tensors = read_tensors(file.name, file.path)
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    vectors = check_shapes(file.name, shapes, widths)
    kept = {}
    for key in ('clip_l', 'clip_g'):
        tensor = tensors[key].detach().float()
        kept[key] = tensor.reshape(1, -1) if tensor.ndim == 1 else tensor
    return Embedding(replace(file, vectors=vectors), kept)


class EmbeddingSet:
    """The embeddings of `embeddings_dir` that goals used, read once per file version."""

    def __init__(self, widths):
        """Start empty; `widths` is what every embedding must match."""
        self.widths = widths
        self._cache = {}  # (path, size, mtime) -> Embedding

    def for_texts(self, texts, embeddings_dir):
        """Return {name: Embedding} of the embeddings `texts` mention (EmbeddingError if bad)."""
        found = {}
        for file in request_embeddings(texts, embeddings_dir, self.widths):
            stat = os.stat(file.path)
            key = (file.path, stat.st_size, stat.st_mtime_ns)
            if key not in self._cache:
                self._cache[key] = load_embedding(file, self.widths)
            found[file.name] = self._cache[key]
        return found


def name_ids(tokenizer, embeddings):
    """Return [(token ids of the name, Embedding)], longest first (A1111's lookup order)."""
    pairs = []
    for embedding in embeddings.values():
        ids = tokenizer([embedding.name], add_special_tokens=False, truncation=False,
                        verbose=False)['input_ids'][0]
        if ids:
            pairs.append((tuple(ids), embedding))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def substitute(ids, lookup, key):
    """
    Return `ids` with each embedding name's ids replaced by its vector group for `key`.

    `lookup` is `name_ids`'s list; a group (a tuple of EmbeddingVector) takes one item of
    the returned list and as many token positions as the embedding has vectors.
    """
    result = []
    position = 0
    while position < len(ids):
        for name, embedding in lookup:
            if tuple(ids[position:position + len(name)]) == name:
                result.append(embedding.vectors_for(key))
                position += len(name)
                break
        else:
            result.append(ids[position])
            position += 1
    return result


@contextmanager
def vectors_at(encoder, fixes):
    """
    Put embedding vectors at their token positions for the encoder calls inside.

    `fixes` are (position in the 77 tokens, EmbeddingVector). A forward hook on the
    token-embedding layer replaces those rows of its output (batch of one chunk).
    """
    def hook(module, inputs, output):
        output = output.clone()
        for position, vector in fixes:
            output[:, position] = vector.vectors[vector.index].to(output.dtype).to(
                output.device)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        with torch.no_grad():
            yield
    finally:
        handle.remove()


def plain_call_kwargs(ids):
    """
    Return keyword arguments that make a fast-path encoder run its own forward.

    A captured text-encoder graph (acceleration.GraphedEncoder) would replay without the
    hook; it runs the module's forward for any call with a tensor keyword argument. The
    positions passed are the ones CLIP uses by default (0..n-1), so the result is the same.
    """
    return {'position_ids': torch.arange(ids.shape[-1], device=ids.device).unsqueeze(0)}


def matched_names(tokenizer, embeddings, texts):
    """Return the names of `embeddings` whose tokens occur in `texts`, in order of first use."""
    if not embeddings or tokenizer is None:
        return []
    lookup = name_ids(tokenizer, embeddings)
    names = []
    for text in texts:
        if not text:
            continue
        ids = tokenizer([text], add_special_tokens=False, truncation=False,
                        verbose=False)['input_ids'][0]
        for item in substitute(ids, lookup, 'clip_l'):
            if isinstance(item, tuple) and item[0].name not in names:
                names.append(item[0].name)
    return names
