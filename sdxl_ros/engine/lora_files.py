# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
LoRA files in `lora_dir`: find them by name, check they fit the SDXL base, hash them.

No torch here (the node checks goals at admission with it): the safetensors header gives
the tensor names and shapes. A LoRA fits when its cross-attention projections read the base
UNet's text width (2048 for SDXL; SD 1.x LoRAs read 768, SD 2.x 1024, refiner LoRAs 1280)
and its text-encoder parts read the widths of the base's two text encoders.

`Lora hashes` in infotext uses A1111's short hash of a LoRA: the first 12 hex digits of
the sha256 of the file's tensor data, i.e. of everything after the safetensors header (the
"addnet" hash, so editing metadata keeps the hash), or the `sshs_model_hash` metadata entry
when the trainer stored one.
"""

from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import re
from typing import Optional

from sdxl_ros.engine.prompt_parser import extract_loras, strip_comments
from sdxl_ros.engine.request import RequestError

LORA_SUFFIX = '.safetensors'
SHORT_HASH = 12

# Key fragments of kohya/A1111 and diffusers/PEFT LoRA files.
_DOWN = r'(?:lora_down|lora\.down|lora_A)\.weight$'
_CROSS_K = re.compile(r'attn2[._]to_k[._]' + _DOWN)
_TE_Q = re.compile(r'(?:q_proj|self_attn[._]q_proj)[._]' + _DOWN)
_PREFIXES = {'unet': ('lora_unet_', 'unet.'),
             'te1': ('lora_te1_', 'text_encoder.'),
             'te2': ('lora_te2_', 'text_encoder_2.'),
             'te_sd1': ('lora_te_',)}


# The tensor-name endings of one module's low-rank pair (kohya, A1111 "lora.down", PEFT).
_PAIR_KEY = re.compile(r'\.(?:lora_down|lora_up|lora\.down|lora\.up|lora_A|lora_B|'
                       r'lora_linear_layer\.down|lora_linear_layer\.up)\.weight$')
_DOWN_KEY = re.compile(r'\.(?:lora_down|lora\.down|lora_A|lora_linear_layer\.down)\.weight$')
# Keys a LoRA/LoCon file may hold besides the pairs: scale, and bias-free extras.
_EXTRA_KEY = re.compile(r'\.alpha$')
# Network kinds diffusers' LoRA loader cannot apply, by a key ending of theirs.
_UNSUPPORTED = (
    (re.compile(r'\.hada_w[12]_[ab]$|\.hada_t[12]$'), 'a LyCORIS LoHa'),
    (re.compile(r'\.lokr_w[12](?:_[ab])?$|\.lokr_t2$'), 'a LyCORIS LoKr'),
    (re.compile(r'\.dora_scale$|\.lora_magnitude_vector'), 'a DoRA (its magnitude vectors)'),
    (re.compile(r'\.on_input$'), 'an (IA)^3 network'),
    (re.compile(r'\.oft_blocks$|\.oft_diag$'), 'an OFT network'),
    (re.compile(r'\.a[12]\.weight$|\.b[12]\.weight$'), 'a GLoRA'),
    (re.compile(r'\.diff(?:_b)?$'), 'a full-weight difference network'),
    (re.compile(r'\.[wb]_norm$'), 'a norm-layer network'),
)
#: How many key names a refusal lists before it counts the rest.
NAMES_SHOWN = 8


class LoraError(RequestError):
    """A LoRA cannot be used; the message says why (and what exists)."""


@dataclass(frozen=True)
class LoraTarget:
    """The widths a LoRA must match: the loaded base (and refiner) models' (plain ints)."""

    cross_attention_dim: int
    text_encoder_width: Optional[int]
    text_encoder_2_width: Optional[int]
    refiner_cross_attention_dim: Optional[int] = None


@dataclass(frozen=True)
class LoraFile:
    """One usable LoRA: the name in the tag, its file and A1111 short hash."""

    name: str
    path: str
    short_hash: str
    modules: int = 0


def list_loras(lora_dir):
    """Return the LoRA names (file stems) in `lora_dir` and its direct subfolders, sorted."""
    if not lora_dir:
        return []
    root = Path(lora_dir).expanduser()
    if not root.is_dir():
        return []
    names = set()
    for entry in root.iterdir():
        if entry.is_file() and entry.suffix.lower() == LORA_SUFFIX:
            names.add(entry.stem)
        elif entry.is_dir():
            for child in entry.iterdir():
                if child.is_file() and child.suffix.lower() == LORA_SUFFIX:
                    names.add(child.stem)
    return sorted(names)


def find_lora(name, lora_dir):
    """Return the path of LoRA `name` (a stem, or sub/stem), or raise LoraError."""
    if not lora_dir:
        raise LoraError(f'the prompt uses LoRA {name!r} but the node has no lora_dir: set the '
                        'lora_dir parameter to the folder holding NAME.safetensors files')
    root = Path(lora_dir).expanduser()
    candidates = [root / (name + LORA_SUFFIX)]
    if root.is_dir() and '/' not in name:
        candidates += sorted(sub / (name + LORA_SUFFIX) for sub in root.iterdir()
                             if sub.is_dir())
    for path in candidates:
        if path.is_file():
            return str(path)
    known = list_loras(lora_dir)
    raise LoraError(f'unknown LoRA {name!r}: no {name}{LORA_SUFFIX} in {root}; available: '
                    + (', '.join(known) if known else 'none'))


def read_header(path):
    """Return ({tensor name: shape}, metadata dict) from a safetensors file's header."""
    from safetensors import safe_open
    try:
        with safe_open(path, framework='numpy') as stream:
            shapes = {key: tuple(stream.get_slice(key).get_shape()) for key in stream.keys()}
            return shapes, dict(stream.metadata() or {})
    except Exception as error:  # noqa: BLE001 - any parse failure: not a safetensors file
        raise LoraError(f'{path} is not a readable safetensors file: {error}') from error


def _in_width(shapes, pattern, prefixes):
    """Return the input widths of the down projections matching `pattern` under `prefixes`."""
    return {shape[1] for key, shape in shapes.items()
            if key.startswith(prefixes) and pattern.search(key) and len(shape) >= 2}


def name_list(names, shown=NAMES_SHOWN):
    """Return 'a, b, c and N more' for a list of names (a refusal's whole list, counted)."""
    names = list(names)
    text = ', '.join(names[:shown])
    return text + (f' and {len(names) - shown} more' if len(names) > shown else '')


def module_count(shapes):
    """Return how many modules a LoRA file changes (its low-rank down matrices)."""
    return sum(1 for key in shapes if _DOWN_KEY.search(key))


def check_kind(name, shapes):
    """Raise LoraError unless every key is part of a LoRA/LoCon low-rank pair or its alpha."""
    for pattern, kind in _UNSUPPORTED:
        found = [key for key in shapes if pattern.search(key)]
        if found:
            raise LoraError(
                f'LoRA {name!r} is {kind} ({len(found)} keys such as {found[0]}): only LoRA and '
                'LoCon files (lora_down/lora_up or lora_A/lora_B pairs) can be applied; '
                "diffusers' LoRA loader does not read this kind of network")
    other = sorted(key for key in shapes
                   if not _PAIR_KEY.search(key) and not _EXTRA_KEY.search(key))
    if other:
        raise LoraError(f'LoRA {name!r} holds {len(other)} keys that are not LoRA weights and '
                        f'would not be applied: {name_list(other)}')


def check_fits(name, shapes, target):
    """Raise LoraError unless a LoRA with these tensor shapes fits `target` (None: keys only)."""
    has = {part: any(k.startswith(p) for k in shapes) for part, p in _PREFIXES.items()}
    if not (has['unet'] or has['te1'] or has['te2'] or has['te_sd1']):
        raise LoraError(f'LoRA {name!r} holds no LoRA weights (no lora_unet_/lora_te1_/'
                        'lora_te2_ keys): is it a LoRA at all?')
    check_kind(name, shapes)
    if has['te_sd1'] and not (has['te1'] or has['te2']):
        raise LoraError(f'LoRA {name!r} is not an SDXL LoRA: it has one text encoder '
                        '(lora_te_ keys), as SD 1.x/2.x LoRAs do; SDXL LoRAs have lora_te1_/'
                        'lora_te2_')
    if target is None:
        return
    widths = _in_width(shapes, _CROSS_K, _PREFIXES['unet'])
    if widths and widths != {target.cross_attention_dim}:
        width = max(widths)
        if target.refiner_cross_attention_dim in widths:
            raise LoraError(f'LoRA {name!r} is for the SDXL refiner (its cross-attention reads '
                            f'{width}-wide text); only base LoRAs are supported')
        raise LoraError(f'LoRA {name!r} is not an SDXL base LoRA: its cross-attention reads '
                        f'{width}-wide text, the base UNet {target.cross_attention_dim} '
                        '(SD 1.x LoRAs read 768, SD 2.x 1024)')
    for part, width in (('te1', target.text_encoder_width),
                        ('te2', target.text_encoder_2_width)):
        found = _in_width(shapes, _TE_Q, _PREFIXES[part])
        if found and found != {width}:
            raise LoraError(f'LoRA {name!r} does not fit the base text encoders: its '
                            f'{part} part reads width {max(found)}, the model has {width}')


_HASHES = {}


def short_hash(path, metadata=None):
    """Return A1111's 12-digit LoRA hash (sha256 of the tensor data, or sshs_model_hash)."""
    stored = (metadata or {}).get('sshs_model_hash')
    if stored:
        return stored[:SHORT_HASH]
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, 'rb') as stream:
            header_size = int.from_bytes(stream.read(8), 'little')
            stream.seek(8 + header_size)
            for block in iter(lambda: stream.read(1 << 20), b''):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key][:SHORT_HASH]


def resolve_lora(name, lora_dir, target=None, with_hash=True):
    """Find, check and (unless not `with_hash`) hash LoRA `name`; return a LoraFile."""
    path = find_lora(name, lora_dir)
    shapes, metadata = read_header(path)
    check_fits(name, shapes, target)
    return LoraFile(name, path, short_hash(path, metadata) if with_hash else '',
                    module_count(shapes))


def resolve_loras(tags, lora_dir, target=None, with_hash=True):
    """Return [(LoraFile, weight)] for merged (name, weight) pairs, or raise LoraError."""
    return [(resolve_lora(name, lora_dir, target, with_hash), weight) for name, weight in tags]


def merge_repeated(tags):
    """
    Return [(name, weight)], one per name, for LoRA tags as A1111 applies repeated ones.

    Tags are grouped by type (`lora`, `lyco`: a tag's `kind`, `lora` when it has none) in
    the order each type first appears; a name that occurs n times in that list is applied n
    times at its last weight there, i.e. once at n times that weight (linear in the weight).
    """
    kinds = []
    for tag in tags:
        kind = getattr(tag, 'kind', 'lora')
        if kind not in kinds:
            kinds.append(kind)
    ordered = [tag for kind in kinds for tag in tags if getattr(tag, 'kind', 'lora') == kind]
    counts, last = {}, {}
    for tag in ordered:
        counts[tag.name] = counts.get(tag.name, 0) + 1
        last[tag.name] = tag.weight
    return [(name, counts[name] * last[name]) for name in counts]


def request_loras(request, lora_dir, target=None, with_hash=True, comments=True):
    """
    Return (prompt text without any tag, [(LoraFile, weight)]) of a validated request.

    `comments` True strips `#` comments first (A1111's default): a tag in a comment is off.

    Raises LoraError (a RequestError) naming the LoRA and the reason. `target` None (no
    models loaded yet) checks names and keys only; the engine checks widths again. The node's
    admission passes `with_hash` False: hashing a large file is left to the engine.
    """
    text, tags = extract_loras(strip_comments(request.prompt) if comments else request.prompt)
    return text, resolve_loras(merge_repeated(tags), lora_dir, target, with_hash)
