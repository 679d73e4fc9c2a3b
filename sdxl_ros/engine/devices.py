# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The devices one server runs engines on: names, whether they exist, whether the models fit.

A server may drive several devices, one engine each (the node's `devices` parameter). Names are
torch's, with an index: `cuda:0`, `cuda:1`, ... A bare `cuda` means `cuda:0` and a bare `cpu`
means `cpu:0`. `cpu:N` names engines that all run on the host's CPU (stand-ins for GPUs in tests
and benchmarks: PyTorch has one CPU device, so the index only tells the engines apart), which is
why `cpu` may appear more than once only in that explicit form. A name listed twice (after
`cuda` -> `cuda:0`, `cpu` -> `cpu:0`) is refused, as are names of other kinds.

Torch is imported only by the checks that need it (`device_problems`, `weight_bytes`), so the
parsing is usable and tested without it.
"""

import re

_NAME = re.compile(r'(cuda|cpu)(?::(\d+))?')
#: Engines of one process on the host's CPU share its RAM: each holds a copy of the weights.
HOST = 'host memory'


def canonical_device(name):
    """Return `name` as `kind:index` (`cuda` -> `cuda:0`), or raise ValueError saying why."""
    match = _NAME.fullmatch(str(name).strip().lower())
    if match is None:
        raise ValueError(f'device {name!r} is not cuda, cuda:N, cpu or cpu:N')
    return f'{match.group(1)}:{int(match.group(2) or 0)}'


def parse_devices(names):
    """Return (canonical names in order, problems): unknown forms and duplicates refused."""
    devices, problems = [], []
    for name in names:
        try:
            device = canonical_device(name)
        except ValueError as error:
            problems.append(f'devices: {error}')
            continue
        if device in devices:
            problems.append(f'devices: {name!r} is listed twice (as {device}); each device '
                            'runs one engine (several CPU engines: cpu:0, cpu:1, ...)')
            continue
        devices.append(device)
    return devices, problems


def engine_device(name):
    """Return the EngineConfig device of a canonical name: `cpu:N` -> `cpu`, `cuda:N` kept."""
    return 'cpu' if name.startswith('cpu') else name


def device_problems(devices, weight_bytes_of, dtype='auto'):
    """
    Return why each of `devices` (canonical names) cannot hold the models, as strings.

    `weight_bytes_of(itemsize)` returns the bytes of the models' weights at that element size
    (`weight_bytes`). A CUDA device must exist and have that much memory free; the CPU engines
    together must fit the host's available memory (each holds a copy).
    """
    import torch
    from sdxl_ros.engine.generation.memory import host_memory
    problems, cpu_engines = [], [d for d in devices if d.startswith('cpu')]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device in devices:
        if device.startswith('cpu'):
            continue
        index = int(device.split(':')[1])
        if index >= count:
            problems.append(f'device {device} does not exist: PyTorch sees '
                            f'{count or "no"} CUDA GPU{"" if count == 1 else "s"}'
                            + (f' (cuda:0..cuda:{count - 1})' if count > 1 else ''))
            continue
        free, _total = torch.cuda.mem_get_info(index)
        problems += memory_problems(device, weight_bytes_of(_itemsize(dtype, 'cuda')), free)
    if cpu_engines:
        need = len(cpu_engines) * weight_bytes_of(_itemsize(dtype, 'cpu'))
        problems += memory_problems(
            ', '.join(cpu_engines) if len(cpu_engines) > 1 else cpu_engines[0], need,
            host_memory()[1], HOST)
    return problems


def memory_problems(device, need_bytes, free_bytes, what='free memory'):
    """Return [why] when `need_bytes` of weights exceed `free_bytes` of `device`, else []."""
    if free_bytes is None or need_bytes <= free_bytes:
        return []
    gib = 1024 ** 3
    subject = f'devices {device} have' if ',' in device else f'device {device} has'
    return [f'{subject} not enough memory for the models: their weights need about '
            f'{need_bytes / gib:.1f} GiB, {free_bytes / gib:.1f} GiB of {what} available; '
            'free memory there, list fewer devices, or use memory_mode model_offload']


def _itemsize(dtype, kind):
    """Bytes per weight element that `dtype` ('auto': float16 on CUDA, float32 on CPU) means."""
    if dtype == 'auto':
        return 2 if kind == 'cuda' else 4
    return 4 if dtype == 'float32' else 2


def weight_bytes(config, itemsize):
    """
    Estimate the bytes of the configured models' weights at `itemsize` bytes per element.

    Counts what one engine holds: the base (UNet, both text encoders, VAE) and the refiner's
    UNet (it shares the base's encoder 2 and VAE). Single-file checkpoints and diffusers
    folders are counted from their headers, presets from their configs on torch's `meta`
    device; no weight is read. Offloading modes keep less on the device; this is the resident
    figure. Raises ModelLoadError like loading would.
    """
    from sdxl_ros.engine.model_files import read_checkpoint_shapes, resolve_source
    total = 0
    for role, name in (('base', config.base_model), ('refiner', config.refiner_model)):
        if not name:
            continue
        source = resolve_source(name, config.model_dir, role)
        if source.kind == 'preset':
            total += _preset_elements(source.location, role)
        elif source.kind == 'single_file':
            shapes = read_checkpoint_shapes(source.location)
            keys = [k for k in shapes if role == 'base' or k.startswith('model.diffusion_model.')]
            total += sum(_numel(shapes[k]) for k in keys)
        else:
            total += _folder_elements(source.location, role)
    return total * itemsize


def _numel(shape):
    """Return the number of elements of a tensor of `shape`."""
    count = 1
    for size in shape:
        count *= size
    return count


def _components(role):
    """Return the components of a base or a refiner that one engine holds."""
    return ('unet',) if role == 'refiner' else ('unet', 'text_encoder', 'text_encoder_2', 'vae')


def _preset_elements(preset_name, role):
    """Parameters and buffers of a preset's components, built on the meta device (no memory)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from sdxl_ros.engine.presets import PRESETS
    from sdxl_ros.engine.models.resources import model_config_dir
    preset = PRESETS[preset_name]
    folder = model_config_dir(preset.refiner_config if role == 'refiner' else preset.base_config)
    builders = {
        'unet': lambda f: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(f)),
        'vae': lambda f: AutoencoderKL.from_config(AutoencoderKL.load_config(f)),
        'text_encoder': lambda f: CLIPTextModel(CLIPTextConfig.from_pretrained(f)),
        'text_encoder_2': lambda f: CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(f))}
    total = 0
    with torch.device('meta'):
        for component in _components(role):
            module = builders[component](str(folder / component))
            total += sum(t.numel() for t in list(module.parameters()) + list(module.buffers()))
    return total


def _folder_elements(folder, role):
    """Elements of the safetensors weights of a diffusers folder's components."""
    from pathlib import Path
    from sdxl_ros.engine.model_files import read_checkpoint_shapes
    total = 0
    for component in _components(role):
        for path in sorted((Path(folder) / component).glob('*.safetensors')):
            total += sum(_numel(shape) for shape in read_checkpoint_shapes(path).values())
    return total
