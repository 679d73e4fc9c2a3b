# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Tiny textual-inversion embedding files, in A1111's SDXL form and the forms it refuses."""


def token_rows(base, text):
    """Return {'clip_l', 'clip_g'}: the token-embedding rows of `text`'s tokens per encoder."""
    import torch
    ids = base.tokenizer([text], add_special_tokens=False)['input_ids'][0]
    rows = {}
    for key, encoder in (('clip_l', base.text_encoder), ('clip_g', base.text_encoder_2)):
        table = encoder.get_input_embeddings().weight
        rows[key] = table[torch.tensor(ids)].detach().clone()
    return rows


def random_embedding(base, vectors=2, seed=0):
    """Return an SDXL embedding ({'clip_l', 'clip_g'}) of `vectors` random vectors."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(vectors, encoder.config.hidden_size, generator=generator)
            for key, encoder in (('clip_l', base.text_encoder),
                                 ('clip_g', base.text_encoder_2))}


def write_embedding(path, tensors):
    """Save `tensors` as a safetensors embedding file; return the path as a string."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)
