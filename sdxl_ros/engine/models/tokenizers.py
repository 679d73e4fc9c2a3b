# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
CLIP tokenizers without a model hub: generated, from a local folder, or from a package.

Single-file checkpoints carry no tokenizer. SDXL uses OpenAI's CLIP BPE tokenizer twice; the
second copy pads with '!' instead of '<|endoftext|>'. The vocabulary (49,408 tokens) follows
from OpenAI's `bpe_simple_vocab_16e6.txt.gz`, which the `openai-clip` PyPI package installs.
"""

import gzip
import importlib.util
import inspect
import json
from pathlib import Path
import tempfile

from sdxl_ros.engine.errors import ModelLoadError

from transformers import CLIPTokenizer

MAX_LENGTH = 77
BOS = '<|startoftext|>'
EOS = '<|endoftext|>'
PAD_2 = '!'
# Number of merges CLIP uses from its BPE file (vocab 49,408 = 512 byte tokens + merges + 2).
CLIP_MERGES = 49152 - 256 - 2

TOKENIZER_HELP = (
    'single-file checkpoints carry no tokenizer; provide one of: a diffusers model folder '
    '(with tokenizer/ and tokenizer_2/), the engine setting tokenizer_dir (a folder with the '
    'CLIP vocab.json and merges.txt, or tokenizer/ and tokenizer_2/ subfolders), or install '
    "the PyPI package 'openai-clip' (it ships OpenAI's CLIP BPE vocabulary)")


def byte_alphabet():
    """
    Return the 256 printable characters byte-level BPE uses for bytes 0..255, in CLIP order.

    Hand-written: transformers does not export this table, and its order defines token ids.
    Printable Latin-1 bytes stand for themselves; the others map to code points from 256 up.
    """
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))
    chars = [chr(b) for b in printable]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _make_pair(vocab, merges):
    """Build SDXL's two CLIP tokenizers (same vocab, different pad token)."""
    if 'vocab' in inspect.signature(CLIPTokenizer.__init__).parameters:
        # transformers >= 5 takes the vocabulary and merges in memory.
        def make(**kwargs):
            return CLIPTokenizer(vocab=dict(vocab), merges=list(merges),
                                 model_max_length=MAX_LENGTH, **kwargs)
        return make(), make(pad_token=PAD_2)
    # Older transformers (4.x) read them only from vocab.json and merges.txt files.
    with tempfile.TemporaryDirectory(prefix='sdxl_ros_tokenizer_') as folder:
        vocab_file = Path(folder) / 'vocab.json'
        merges_file = Path(folder) / 'merges.txt'
        vocab_file.write_text(json.dumps(dict(vocab)), encoding='utf-8')
        merges_file.write_text('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges),
                               encoding='utf-8')
        return tuple(CLIPTokenizer(str(vocab_file), str(merges_file),
                                   model_max_length=MAX_LENGTH, **kwargs)
                     for kwargs in ({}, {'pad_token': PAD_2}))


def tiny_tokenizers():
    """
    Byte-level CLIP tokenizers with no merges (514 tokens): every character is a token.

    Enough for random tiny models (vocab_size >= 514), built in-process so nothing is fetched.
    """
    alphabet = byte_alphabet()
    tokens = alphabet + [c + '</w>' for c in alphabet] + [BOS, EOS]
    return _make_pair({t: i for i, t in enumerate(tokens)}, [])


def clip_bpe_file():
    """
    Return the path of OpenAI's CLIP BPE file from an installed package, or None.

    Looks the package up without importing it (importing `clip` pulls torchvision).
    """
    for package in ('clip', 'open_clip'):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            path = Path(location) / 'bpe_simple_vocab_16e6.txt.gz'
            if path.is_file():
                return path
    return None


def clip_tokenizers_from_bpe(path):
    """Build the real CLIP vocab/merges from the BPE file and return SDXL's tokenizer pair."""
    with gzip.open(path, 'rt', encoding='utf-8') as stream:
        lines = stream.read().split('\n')
    merges = [tuple(line.split()) for line in lines[1:1 + CLIP_MERGES]]
    alphabet = byte_alphabet()
    tokens = alphabet + [c + '</w>' for c in alphabet] + [''.join(m) for m in merges]
    tokens += [BOS, EOS]
    return _make_pair({t: i for i, t in enumerate(tokens)}, merges)


def tokenizers_from_dir(folder):
    """Load the tokenizer pair from `folder` (tokenizer/ + tokenizer_2/, or one vocab set)."""
    folder = Path(folder)
    nested = (folder / 'tokenizer').is_dir() and (folder / 'tokenizer_2').is_dir()
    for sub in ([folder / 'tokenizer', folder / 'tokenizer_2'] if nested else [folder]):
        # transformers quietly builds an empty 3-token tokenizer from a folder without files.
        if not ((sub / 'vocab.json').is_file() and (sub / 'merges.txt').is_file()) and not (
                sub / 'tokenizer.json').is_file():
            raise ModelLoadError(f'cannot load CLIP tokenizers from {folder}: {sub} has no '
                                 'vocab.json + merges.txt or tokenizer.json. ' + TOKENIZER_HELP)
    try:
        if nested:
            return (CLIPTokenizer.from_pretrained(str(folder / 'tokenizer'),
                                                  local_files_only=True),
                    CLIPTokenizer.from_pretrained(str(folder / 'tokenizer_2'),
                                                  local_files_only=True))
        return (CLIPTokenizer.from_pretrained(str(folder), local_files_only=True),
                CLIPTokenizer.from_pretrained(str(folder), local_files_only=True,
                                              pad_token=PAD_2))
    except Exception as error:  # noqa: BLE001 - any parse/IO failure means "bad folder"
        raise ModelLoadError(
            f'cannot load CLIP tokenizers from {folder}: {error}. ' + TOKENIZER_HELP) from error


def find_tokenizers(tokenizer_dir=''):
    """Return SDXL's tokenizer pair for a single-file checkpoint, or raise ModelLoadError."""
    if tokenizer_dir:
        if not Path(tokenizer_dir).is_dir():
            raise ModelLoadError(f'tokenizer_dir {tokenizer_dir} is not a folder. '
                                 + TOKENIZER_HELP)
        return tokenizers_from_dir(tokenizer_dir)
    bpe = clip_bpe_file()
    if bpe is not None:
        return clip_tokenizers_from_bpe(bpe)
    raise ModelLoadError('no CLIP tokenizer found: ' + TOKENIZER_HELP)
