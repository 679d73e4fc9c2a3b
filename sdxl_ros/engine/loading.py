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
from pathlib import Path
from typing import Optional

from sdxl_ros.engine import tokenizers as toks
from sdxl_ros.engine.errors import ModelLoadError
from sdxl_ros.engine.presets import build_component, PRESETS
from sdxl_ros.engine.resources import model_config_dir
from sdxl_ros.engine.torch_features import out_of_memory_errors

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


@dataclass
class LoadedModels:
    """The pipelines and the names reported in infotext."""

    base: object
    refiner: Optional[object]
    base_name: str
    refiner_name: str


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
            from safetensors import safe_open
            with safe_open(str(path), framework='pt') as handle:
                shapes = {key: tuple(handle.get_slice(key).get_shape())
                          for key in handle.keys()}
            _check_safetensors_size(path)
            return shapes
        import torch
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
    import json
    import struct
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
    import json
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


def _assemble(role, config_name, parts, share_from=None, tokenizers=(None, None)):
    """
    Put components into a base or refiner pipeline, with the init flags of the config folder.

    The refiner takes encoder 2, its tokenizer and the VAE from `share_from` (one copy).
    """
    import json
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
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


# safetensors dtype names (the format's spec) -> torch dtype attribute names.
_SAFETENSORS_DTYPES = {
    'F64': 'float64', 'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16',
    'I64': 'int64', 'I32': 'int32', 'I16': 'int16', 'I8': 'int8', 'U8': 'uint8',
    'BOOL': 'bool', 'F8_E4M3': 'float8_e4m3fn', 'F8_E5M2': 'float8_e5m2'}


class CheckpointReader:
    """
    Read a single-file checkpoint's tensors, a key prefix at a time, onto a chosen device.

    Hand-written for safetensors instead of `safetensors.torch.load_file`: that maps the whole
    file and every page it touches stays in the process until the last tensor is dropped, so
    loading onto a GPU held the weights twice (file pages + device copy). On a Jetson, whose
    CPU and GPU share one RAM, that is ~25 GB for SDXL's 12.4 GB of files. Here each tensor is
    read with plain file reads into a small reusable host buffer and copied to the device, so
    the host holds at most one tensor beyond what is being built. Pickle checkpoints (.ckpt)
    are memory-mapped by torch and moved per tensor.
    """

    def __init__(self, path):
        """Parse the header (safetensors) or map the pickle (.ckpt); nothing is read yet."""
        import json
        import struct
        self.path = str(path)
        self._pickle = None
        self._header = None
        if Path(path).suffix.lower() == '.safetensors':
            with open(self.path, 'rb') as stream:
                length = struct.unpack('<Q', stream.read(8))[0]
                header = json.loads(stream.read(length))
            header.pop('__metadata__', None)
            self._data_start = 8 + length
            self._header = header
        else:
            import torch
            data = torch.load(self.path, map_location='cpu', weights_only=True, mmap=True)
            while isinstance(data, dict) and 'state_dict' in data:
                data = data['state_dict']
            self._pickle = data

    def keys(self):
        """Return the checkpoint's tensor names."""
        return list(self._header if self._header is not None else self._pickle)

    def read(self, prefixes, device):
        """Return {key: tensor} for the keys starting with one of `prefixes`, on `device`."""
        import torch
        device = torch.device(device)
        keys = [key for key in self.keys() if key.startswith(tuple(prefixes))]
        if self._pickle is not None:
            return {key: self._pickle[key].to(device) for key in keys
                    if isinstance(self._pickle[key], torch.Tensor)}
        entries = sorted(((self._header[key]['data_offsets'], key) for key in keys))
        largest = max((end - begin for (begin, end), _key in entries), default=0)
        staging = torch.empty(largest if device.type != 'cpu' else 0, dtype=torch.uint8)
        out = {}
        with open(self.path, 'rb', buffering=0) as stream:
            for (begin, end), key in entries:
                entry = self._header[key]
                dtype = getattr(torch, _SAFETENSORS_DTYPES[entry['dtype']])
                size = end - begin
                # A CPU target keeps each buffer as its tensor; a device target reuses one.
                buffer = (torch.empty(size, dtype=torch.uint8) if device.type == 'cpu'
                          else staging[:size])
                stream.seek(self._data_start + begin)
                if size and stream.readinto(memoryview(buffer.numpy())) != size:
                    raise ModelLoadError(f'checkpoint {self.path} is truncated at {key}: '
                                         'download it again')
                tensor = buffer.view(dtype).reshape(entry['shape'])
                out[key] = tensor if device.type == 'cpu' else tensor.to(device)
        return out


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
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
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
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    kwargs = {'local_files_only': True, 'torch_dtype': dtype, 'add_watermarker': False,
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
    import torch
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
