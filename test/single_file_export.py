# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Write SDXL pipelines as single-file checkpoints in the original (Stability SGM) key layout.

diffusers reads that layout (`from_single_file`) but has no public writer. Tests use this to
prove the offline single-file path on the tiny preset, and demos can make small files that
look like `sd_xl_base_1.0.safetensors`. Hand-written mapping: the inverse of the key renames
that diffusers' single-file converter applies (names are facts of the two layouts).
"""

import torch

UNET = 'model.diffusion_model.'
VAE = 'first_stage_model.'
CLIP_L = 'conditioner.embedders.0.transformer.'
BIGG = {'base': 'conditioner.embedders.1.model.', 'refiner': 'conditioner.embedders.0.model.'}

_UNET_TOP = {
    'time_embedding.linear_1': 'time_embed.0', 'time_embedding.linear_2': 'time_embed.2',
    'add_embedding.linear_1': 'label_emb.0.0', 'add_embedding.linear_2': 'label_emb.0.2',
    'conv_in': 'input_blocks.0.0', 'conv_norm_out': 'out.0', 'conv_out': 'out.2',
}
_UNET_RESNET = {'norm1': 'in_layers.0', 'conv1': 'in_layers.2', 'norm2': 'out_layers.0',
                'conv2': 'out_layers.3', 'time_emb_proj': 'emb_layers.1',
                'conv_shortcut': 'skip_connection'}
_VAE_TOP = {'conv_norm_out': 'norm_out'}
_VAE_ATTENTION = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v',
                  'to_out.0': 'proj_out'}


def _split(key, count):
    """Split `key` into its first `count` dot parts and the rest."""
    parts = key.split('.')
    return parts[:count], '.'.join(parts[count:])


def _unet_key(key, layers_per_block, up_has_attention):
    """Map one diffusers UNet key to the SGM layout."""
    for name, sgm in _UNET_TOP.items():
        if key.startswith(name + '.'):
            return sgm + key[len(name):]
    head, tail = _split(key, 2)
    span = layers_per_block + 1
    if head[0] in ('down_blocks', 'up_blocks'):
        block = int(head[1])
        (kind, index), rest = _split(tail, 2)
        index = int(index)
        if head[0] == 'down_blocks':
            base = 1 + block * span
            if kind == 'downsamplers':
                return f'input_blocks.{base + layers_per_block}.0.op.{rest.split(".", 1)[1]}'
            target = f'input_blocks.{base + index}'
        else:
            base = block * span
            if kind == 'upsamplers':
                slot = 2 if up_has_attention[block] else 1
                return f'output_blocks.{base + layers_per_block}.{slot}.{rest}'
            target = f'output_blocks.{base + index}'
        if kind == 'resnets':
            return f'{target}.0.{_rename_first(rest, _UNET_RESNET)}'
        return f'{target}.1.{rest}'
    if head[0] == 'mid_block':
        kind = head[1]
        (index,), rest = _split(tail, 1)
        if kind == 'attentions':
            return f'middle_block.1.{rest}'
        return f'middle_block.{0 if index == "0" else 2}.{_rename_first(rest, _UNET_RESNET)}'
    raise KeyError(f'no SGM name for UNet key {key}')


def _rename_first(rest, table):
    """Rename the leading module name of `rest` through `table` (longest match first)."""
    for old in sorted(table, key=len, reverse=True):
        if rest.startswith(old + '.'):
            return table[old] + rest[len(old):]
    return rest


def _vae_key(key, value, num_up):
    """Map one diffusers VAE key (and reshape attention weights) to the SGM layout."""
    parts = key.split('.')
    side = parts[0]
    if side in ('quant_conv', 'post_quant_conv'):
        return key, value
    rest = '.'.join(parts[1:])
    if parts[1] in _VAE_TOP:
        return f'{side}.{_VAE_TOP[parts[1]]}.{".".join(parts[2:])}', value
    if parts[1] in ('conv_in', 'conv_out'):
        return key, value
    if parts[1] in ('down_blocks', 'up_blocks'):
        block = int(parts[2])
        level = block if parts[1] == 'down_blocks' else num_up - 1 - block
        group = 'down' if parts[1] == 'down_blocks' else 'up'
        kind, index, tail = parts[3], parts[4], '.'.join(parts[5:])
        if kind in ('downsamplers', 'upsamplers'):
            sampler = 'downsample' if kind == 'downsamplers' else 'upsample'
            return f'{side}.{group}.{level}.{sampler}.{tail}', value
        tail = tail.replace('conv_shortcut', 'nin_shortcut')
        return f'{side}.{group}.{level}.block.{index}.{tail}', value
    if parts[1] == 'mid_block':
        kind, index, tail = parts[2], int(parts[3]), '.'.join(parts[4:])
        if kind == 'resnets':
            tail = tail.replace('conv_shortcut', 'nin_shortcut')
            return f'{side}.mid.block_{index + 1}.{tail}', value
        tail = _rename_first(tail, _VAE_ATTENTION)
        if tail.endswith('weight') and value.ndim == 2:
            value = value[:, :, None, None]  # SGM keeps these as 1x1 convolutions
        return f'{side}.mid.attn_1.{tail}', value
    raise KeyError(f'no SGM name for VAE key {key} ({rest})')


def _is_fused(key):
    """Whether a key is a fused attention projection that duplicates the separate ones."""
    return '.to_qkv.' in key or '.to_kv.' in key or '.to_added_qkv.' in key


def _with_text_model(state):
    """Key a CLIP state dict as `text_model.*` (transformers >= 5.6 flattened CLIPTextModel)."""
    return {(k if k.startswith(('text_model.', 'text_projection')) else f'text_model.{k}'): v
            for k, v in state.items()}


def _open_clip_state(text_encoder_2, prefix):
    """Map CLIPTextModelWithProjection weights to OpenCLIP names (fused q/k/v projections)."""
    state = _with_text_model(text_encoder_2.state_dict())
    out = {
        prefix + 'token_embedding.weight': state['text_model.embeddings.token_embedding.weight'],
        prefix + 'positional_embedding':
            state['text_model.embeddings.position_embedding.weight'],
        prefix + 'ln_final.weight': state['text_model.final_layer_norm.weight'],
        prefix + 'ln_final.bias': state['text_model.final_layer_norm.bias'],
        prefix + 'text_projection': state['text_projection.weight'].T.contiguous(),
    }
    renames = {'layer_norm1': 'ln_1', 'layer_norm2': 'ln_2', 'mlp.fc1': 'mlp.c_fc',
               'mlp.fc2': 'mlp.c_proj', 'self_attn.out_proj': 'attn.out_proj'}
    for layer in range(text_encoder_2.config.num_hidden_layers):
        src = f'text_model.encoder.layers.{layer}.'
        dst = f'{prefix}transformer.resblocks.{layer}.'
        for old, new in renames.items():
            for kind in ('weight', 'bias'):
                out[f'{dst}{new}.{kind}'] = state[f'{src}{old}.{kind}']
        for kind in ('weight', 'bias'):
            out[f'{dst}attn.in_proj_{kind}'] = torch.cat(
                [state[f'{src}self_attn.{p}_proj.{kind}'] for p in 'qkv'])
    return out


def single_file_state_dict(pipeline, role):
    """Return the SGM-layout state dict of a base or refiner pipeline."""
    unet = pipeline.unet
    layers = unet.config.layers_per_block
    up_has_attention = ['CrossAttn' in t for t in unet.config.up_block_types]
    # Fused projections (to_qkv / to_kv, from diffusers' fuse_qkv_projections on the GPU fast
    # path) duplicate to_q/to_k/to_v, which stay in the state dict; SGM files hold only those.
    out = {UNET + _unet_key(k, layers, up_has_attention): v
           for k, v in unet.state_dict().items() if not _is_fused(k)}
    num_up = len(pipeline.vae.config.up_block_types)
    for key, value in pipeline.vae.state_dict().items():
        if _is_fused(key):
            continue
        new_key, new_value = _vae_key(key, value, num_up)
        out[VAE + new_key] = new_value
    if role == 'base':
        for key, value in _with_text_model(pipeline.text_encoder.state_dict()).items():
            if not key.endswith('position_ids'):
                out[CLIP_L + key] = value
    out.update(_open_clip_state(pipeline.text_encoder_2, BIGG[role]))
    return {k: v.detach().to('cpu').contiguous() for k, v in out.items()}


def save_single_file(pipeline, path, role='base'):
    """Write `pipeline` (role 'base' or 'refiner') as an SGM-layout .safetensors file."""
    from safetensors.torch import save_file
    if role not in BIGG:
        raise ValueError(f"role must be 'base' or 'refiner', got {role!r}")
    save_file(single_file_state_dict(pipeline, role), str(path))
