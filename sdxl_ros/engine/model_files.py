# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Model file checks without torch: where a configured model comes from, and what a checkpoint is.

The node checks its configured models with these before any weights load (engine_slot.py,
ros/node_parameters.py), so this module imports no torch at the top; reading the key shapes of
a pickle checkpoint (.ckpt) is the one place that needs it, and imports it there.
"""

from dataclasses import dataclass
import json
from pathlib import Path
import struct

from safetensors import safe_open

from sdxl_ros.engine.errors import ModelLoadError
from sdxl_ros.engine.models.resources import model_config_dir
from sdxl_ros.engine.presets import PRESETS

SINGLE_FILE_SUFFIXES = ('.safetensors', '.ckpt', '.pt', '.pth', '.bin')

# Keys of the original (SGM) single-file layout that identify what a checkpoint holds.
KEY_CONV_IN = 'model.diffusion_model.input_blocks.0.0.weight'
KEY_CLIP_L = 'conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight'
KEY_BIGG_BASE = 'conditioner.embedders.1.model.positional_embedding'
KEY_BIGG_REFINER = 'conditioner.embedders.0.model.positional_embedding'
KEY_VAE = 'first_stage_model.decoder.conv_out.weight'
UNET_PREFIX = 'model.diffusion_model.'
VAE_PREFIX = 'first_stage_model.'

# Bundled configs a single file may match, per role, tried in order.
SINGLE_FILE_CONFIGS = {'base': ('sdxl-base', 'tiny-base'),
                       'refiner': ('sdxl-refiner', 'tiny-refiner')}


@dataclass
class ModelSource:
    """Where a model comes from: kind is 'preset', 'single_file' or 'folder'."""

    kind: str
    location: str
    display_name: str


def resolve_source(name, model_dir, role):
    """Turn a configured model name into a ModelSource, or raise ModelLoadError."""
    if name in PRESETS:
        return ModelSource('preset', name, name)
    path = Path(name).expanduser()
    if not path.is_absolute() and model_dir:
        path = Path(model_dir).expanduser() / path
    if path.is_dir():
        if not (path / 'model_index.json').is_file():
            raise ModelLoadError(
                f'{role} model folder {path} has no model_index.json: give a diffusers-format '
                'folder or a single-file checkpoint such as sd_xl_base_1.0.safetensors')
        return ModelSource('folder', str(path), path.name)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                f'{role} model {path} is not a checkpoint (expected one of '
                + ', '.join(SINGLE_FILE_SUFFIXES) + ')')
        return ModelSource('single_file', str(path), path.stem)
    raise ModelLoadError(
        f'{role} model {name!r} not found (looked at {path}). Put the checkpoint '
        f'(e.g. sd_xl_{role}_1.0.safetensors) in model_dir, give an absolute path or a '
        'diffusers folder, or use a preset: ' + ', '.join(PRESETS))


def read_checkpoint_shapes(path):
    """
    Return {key: shape} of a checkpoint without loading its tensors.

    A truncated or corrupt file fails here with a message that says to download it again.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == '.safetensors':
            with safe_open(str(path), framework='pt') as handle:
                shapes = {key: tuple(handle.get_slice(key).get_shape())
                          for key in handle.keys()}
            _check_safetensors_size(path)
            return shapes
        import torch  # only for pickle checkpoints; the module stays torch-free
        data = torch.load(str(path), map_location='cpu', weights_only=True, mmap=True)
        while isinstance(data, dict) and 'state_dict' in data:
            data = data['state_dict']
        return {key: tuple(value.shape) for key, value in data.items()
                if hasattr(value, 'shape')}
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure means a damaged file
        raise ModelLoadError(
            f'cannot read checkpoint {path}: {error}. The file is damaged or truncated '
            '(an interrupted download?): download it again') from error


def _check_safetensors_size(path):
    """Refuse a safetensors file shorter than its header says (truncated download)."""
    with open(path, 'rb') as stream:
        header_len = struct.unpack('<Q', stream.read(8))[0]
        header = json.loads(stream.read(header_len))
    end = max((entry['data_offsets'][1] for key, entry in header.items()
               if key != '__metadata__'), default=0)
    expected = 8 + header_len + end
    actual = path.stat().st_size
    if actual < expected:
        raise ModelLoadError(
            f'checkpoint {path} is truncated: {actual} bytes, its header needs {expected}. '
            'Download it again')


def _describe_wrong_checkpoint(shapes, role, path):
    """Explain why a checkpoint is not an SDXL `role` checkpoint, or return None if it is."""
    keys = shapes.keys()
    if KEY_CONV_IN not in shapes:
        return (f'{path} holds no Stable Diffusion UNet (no {KEY_CONV_IN}); it may be a LoRA, '
                f'VAE or embedding file. Give the full SDXL {role} checkpoint')
    if any(key.startswith('cond_stage_model.') for key in keys):
        return (f'{path} is a Stable Diffusion 1.x/2.x checkpoint, not SDXL. '
                f'Give the SDXL {role} checkpoint (sd_xl_{role}_1.0.safetensors)')
    is_base = KEY_CLIP_L in shapes and KEY_BIGG_BASE in shapes
    is_refiner = KEY_BIGG_REFINER in shapes and not is_base
    if role == 'base' and is_refiner:
        return (f'{path} is an SDXL refiner checkpoint; set it as the refiner model and give '
                'sd_xl_base_1.0.safetensors as the base model')
    if role == 'refiner' and is_base:
        return (f'{path} is an SDXL base checkpoint; set it as the base model and give '
                'sd_xl_refiner_1.0.safetensors as the refiner model')
    if not (is_base if role == 'base' else is_refiner) or KEY_VAE not in shapes:
        return (f'{path} is not an SDXL {role} checkpoint (its text encoder / VAE keys do not '
                f'match the SDXL layout). Give sd_xl_{role}_1.0.safetensors')
    return None


def pick_single_file_config(shapes, role, path):
    """Return the bundled config folder name whose architecture matches the checkpoint."""
    problem = _describe_wrong_checkpoint(shapes, role, path)
    if problem:
        raise ModelLoadError(problem)
    width = shapes[KEY_CONV_IN][0]
    bigg = KEY_BIGG_BASE if role == 'base' else KEY_BIGG_REFINER
    text_width = shapes[bigg][-1]
    for name in SINGLE_FILE_CONFIGS[role]:
        folder = model_config_dir(name)
        unet = json.loads((folder / 'unet' / 'config.json').read_text())
        text = json.loads((folder / 'text_encoder_2' / 'config.json').read_text())
        if unet['block_out_channels'][0] == width and text['hidden_size'] == text_width:
            return name
    raise ModelLoadError(
        f'{path} has an unknown SDXL {role} architecture (UNet width {width}, text width '
        f'{text_width}); supported: the SDXL 1.0 base/refiner layout')
