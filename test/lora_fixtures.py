# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Tiny LoRA files in the layouts people download, built from a pipeline's own modules.

`sdxl_lora` writes what kohya-ss/sd-scripts saves for SDXL: UNet keys in the original
LDM/SGM block naming (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), text
encoder keys with transformers' `text_model_` path (`lora_te1_text_model_encoder_layers_0_…`),
`.lora_down`/`.lora_up`/`.alpha` per module; `conv=True` adds LoCon's convolution keys (the
resnets' convolutions, down/upsamplers). The SGM names are derived from the diffusers module
names by the block-numbering rules (`sgm_unet_name`), so the fixture follows whatever UNet
shape it is given (tiny preset, full-size SDXL). `peft_lora` writes the diffusers/PEFT form
(`unet.….lora_A.weight`) with `lora_adapter_metadata`; `loha_lora`/`lokr_lora`/`dora_lora`
write LyCORIS LoHa/LoKr and DoRA keys.
"""

import json
import re

# Linear layers kohya trains in SDXL LoRAs: attention, feed-forward, transformer projections.
_UNET_LAYERS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'ff.net.0.proj', 'ff.net.2', 'proj_in',
                'proj_out')
# LoCon's extra layers: the resnets (and their time projection), down- and upsamplers.
_CONV_LAYERS = ('conv1', 'conv2', 'conv_shortcut', 'time_emb_proj', 'downsamplers.0.conv',
                'upsamplers.0.conv')
_TEXT_LAYERS = ('q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2')
# diffusers resnet layer -> LDM ResBlock layer.
_RESNET = {'conv1': 'in_layers.2', 'conv2': 'out_layers.3', 'time_emb_proj': 'emb_layers.1',
           'conv_shortcut': 'skip_connection'}


def sgm_unet_name(name, config):
    """
    Return the LDM/SGM name of a diffusers UNet module name (kohya's SDXL LoRA key body).

    A down block holds `layers_per_block` (resnet, attention) layers and a downsampler, an up
    block one more layer and an upsampler; LDM numbers them consecutively as `input_blocks`
    (after `conv_in` at 0) and `output_blocks`, resnet at sub-index 0, attention at 1.
    """
    per_down = config.layers_per_block
    per_up = per_down + 1
    match = re.match(r'down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)', name)
    if match:
        block, kind, layer, rest = match.groups()
        index = 1 + int(block) * (per_down + 1) + int(layer)
        return f'input_blocks.{index}.{_sub(kind, rest)}'
    match = re.match(r'down_blocks\.(\d+)\.downsamplers\.0\.conv$', name)
    if match:
        return f'input_blocks.{(int(match.group(1)) + 1) * (per_down + 1)}.0.op'
    match = re.match(r'mid_block\.(attentions|resnets)\.(\d+)\.(.+)', name)
    if match:
        kind, layer, rest = match.groups()
        index = 1 if kind == 'attentions' else 2 * int(layer)
        return f'middle_block.{index}.{_RESNET.get(rest, rest) if kind == "resnets" else rest}'
    match = re.match(r'up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)', name)
    if match:
        block, kind, layer, rest = match.groups()
        return f'output_blocks.{int(block) * per_up + int(layer)}.{_sub(kind, rest)}'
    match = re.match(r'up_blocks\.(\d+)\.upsamplers\.0\.conv$', name)
    if match:
        block = int(match.group(1))
        has_attention = 'CrossAttn' in config.up_block_types[block]
        return f'output_blocks.{block * per_up + per_up - 1}.{2 if has_attention else 1}.conv'
    raise ValueError(f'no SGM name rule for UNet module {name!r}')


def _sub(kind, rest):
    """Return `<sub-index>.<layer>` inside an LDM block for a resnet or attention layer."""
    if kind == 'attentions':
        return f'1.{rest}'
    return f'0.{_RESNET.get(rest, rest)}'


def _modules(module, layers):
    """Yield (dotted name, torch module) of the Linear/Conv2d layers named like `layers`."""
    import torch
    for name, sub in module.named_modules():
        if any(part.startswith('lora_') for part in name.split('.')):
            continue  # a PEFT adapter's own layers, where a LoRA is loaded now
        if name.endswith('.base_layer'):
            name = name[:-len('.base_layer')]
        if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(layers):
            if name.endswith('conv') and not name.endswith(('samplers.0.conv',)):
                continue
            yield name, sub


def _text_name(name):
    """Return a text-encoder module name as kohya writes it (transformers 4: `text_model.`)."""
    return name if name.startswith('text_model.') else 'text_model.' + name


def _pair(sub, rank, generator, scale):
    """Return (down, up) LoRA matrices for a Linear or Conv2d (LoCon: kernel in down)."""
    import torch
    if isinstance(sub, torch.nn.Conv2d):
        kernel = tuple(sub.kernel_size)
        down = torch.randn(rank, sub.in_channels, *kernel, generator=generator)
        up = torch.randn(sub.out_channels, rank, 1, 1, generator=generator)
    else:
        down = torch.randn(rank, sub.in_features, generator=generator)
        up = torch.randn(sub.out_features, rank, generator=generator)
    return down * scale, up * scale


def kohya_state_dict(named_modules, rank=4, scale=0.2, seed=0, alpha=None):
    """Return {key: tensor} with lora_down/lora_up/alpha for [(kohya key body, module)]."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, sub in named_modules:
        down, up = _pair(sub, rank, generator, scale)
        state[f'{key}.lora_down.weight'] = down
        state[f'{key}.lora_up.weight'] = up
        state[f'{key}.alpha'] = torch.tensor(float(alpha if alpha is not None else rank))
    return state


def sdxl_modules(base, conv=False, text=True):
    """Return [(kohya key body, module)] of a base pipeline in kohya's SGM layout."""
    config = base.unet.config
    layers = _UNET_LAYERS + (_CONV_LAYERS if conv else ())
    found = [('lora_unet_' + sgm_unet_name(name, config).replace('.', '_'), sub)
             for name, sub in _modules(base.unet, layers)]
    if text:
        for prefix, encoder in (('lora_te1_', base.text_encoder),
                                ('lora_te2_', base.text_encoder_2)):
            found += [(prefix + _text_name(name).replace('.', '_'), sub)
                      for name, sub in _modules(encoder, _TEXT_LAYERS)]
    return found


def sdxl_lora(base, seed=0, scale=0.2, conv=False, rank=4, alpha=None):
    """Return a kohya SGM-layout LoRA for a base pipeline: UNet + both text encoders."""
    return kohya_state_dict(sdxl_modules(base, conv=conv), rank=rank, scale=scale, seed=seed,
                            alpha=alpha)


def diffusers_names_lora(base, seed=0, scale=0.2, rank=4):
    """Return the same LoRA as `sdxl_lora` with diffusers block names (`lora_unet_down_…`)."""
    found = [('lora_unet_' + name.replace('.', '_'), sub)
             for name, sub in _modules(base.unet, _UNET_LAYERS)]
    for prefix, encoder in (('lora_te1_', base.text_encoder), ('lora_te2_', base.text_encoder_2)):
        found += [(prefix + _text_name(name).replace('.', '_'), sub)
                  for name, sub in _modules(encoder, _TEXT_LAYERS)]
    return kohya_state_dict(found, rank=rank, seed=seed, scale=scale)


def peft_lora(base, rank=4, lora_alpha=8, seed=3, scale=0.2):
    """
    Return (state, metadata) of a diffusers/PEFT-format UNet LoRA with `lora_alpha` metadata.

    The PEFT scale is lora_alpha / rank; the file holds no `.alpha` tensors, so only the
    `lora_adapter_metadata` entry tells a loader the intended strength.
    """
    import torch
    generator = torch.Generator().manual_seed(seed)
    state = {}
    targets = set()
    for name, sub in _modules(base.unet, ('to_q', 'to_k', 'to_v', 'to_out.0')):
        down, up = _pair(sub, rank, generator, scale)
        state[f'unet.{name}.lora_A.weight'] = down
        state[f'unet.{name}.lora_B.weight'] = up
        targets.add(name)
    config = {'r': rank, 'lora_alpha': lora_alpha, 'target_modules': sorted(targets),
              'use_dora': False, 'use_rslora': False, 'lora_bias': False,
              'rank_pattern': {}, 'alpha_pattern': {}}
    return state, {'lora_adapter_metadata': json.dumps({'unet.' + k: v
                                                        for k, v in config.items()}),
                   'format': 'pt'}


def loha_lora(base, rank=4, seed=4):
    """Return a LyCORIS LoHa state dict (hada_w1_a/…, SGM names) for the base UNet."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, sub in sdxl_modules(base, text=False):
        out_width, in_width = sub.weight.shape[:2]
        for half in ('1', '2'):
            state[f'{key}.hada_w{half}_a'] = torch.randn(out_width, rank, generator=generator)
            state[f'{key}.hada_w{half}_b'] = torch.randn(rank, in_width, generator=generator)
        state[f'{key}.alpha'] = torch.tensor(float(rank))
    return state


def lokr_lora(base, seed=5):
    """Return a LyCORIS LoKr state dict (lokr_w1/lokr_w2) for the base UNet."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, sub in sdxl_modules(base, text=False):
        out_width, in_width = sub.weight.shape[:2]
        state[f'{key}.lokr_w1'] = torch.randn(2, 2, generator=generator)
        state[f'{key}.lokr_w2'] = torch.randn(out_width // 2, in_width // 2, generator=generator)
    return state


def dora_lora(base, seed=6):
    """Return a kohya LoRA with DoRA magnitude keys (`dora_scale`)."""
    import torch
    state = sdxl_lora(base, seed=seed)
    for key in [k[:-len('.lora_up.weight')] for k in state if k.endswith('.lora_up.weight')]:
        state[f'{key}.dora_scale'] = torch.ones(1, state[f'{key}.lora_down.weight'].shape[1])
    return state


def write_lora(path, state, metadata=None):
    """Save `state` as a safetensors LoRA file; return the path as a string."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return str(path)


def sd1_like_lora(base, seed=1):
    """Return an SD 1.x-style LoRA: one text encoder (lora_te_) and 768-wide cross-attention."""
    import torch
    state = kohya_state_dict([('lora_te_' + _text_name(name).replace('.', '_'), sub)
                              for name, sub in _modules(base.text_encoder, _TEXT_LAYERS)],
                             seed=seed)
    key = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k'
    state[f'{key}.lora_down.weight'] = torch.zeros(4, 768)
    state[f'{key}.lora_up.weight'] = torch.zeros(320, 4)
    state[f'{key}.alpha'] = torch.tensor(4.0)
    return state


def refiner_lora(refiner, seed=2):
    """Return a LoRA trained on the refiner UNet (cross-attention of the refiner's width)."""
    return kohya_state_dict([('lora_unet_' + sgm_unet_name(name, refiner.unet.config)
                              .replace('.', '_'), sub)
                             for name, sub in _modules(refiner.unet, _UNET_LAYERS)], seed=seed)
