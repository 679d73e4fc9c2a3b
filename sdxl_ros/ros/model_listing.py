# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""What `~/list_models` reports: checkpoints and diffusers folders in model_dir, then presets."""

from pathlib import Path

from sdxl_ros.engine.controlnet_files import list_controlnets as _list_controlnets
from sdxl_ros.engine.embedding_files import list_embeddings as _list_embeddings
from sdxl_ros.engine.lora_files import list_loras as _list_loras
from sdxl_ros.engine.presets import PRESETS

#: Suffixes of single-file checkpoints that are listed.
CHECKPOINT_SUFFIXES = ('.safetensors', '.ckpt')


def list_models(model_dir):
    """
    Return (names relative to model_dir, sorted, then the preset names; absolute dir).

    Lists single-file checkpoints and folders holding a model_index.json, one level deep and
    in direct subfolders (a common layout: models/sdxl/sd_xl_base_1.0.safetensors). A missing
    or empty model_dir lists only the presets.
    """
    names = []
    directory = ''
    if model_dir:
        root = Path(model_dir).expanduser().resolve()
        directory = str(root)
        if root.is_dir():
            names = sorted(_models_in(root))
    return names + list(PRESETS), directory


def _models_in(root):
    """Yield the model names (relative paths) in `root` and its direct subfolders."""
    for entry in root.iterdir():
        if _is_model(entry):
            yield entry.name
        elif entry.is_dir():
            for child in entry.iterdir():
                if _is_model(child):
                    yield f'{entry.name}/{child.name}'


def _is_model(path):
    """Whether `path` is a checkpoint file or a diffusers folder."""
    if path.is_file():
        return path.suffix.lower() in CHECKPOINT_SUFFIXES
    return path.is_dir() and (path / 'model_index.json').is_file()


def list_loras(lora_dir):
    """Return the LoRA names in lora_dir (file stems, as <lora:NAME:...> tags use them)."""
    return _list_loras(lora_dir)


def list_embeddings(embeddings_dir):
    """Return the textual-inversion embedding names in embeddings_dir (used as prompt words)."""
    return _list_embeddings(embeddings_dir)


def list_controlnets(controlnet_dir, model_dir):
    """Return the ControlNet names in controlnet_dir and model_dir, then the presets."""
    return _list_controlnets(controlnet_dir, model_dir)
