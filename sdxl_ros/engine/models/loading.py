# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Load SDXL base + refiner from presets, single-file checkpoints or diffusers folders, offline.

Single files are converted by diffusers' per-model `from_single_file` (and its CLIP
converter), given a bundled config folder from `resource/models` and `local_files_only=True`,
so nothing is ever looked up on a model hub. Their tensors are read one model at a time
straight onto the target device (`CheckpointReader`): on a Jetson the CPU and GPU share one
RAM, and building on the CPU and then copying held the weights twice. The refiner always
reuses the base's second text encoder, its tokenizer and the VAE: one copy in memory.
"""

from dataclasses import dataclass
import json
from pathlib import Path
from typing import Optional

from diffusers import (AutoencoderKL, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
import diffusers.utils

from sdxl_ros.engine.errors import ModelLoadError
from sdxl_ros.engine.model_files import (pick_single_file_config, read_checkpoint_shapes,
                                         resolve_source, UNET_PREFIX, VAE_PREFIX)
from sdxl_ros.engine.models import tokenizers as toks
from sdxl_ros.engine.models.checkpoint_reader import CheckpointReader
from sdxl_ros.engine.models.random_models import build_component
from sdxl_ros.engine.models.resources import model_config_dir
from sdxl_ros.engine.presets import PRESETS
from sdxl_ros.engine.torch_features import out_of_memory_errors
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection

# Newer diffusers pipelines take `dtype` and warn that `torch_dtype` is deprecated (they have
# the helper that resolves the two); older ones take only `torch_dtype`.
_PIPELINE_DTYPE_KWARG = 'dtype' if hasattr(diffusers.utils, '_resolve_dtype') else 'torch_dtype'


@dataclass
class LoadedModels:
    """The pipelines and the names reported in infotext."""

    base: object
    refiner: Optional[object]
    base_name: str
    refiner_name: str


def _assemble(role, config_name, parts, share_from=None, tokenizers=(None, None)):
    """
    Put components into a base or refiner pipeline, with the init flags of the config folder.

    The refiner takes encoder 2, its tokenizer and the VAE from `share_from` (one copy).
    """
    index = json.loads((model_config_dir(config_name) / 'model_index.json').read_text())
    scheduler = build_component(config_name, 'scheduler', None, None)
    if role == 'refiner':
        return StableDiffusionXLImg2ImgPipeline(
            vae=share_from.vae, text_encoder=None, text_encoder_2=share_from.text_encoder_2,
            tokenizer=None, tokenizer_2=share_from.tokenizer_2, unet=parts['unet'],
            scheduler=scheduler,
            requires_aesthetics_score=index.get('requires_aesthetics_score', True),
            force_zeros_for_empty_prompt=index.get('force_zeros_for_empty_prompt', False),
            add_watermarker=False)
    return StableDiffusionXLPipeline(
        vae=parts['vae'], text_encoder=parts['text_encoder'],
        text_encoder_2=parts['text_encoder_2'], tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1], unet=parts['unet'], scheduler=scheduler,
        force_zeros_for_empty_prompt=index.get('force_zeros_for_empty_prompt', True),
        add_watermarker=False)


def _preset_pipelines(preset_name, device, dtype, share_from=None, refiner=False):
    """Build a preset's base (or refiner, sharing `share_from`'s encoder 2, VAE, tokenizer)."""
    preset = PRESETS[preset_name]
    if refiner:
        config = preset.refiner_config
        return _assemble('refiner', config,
                         {'unet': build_component(config, 'unet', device, dtype)}, share_from)
    config = preset.base_config
    if preset.tokenizers == 'tiny':
        tokenizers = toks.tiny_tokenizers()
    else:
        tokenizers = _benchmark_tokenizers()
    parts = {name: build_component(config, name, device, dtype)
             for name in ('text_encoder', 'text_encoder_2', 'unet', 'vae')}
    return _assemble('base', config, parts, tokenizers=tokenizers)


def _benchmark_tokenizers():
    """
    Real CLIP tokenizers when the BPE vocabulary is installed, else the byte-level ones.

    Random weights make token identity irrelevant; only the 77-token shape matters.
    """
    bpe = toks.clip_bpe_file()
    return toks.clip_tokenizers_from_bpe(bpe) if bpe else toks.tiny_tokenizers()


# Key prefixes of each text encoder in the SGM layout, per role (the refiner has only bigG).
_TEXT_PREFIXES = {'base': (('text_encoder', 'conditioner.embedders.0.transformer.'),
                           ('text_encoder_2', 'conditioner.embedders.1.model.')),
                  'refiner': ()}


def _single_file_components(path, config_name, role, device, dtype):
    """
    Build the models of a single-file checkpoint straight onto `device`, one at a time.

    The refiner's text encoder and VAE are not read at all (the base's are shared). The text
    encoders go first through the host (diffusers' CLIP converter builds them there) and move
    to the device before the UNet is read, so the host never holds more than one encoder.
    """
    classes = {'text_encoder': CLIPTextModel, 'text_encoder_2': CLIPTextModelWithProjection}
    folder = str(model_config_dir(config_name))
    reader = CheckpointReader(path)
    parts = {}
    for name, prefix in _TEXT_PREFIXES[role]:
        state = reader.read((prefix,), 'cpu')
        model = create_diffusers_clip_model_from_ldm(
            classes[name], state, subfolder=name, config=folder, torch_dtype=dtype,
            local_files_only=True)
        del state
        parts[name] = model.to(device)
    wanted = [('unet', UNet2DConditionModel, UNET_PREFIX)]
    if role == 'base':
        wanted.append(('vae', AutoencoderKL, VAE_PREFIX))
    for name, cls, prefix in wanted:
        state = reader.read((prefix,), device)
        # `device` puts the weights where the state dict already is (diffusers >= 0.28
        # accepts it); the `.to` after is a no-op then, and the fallback where it is not.
        parts[name] = cls.from_single_file(
            state, config=folder, subfolder=name, torch_dtype=dtype, local_files_only=True,
            device=device).to(device)
        del state
        if torch.device(device).type == 'cuda':
            torch.cuda.empty_cache()
    return parts


def _single_file_pipeline(source, role, device, dtype, tokenizer_dir, share_from=None):
    """Load a single-file checkpoint with a bundled config, strictly offline, onto `device`."""
    shapes = read_checkpoint_shapes(source.location)
    config_name = pick_single_file_config(shapes, role, source.location)
    tokenizers = (None, None)
    if role == 'base':
        tokenizers = (toks.tiny_tokenizers() if config_name.startswith('tiny')
                      else toks.find_tokenizers(tokenizer_dir))
    try:
        parts = _single_file_components(source.location, config_name, role, device, dtype)
        return _assemble(role, config_name, parts, share_from, tokenizers)
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - report any conversion failure clearly
        if _is_oom_error(error):
            raise
        raise ModelLoadError(
            f'cannot load {role} checkpoint {source.location}: {error}') from error


def _is_oom_error(error):
    """Whether torch ran out of memory (the engine turns that into advice on memory modes)."""
    return isinstance(error, out_of_memory_errors()) or 'out of memory' in str(error).lower()


def _folder_variant(folder):
    """Return 'fp16' when a diffusers folder only holds fp16-variant UNet weights."""
    unet = Path(folder) / 'unet'
    plain = any(unet.glob('diffusion_pytorch_model.safetensors')) or any(
        unet.glob('diffusion_pytorch_model.bin'))
    return 'fp16' if not plain and any(unet.glob('*.fp16.*')) else None


def _folder_pipeline(source, role, dtype, share_from=None):
    """Load a diffusers-format folder, strictly offline."""
    kwargs = {'local_files_only': True, _PIPELINE_DTYPE_KWARG: dtype, 'add_watermarker': False,
              'variant': _folder_variant(source.location)}
    try:
        if role == 'refiner':
            return StableDiffusionXLImg2ImgPipeline.from_pretrained(
                source.location, text_encoder_2=share_from.text_encoder_2, vae=share_from.vae,
                tokenizer_2=share_from.tokenizer_2, **kwargs)
        return StableDiffusionXLPipeline.from_pretrained(source.location, **kwargs)
    except Exception as error:  # noqa: BLE001 - report any loading failure clearly
        hint = (' ' + toks.TOKENIZER_HELP) if 'tokenizer' in str(error).lower() else ''
        raise ModelLoadError(
            f'cannot load {role} model folder {source.location}: {error}.{hint}') from error


def _load_one(source, role, device, dtype, tokenizer_dir, share_from=None):
    """Load one pipeline from any kind of source."""
    if source.kind == 'preset':
        return _preset_pipelines(source.location, device, dtype, share_from,
                                 refiner=role == 'refiner')
    if source.kind == 'single_file':
        return _single_file_pipeline(source, role, device, dtype, tokenizer_dir, share_from)
    return _folder_pipeline(source, role, dtype, share_from)


def _check_pair(base, refiner, base_name, refiner_name):
    """Refuse a base and refiner whose shared text encoder does not fit the refiner."""
    text_width = base.text_encoder_2.config.hidden_size
    if refiner is not None and refiner.unet.config.cross_attention_dim != text_width:
        raise ModelLoadError(
            f'refiner {refiner_name!r} does not belong to base {base_name!r}: the refiner '
            f'expects {refiner.unet.config.cross_attention_dim}-wide text features, the base '
            f'text encoder gives {text_width}. Use matching models (both SDXL 1.0, or both '
            'from the same preset)')


def load_models(config, device, dtype):
    """Load base (+ refiner) as configured; models are returned on `device` (CPU if offloaded)."""
    base_source = resolve_source(config.base_model, config.model_dir, 'base')
    refiner_source = (resolve_source(config.refiner_model, config.model_dir, 'refiner')
                      if config.refiner_model else None)
    build_device = device if config.memory_mode == 'resident' else torch.device('cpu')
    base = _load_one(base_source, 'base', build_device, dtype, config.tokenizer_dir)
    refiner = None
    if refiner_source is not None:
        refiner = _load_one(refiner_source, 'refiner', build_device, dtype,
                            config.tokenizer_dir, share_from=base)
    _check_pair(base, refiner, base_source.display_name,
                refiner_source.display_name if refiner_source else '')
    return LoadedModels(base, refiner, base_source.display_name,
                        refiner_source.display_name if refiner_source else '')
