# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Tiny LoRA files in kohya/A1111 key layout, built from the tiny preset's own modules."""

# Linear layers kohya trains in SDXL LoRAs: attention, feed-forward, transformer projections.
_UNET_LAYERS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'ff.net.0.proj', 'ff.net.2', 'proj_in',
                'proj_out')
_TEXT_LAYERS = ('q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2')


def _linears(module, layers):
    """Yield (dotted name, in width, out width) of the Linear layers named like `layers`."""
    import torch
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and name.endswith(layers):
            yield name, sub.in_features, sub.out_features


def kohya_state_dict(parts, rank=4, scale=0.2, seed=0):
    """
    Return a kohya-layout LoRA state dict: {prefix: module} -> lora_down/lora_up/alpha.

    Keys are `<prefix><dotted module name with _>.lora_down.weight` etc., as kohya's
    sd-scripts write SDXL LoRAs in diffusers block naming.
    """
    import torch
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, (module, layers) in parts.items():
        for name, width_in, width_out in _linears(module, layers):
            key = prefix + name.replace('.', '_')
            state[f'{key}.lora_down.weight'] = torch.randn(
                rank, width_in, generator=generator) * scale
            state[f'{key}.lora_up.weight'] = torch.randn(
                width_out, rank, generator=generator) * scale
            state[f'{key}.alpha'] = torch.tensor(float(rank))
    return state


def sdxl_lora(base, seed=0, scale=0.2):
    """Return a LoRA for a base pipeline: UNet + both text encoders (lora_te1_/lora_te2_)."""
    return kohya_state_dict({'lora_unet_': (base.unet, _UNET_LAYERS),
                             'lora_te1_': (base.text_encoder, _TEXT_LAYERS),
                             'lora_te2_': (base.text_encoder_2, _TEXT_LAYERS)},
                            seed=seed, scale=scale)


def write_lora(path, state, metadata=None):
    """Save `state` as a safetensors LoRA file; return the path as a string."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return str(path)


def sd1_like_lora(base, seed=1):
    """Return an SD 1.x-style LoRA: one text encoder (lora_te_) and 768-wide cross-attention."""
    import torch
    state = kohya_state_dict({'lora_te_': (base.text_encoder, _TEXT_LAYERS)}, seed=seed)
    key = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k'
    state[f'{key}.lora_down.weight'] = torch.zeros(4, 768)
    state[f'{key}.lora_up.weight'] = torch.zeros(320, 4)
    state[f'{key}.alpha'] = torch.tensor(4.0)
    return state


def refiner_lora(refiner, seed=2):
    """Return a LoRA trained on the refiner UNet (cross-attention of the refiner's width)."""
    return kohya_state_dict({'lora_unet_': (refiner.unet, _UNET_LAYERS)}, seed=seed)
