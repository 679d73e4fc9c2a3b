# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Textual-inversion embeddings in `embeddings_dir`: find them, check they fit SDXL, hash them.

No torch here (the node checks goals at admission with it). As in A1111 an embedding is
named by its file stem (any depth below `embeddings_dir`) and used by writing that name in
the prompt or the negative prompt. An SDXL embedding is a `.safetensors` file with a
`clip_l` tensor (N vectors as wide as the first text encoder, 768) and a `clip_g` tensor (N
vectors as wide as the second, 1280); the N vectors take N token positions of the prompt.
A `.pt` file is read by the engine only through torch's weights-only loader (pickles run
code); its header cannot be read without torch, so it is checked when a goal uses it.

`TI hashes` in infotext uses A1111's short hash of an embedding: the first 12 hex digits of
the sha256 of the whole file.
"""

from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
from typing import Optional

from sdxl_ros.engine.request import RequestError

SAFETENSORS = '.safetensors'
PICKLE = '.pt'
EMBEDDING_SUFFIXES = (SAFETENSORS, PICKLE)
SHORT_HASH = 12
#: The widths of SD 1.x (CLIP ViT-L) and SD 2.x (OpenCLIP ViT-H) single-encoder embeddings.
_SINGLE_ENCODER_WIDTHS = {768: 'SD 1.x', 1024: 'SD 2.x'}


class EmbeddingError(RequestError):
    """An embedding cannot be used; the message says why."""


@dataclass(frozen=True)
class EmbeddingWidths:
    """The vector widths an embedding must have: the base's two text encoders (plain ints)."""

    clip_l: Optional[int]
    clip_g: Optional[int]


@dataclass(frozen=True)
class EmbeddingFile:
    """One embedding a prompt uses: its name, file, vector count and A1111 short hash."""

    name: str
    path: str
    vectors: int
    short_hash: str


def embedding_paths(embeddings_dir):
    """Return {name: path} of the embedding files below `embeddings_dir` (first by path)."""
    if not embeddings_dir:
        return {}
    root = Path(embeddings_dir).expanduser()
    if not root.is_dir():
        return {}
    found = {}
    for folder, _, files in sorted(os.walk(root, followlinks=True)):
        for file in sorted(files):
            path = Path(folder) / file
            if path.suffix.lower() in EMBEDDING_SUFFIXES and path.stat().st_size > 0:
                found.setdefault(path.stem, str(path))
    return found


def list_embeddings(embeddings_dir):
    """Return the embedding names (file stems) below `embeddings_dir`, sorted."""
    return sorted(embedding_paths(embeddings_dir))


def _edge(char):
    """Return the class CLIP's pre-tokenizer splits words by: letter, digit or other."""
    if char.isalpha():
        return 'letter'
    return 'digit' if char.isdigit() else ('space' if char.isspace() else 'other')


def mentions(text, name):
    """
    Whether `name` stands in `text` as CLIP's tokenizer would cut it out (case-insensitive).

    CLIP splits text into runs of letters, single digits and runs of other characters, so
    `name` matches where the characters on either side do not continue its first/last run:
    `cat` in `a cat,` or `cat2` but not `cats`. The engine matches token ids, as A1111 does;
    this is the torch-free check the node runs at admission.
    """
    if not name:
        return False
    text, name = text.lower(), name.lower()
    start = text.find(name)
    while start >= 0:
        end = start + len(name)
        before = _edge(text[start - 1]) if start > 0 else 'space'
        after = _edge(text[end]) if end < len(text) else 'space'
        first, last = _edge(name[0]), _edge(name[-1])
        if ((before != first or first == 'digit') and (after != last or last == 'digit')):
            return True
        start = text.find(name, start + 1)
    return False


def used_names(texts, embeddings_dir):
    """Return {name: path} of the embeddings that `texts` mention, in name order."""
    paths = embedding_paths(embeddings_dir)
    return {name: path for name, path in sorted(paths.items())
            if any(mentions(text, name) for text in texts)}


def read_header(path):
    """Return {tensor name: shape} of a safetensors embedding file."""
    from safetensors import safe_open
    try:
        with safe_open(path, framework='numpy') as stream:
            return {key: tuple(stream.get_slice(key).get_shape()) for key in stream.keys()}
    except Exception as error:  # noqa: BLE001 - any parse failure: not a safetensors file
        raise EmbeddingError(f'embedding file {path} cannot be read: '
                             f'{" ".join(str(error).split())}') from error


def check_shapes(name, shapes, widths=None):
    """
    Return the vector count of an embedding with these tensor shapes, or raise EmbeddingError.

    `widths` None checks the form only (SDXL's clip_l + clip_g pair of equal counts).
    """
    if 'clip_l' not in shapes or 'clip_g' not in shapes:
        single = [shape for shape in shapes.values() if len(shape) in (1, 2)]
        width = single[0][-1] if len(shapes) == 1 and single else None
        if width in _SINGLE_ENCODER_WIDTHS:
            raise EmbeddingError(
                f'embedding {name!r} is an {_SINGLE_ENCODER_WIDTHS[width]} embedding '
                f'({width}-wide vectors for one text encoder only); SDXL embeddings have '
                'clip_l (768) and clip_g (1280) tensors')
        raise EmbeddingError(
            f'embedding {name!r} is not an SDXL textual-inversion embedding: it holds '
            f'{", ".join(sorted(shapes)) or "no tensors"}, not the clip_l and clip_g tensors')
    counts = {}
    for key in ('clip_l', 'clip_g'):
        shape = shapes[key]
        if len(shape) == 1:
            shape = (1,) + tuple(shape)
        if len(shape) != 2 or shape[0] < 1:
            raise EmbeddingError(f'embedding {name!r}: its {key} tensor has shape '
                                 f'{list(shapes[key])}, not (vectors, width)')
        counts[key] = shape
    if counts['clip_l'][0] != counts['clip_g'][0]:
        raise EmbeddingError(f'embedding {name!r} has {counts["clip_l"][0]} clip_l vectors but '
                             f'{counts["clip_g"][0]} clip_g vectors; they must match')
    if widths is not None:
        for key, width in (('clip_l', widths.clip_l), ('clip_g', widths.clip_g)):
            if width is not None and counts[key][1] != width:
                raise EmbeddingError(
                    f'embedding {name!r} does not fit the base text encoders: its {key} vectors '
                    f"are {counts[key][1]} wide, the model's are {width}")
    return counts['clip_l'][0]


_HASHES = {}


def short_hash(path):
    """Return A1111's 12-digit embedding hash: the sha256 of the whole file."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, 'rb') as stream:
            for block in iter(lambda: stream.read(1 << 20), b''):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key][:SHORT_HASH]


def resolve_embedding(name, path, widths=None, with_hash=True):
    """Check one embedding file and return its EmbeddingFile (vectors 0: a .pt, unread)."""
    if path.lower().endswith(PICKLE):
        vectors = 0  # read (weights only) and checked by the engine
    else:
        vectors = check_shapes(name, read_header(path), widths)
    return EmbeddingFile(name, path, vectors, short_hash(path) if with_hash else '')


def request_embeddings(texts, embeddings_dir, widths=None, with_hash=True):
    """
    Return [EmbeddingFile] of the embeddings that `texts` (prompt, negative) use.

    Raises EmbeddingError (a RequestError) naming the embedding and the reason. The node's
    admission passes `with_hash` False: hashing is left to the engine.
    """
    return [resolve_embedding(name, path, widths, with_hash)
            for name, path in used_names(texts, embeddings_dir).items()]
