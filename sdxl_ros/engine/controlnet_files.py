# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
ControlNet models on disk: find them by name, check they fit the SDXL base, hash them.

A ControlNet is a diffusers folder (config.json of a ControlNetModel or
ControlNetUnionModel next to its weights) or a single .safetensors file, looked up in
`controlnet_dir` and then `model_dir`; the presets `tiny` and `tiny-union` need no file
(tests). No torch here: config.json or the safetensors header tells the text width the
ControlNet's cross-attention reads (2048 for SDXL base; 768 for SD 1.x, 1024 for SD 2.x, 1280
for the refiner) and whether it is a union model. Infotext names a model `name [hash]` with
the short hash A1111 shows for model files (sha256 of the 64 KiB at offset 1 MiB, 8 hex digits).
"""

from dataclasses import dataclass
import hashlib
import json
from pathlib import Path

from sdxl_ros.engine.request import RequestError

#: ControlNets that need no file, built from the tiny preset's UNet (tests): a plain one
#: and a union one.
CONTROLNET_PRESETS = ('tiny', 'tiny-union')
_CLASSES = ('ControlNetModel', 'ControlNetUnionModel')
_WEIGHT_FILES = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin')
# Key fragments that only ControlNet files hold (diffusers and original layouts).
_CONTROL_KEYS = ('controlnet_cond_embedding.', 'control_model.', 'input_hint_block.')
_UNION_KEYS = ('task_embedding', 'control_add_embedding', 'control_type_proj')
#: Union control type a module implies when a unit names none.
MODULE_TYPES = {'depth': 'Depth', 'depth_metric': 'Depth', 'canny': 'Hard Edge'}


class ControlNetError(RequestError):
    """A ControlNet cannot be used; the message says why."""


@dataclass(frozen=True)
class ControlNetFile:
    """One usable ControlNet: its name, path ('' for a preset), kind and short hash."""

    name: str
    path: str
    is_union: bool = False
    short_hash: str = ''


def _read_header(path):
    """Return the safetensors header of `path` ({key: {shape, dtype}}), or ControlNetError."""
    try:
        with open(path, 'rb') as stream:
            size = int.from_bytes(stream.read(8), 'little')
            if not 0 < size < 100_000_000:
                raise ValueError(f'header size {size}')
            header = json.loads(stream.read(size))
    except (OSError, ValueError) as error:
        raise ControlNetError(f'cannot read {path} as safetensors: {error}') from None
    header.pop('__metadata__', None)
    return header


def _folder_facts(folder):
    """Return (cross_attention_dim, is_union) of a diffusers ControlNet folder."""
    try:
        config = json.loads((folder / 'config.json').read_text())
    except (OSError, ValueError) as error:
        raise ControlNetError(f'cannot read {folder}/config.json: {error}') from None
    if config.get('_class_name') not in _CLASSES:
        raise ControlNetError(f'{folder} is not a ControlNet folder (config.json names '
                              f'{config.get("_class_name")!r})')
    return config.get('cross_attention_dim'), config['_class_name'] == 'ControlNetUnionModel'


def _file_facts(path):
    """Return (cross_attention_dim or None, is_union, is_controlnet) from a file's header."""
    header = _read_header(path)
    width = None
    for key, entry in header.items():
        if key.endswith('attn2.to_k.weight') and len(entry.get('shape', ())) == 2:
            width = entry['shape'][1]
            break
    is_control = any(fragment in key for key in header for fragment in _CONTROL_KEYS)
    is_union = any(fragment in key for key in header for fragment in _UNION_KEYS)
    return width, is_union, is_control


def _is_controlnet(path):
    """Whether `path` is a ControlNet folder or file (cheap checks only)."""
    if path.is_dir():
        try:
            _folder_facts(path)
            return True
        except ControlNetError:
            return False
    if path.suffix.lower() != '.safetensors':
        return False
    try:
        return _file_facts(path)[2]
    except ControlNetError:
        return False


def _roots(controlnet_dir, model_dir):
    """Return the existing folders to look in, controlnet_dir first."""
    return [Path(d).expanduser().resolve() for d in (controlnet_dir, model_dir)
            if d and Path(d).expanduser().is_dir()]


def list_controlnets(controlnet_dir, model_dir):
    """Return the ControlNet names in the folders (direct entries), then the presets."""
    names = []
    for root in _roots(controlnet_dir, model_dir):
        for entry in sorted(root.iterdir()):
            name = entry.stem if entry.is_file() else entry.name
            if name not in names and _is_controlnet(entry):
                names.append(name)
    return names + list(CONTROLNET_PRESETS)


def find_controlnet(name, controlnet_dir, model_dir):
    """Return the path of ControlNet `name` (folder, NAME or NAME.safetensors), or raise."""
    if name in CONTROLNET_PRESETS:
        return ''
    if '..' in Path(name).parts or Path(name).is_absolute():
        raise ControlNetError(f'ControlNet name {name!r} must be a plain name inside '
                              'controlnet_dir or model_dir')
    roots = _roots(controlnet_dir, model_dir)
    for root in roots:
        for candidate in (root / name, root / f'{name}.safetensors'):
            if candidate.exists() and _is_controlnet(candidate):
                return str(candidate)
    where = ', '.join(str(r) for r in roots) or 'no folder (controlnet_dir and model_dir unset)'
    known = ', '.join(list_controlnets(controlnet_dir, model_dir))
    raise ControlNetError(f'unknown ControlNet {name!r} (looked in {where}); known: {known}')


def short_hash(path):
    """Return A1111's 8-digit model hash of a file (or of a folder's weight file)."""
    target = Path(path)
    if target.is_dir():
        target = next((target / f for f in _WEIGHT_FILES if (target / f).is_file()), None)
        if target is None:
            return ''
    digest = hashlib.sha256()
    with open(target, 'rb') as stream:
        stream.seek(0x100000)
        digest.update(stream.read(0x10000))
    return digest.hexdigest()[:8]


def resolve_controlnet(name, controlnet_dir, model_dir, cross_attention_dim=None,
                       with_hash=True):
    """
    Find and check ControlNet `name`; return a ControlNetFile or raise ControlNetError.

    `cross_attention_dim`: the loaded base UNet's (None before loading: names only).
    """
    path = find_controlnet(name, controlnet_dir, model_dir)
    if not path:
        return ControlNetFile(name, '', is_union=name.endswith('union'))
    if Path(path).is_dir():
        width, is_union = _folder_facts(Path(path))
    else:
        width, is_union, _ = _file_facts(path)
    if cross_attention_dim is not None and width is not None and width != cross_attention_dim:
        kind = {768: 'SD 1.x', 1024: 'SD 2.x', 1280: 'the SDXL refiner'}.get(width, 'another')
        raise ControlNetError(
            f'ControlNet {name!r} is made for {kind} model (its cross-attention reads width '
            f'{width}; the base model has {cross_attention_dim}): use an SDXL ControlNet')
    return ControlNetFile(name, path, is_union, short_hash(path) if with_hash else '')


def request_controlnets(request, controlnet_dir, model_dir, cross_attention_dim=None,
                        with_hash=True):
    """
    Return the ControlNetFile of each unit of a validated request, or raise ControlNetError.

    Also refuses a union control_type on a plain ControlNet, and a union ControlNet whose
    type neither the unit nor its module says. The node's admission passes
    `with_hash` False (names, kinds and widths only); the engine hashes.
    """
    files = []
    for index, unit in enumerate(request.control):
        found = resolve_controlnet(unit.model, controlnet_dir, model_dir, cross_attention_dim,
                                   with_hash)
        if unit.control_type and not found.is_union:
            raise ControlNetError(f'control[{index}].control_type {unit.control_type!r} is for '
                                  f'union ControlNets; {unit.model!r} is a plain one: leave '
                                  'control_type empty')
        if found.is_union and not unit.control_type and unit.module not in MODULE_TYPES:
            raise ControlNetError(f'control[{index}]: {unit.model!r} is a union ControlNet and '
                                  f'module {unit.module} implies no control type: set '
                                  'control_type (Depth, Hard Edge, Soft Edge, ...)')
        files.append(found)
    return files
