# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
ControlNet on the base pass, with the A1111 ControlNet extension's semantics.

The units' ControlNets run inside the base UNet's calls: a forward pre-hook on the base UNet
runs each active unit's ControlNet on the UNet's own inputs and hands the summed residuals to
the UNet (`down_block_additional_residuals`, `mid_block_additional_residual`), which is what
diffusers' ControlNet pipelines do around their UNet call. A hook instead of those pipelines
because it serves every kind of goal the engine runs (text, img2img, inpainting, base ->
refiner hand-over; diffusers' SDXL ControlNet img2img pipeline takes no `denoising_end`) and
because the extension's control modes are per unit, where the pipelines' `guess_mode` is
one flag for all units. The refiner runs without control, as in A1111, whose extension
hooks the base checkpoint's UNet only.

Per unit and step (step i of the N steps of the image, base and refiner counted together as
A1111 counts them): the unit runs when guidance_start <= i / N <= guidance_end; its outputs
(9 down residuals and the middle one, shallow to deep) are scaled by weight ("Balanced"), or
by weight * 0.825 ** (12 - k) for output k ("My prompt is more important", the extension's
soft injection: it zips 13 such scales with SDXL's 10 outputs); "ControlNet is more
important" scales the same way and also zeroes the outputs of the negative prompt's half of
the CFG batch (the extension's CFG injection). A unit of weight 0 is not run: the UNet then
computes exactly what it computes without ControlNet.

The fast path's CUDA graphs take no residuals: a step with control runs the UNet eagerly
(GraphedUNet falls back by itself), so ControlNet goals run at eager speed.
"""

from contextlib import contextmanager
from dataclasses import dataclass
import logging
from pathlib import Path

from diffusers import ControlNetModel, ControlNetUnionModel
from diffusers.image_processor import VaeImageProcessor
import numpy as np
from PIL import Image

from sdxl_ros.engine.control_images import canny_map, preprocess, to_rgb
from sdxl_ros.engine.control_request import CONTROL_MODES, UNION_CONTROL_TYPES
from sdxl_ros.engine.controlnet_files import MODULE_TYPES
from sdxl_ros.engine.errors import ModelLoadError

import torch

LOG = logging.getLogger(__name__)

#: The extension's soft-injection base and the index its 13 scales count down from.
SOFT_BASE = 0.825
SOFT_TOP = 12
#: A1111 label -> diffusers VaeImageProcessor.resize mode (the same three as img2img).
_RESIZE = {'Just Resize': 'default', 'Crop and Resize': 'crop', 'Resize and Fill': 'fill'}
#: Seed of the tiny preset ControlNets' random zero-conv weights (deterministic tests).
TINY_SEED = 21


@dataclass
class PreparedUnit:
    """One unit ready to run: its model, control tensor and how to scale its outputs."""

    model: object
    cond: object
    weight: float
    start: float
    end: float
    soft: bool
    cfg_injection: bool
    union_type: int = -1


def control_map(unit, width, height):
    """Return the uint8 HxWx3 control map of a validated unit at width x height."""
    resize = VaeImageProcessor(vae_scale_factor=8).resize
    mode = _RESIZE[unit.resize_mode]
    if unit.module == 'canny':
        # Edges are found at the generation size (A1111's pixel perfect), so they stay thin.
        picture = np.asarray(resize(Image.fromarray(unit.image), height, width, mode))
        return to_rgb(canny_map(picture[:, :, :3], unit.canny_low_threshold,
                                unit.canny_high_threshold))
    mapped = preprocess(unit.module, unit.image)
    return np.asarray(resize(Image.fromarray(mapped), height, width, mode).convert('RGB'))


def _tiny(base_unet, union=False):
    """Build a ControlNet from the tiny base UNet, its zero convs given seeded random weights."""
    cls = ControlNetUnionModel if union else ControlNetModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)  # the layers from_unet does not copy are random
        model = cls.from_unet(base_unet)
        if union:
            # from_unet keeps the union layers at SDXL's width (320); the tiny UNet's is less.
            width = base_unet.config.block_out_channels[0]
            config = {k: v for k, v in model.config.items() if not k.startswith('_')}
            shaped = cls.from_config(dict(config, num_trans_channel=width,
                                          num_proj_channel=width))
            own = shaped.state_dict()
            shaped.load_state_dict({k: v for k, v in model.state_dict().items()
                                    if k in own and own[k].shape == v.shape}, strict=False)
            model = shaped
    generator = torch.Generator('cpu').manual_seed(TINY_SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # from_unet leaves these zero (a trained ControlNet learns them); random ones make
            # the tiny ControlNet change the picture, as a real one does.
            if name.startswith(('controlnet_down_blocks', 'controlnet_mid_block',
                                'controlnet_cond_embedding.conv_out', 'spatial_ch_projs')):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def _load(found, base_unet, dtype):
    """Load the model of a ControlNetFile (folder, single file or preset)."""
    if not found.path:
        return _tiny(base_unet, union=found.name.endswith('union')).to(dtype)
    cls = ControlNetUnionModel if found.is_union else ControlNetModel
    try:
        if Path(found.path).is_dir():
            return cls.from_pretrained(found.path, torch_dtype=dtype, local_files_only=True)
        return cls.from_single_file(found.path, torch_dtype=dtype, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - diffusers raises many kinds; report them
        raise ModelLoadError(f'cannot load ControlNet {found.name!r} from {found.path}: '
                             f'{error}') from error


class ControlNetSet:
    """The ControlNets goals use, loaded once and kept while goals keep using them."""

    def __init__(self, base_unet, device, dtype):
        """Load onto `device` in `dtype`; presets are built from `base_unet`."""
        self._base_unet = base_unet
        self._device = device
        self._dtype = dtype
        self._models = {}

    @property
    def loaded(self):
        """Return the names of the models held now."""
        return sorted(name for name, _ in self._models)

    def use(self, files):
        """Return the models of `files` (ControlNetFile), loading new ones; drop unused ones."""
        keys = [(f.name, f.path) for f in files]
        for key in [k for k in self._models if k not in keys]:
            LOG.info('ControlNet %s unloaded (not used by this goal)', key[0])
            del self._models[key]
        for found, key in zip(files, keys):
            if key not in self._models:
                LOG.info('loading ControlNet %s', found.name)
                model = _load(found, self._base_unet, self._dtype)
                self._models[key] = model.to(self._device).eval()
        return [self._models[key] for key in keys]

    def prepare(self, request, files, width, height, cfg):
        """Return the PreparedUnits of a validated request (weight 0 units left out)."""
        models = self.use(files)
        batch = 2 if cfg else 1
        units = []
        for unit, found, model in zip(request.control, files, models):
            if unit.weight == 0:
                continue
            picture = control_map(unit, width, height)
            cond = torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float() / 255.0
            cond = cond.to(self._device, self._dtype).repeat(batch, 1, 1, 1)
            union_type = -1
            if found.is_union:
                label = unit.control_type or MODULE_TYPES[unit.module]
                union_type = UNION_CONTROL_TYPES.index(label)
            mode = CONTROL_MODES.index(unit.control_mode)
            units.append(PreparedUnit(
                model, cond, unit.weight, unit.guidance_start, unit.guidance_end,
                soft=mode != 0, cfg_injection=mode == 2 and cfg, union_type=union_type))
        return units


class ControlHook:
    """Forward pre-hook of the base UNet that adds the active units' residuals."""

    def __init__(self, units, fraction):
        """Run `units` (PreparedUnit); `fraction()` is the step's share i / N of the image."""
        self.units = units
        self.fraction = fraction
        self.calls = 0

    def _run(self, unit, sample, timestep, kwargs):
        """Return the scaled (down residuals, mid residual) of one unit."""
        extra = {}
        if unit.union_type >= 0:
            count = unit.model.config.num_control_type
            kind = torch.zeros(sample.shape[0], count, device=sample.device,
                               dtype=unit.cond.dtype)
            kind[:, unit.union_type] = 1
            extra = {'controlnet_cond': [unit.cond], 'control_type': kind,
                     'control_type_idx': [unit.union_type]}
        else:
            extra = {'controlnet_cond': unit.cond}
        down, mid = unit.model(
            sample[:, :4], timestep, encoder_hidden_states=kwargs['encoder_hidden_states'],
            conditioning_scale=1.0, added_cond_kwargs=kwargs.get('added_cond_kwargs'),
            return_dict=False, **extra)
        outputs = list(down) + [mid]
        if unit.soft:
            scales = [unit.weight * SOFT_BASE ** float(SOFT_TOP - k)
                      for k in range(len(outputs))]
        else:
            scales = [unit.weight] * len(outputs)
        outputs = [out * scale for out, scale in zip(outputs, scales)]
        if unit.cfg_injection:
            half = sample.shape[0] // 2
            for out in outputs:
                out[:half] = 0
        return outputs

    def __call__(self, _module, args, kwargs):
        """Add the residuals of the units active at this step to the UNet's arguments."""
        fraction = self.fraction()
        active = [u for u in self.units if u.start <= fraction <= u.end]
        if not active:
            return None
        self.calls += 1
        sample = args[0] if args else kwargs['sample']
        timestep = args[1] if len(args) > 1 else kwargs['timestep']
        total = None
        for unit in active:
            outputs = self._run(unit, sample, timestep, kwargs)
            total = outputs if total is None else [a + b for a, b in zip(total, outputs)]
        kwargs = dict(kwargs)
        kwargs['down_block_additional_residuals'] = tuple(total[:-1])
        kwargs['mid_block_additional_residual'] = total[-1]
        return args, kwargs


@contextmanager
def controlled(unet, units, fraction):
    """Within the block, the base `unet` runs with the units' ControlNets (none: unchanged)."""
    if not units:
        yield None
        return
    hook = ControlHook(units, fraction)
    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield hook
    finally:
        handle.remove()
