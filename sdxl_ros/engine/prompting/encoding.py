# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Prompt embeddings for one image, encoded once for base and refiner, A1111-style.

Prompts of any length are cut into 77-token chunks (`prompting/chunks.py`, after the emphasis
syntax is parsed by `prompt_parser.py`); every chunk goes through each text encoder on its
own, the penultimate hidden states are concatenated along the sequence axis, and the pooled
vector (text_encoder_2's projection) is the first chunk's. Emphasis weights are applied as
A1111's default "Original" emphasis: the token embeddings are multiplied by their weights,
then the chunk is rescaled to its unweighted mean. Positive and negative prompts are padded
to the same number of chunks with the encoding of an empty chunk, as A1111's cond/uncond
padding does. A one-chunk prompt without syntax gives exactly what diffusers' own
`encode_prompt` gives (same token ids, same encoder calls, same casts).

Left to themselves the two diffusers pipelines both run the big text encoder (OpenCLIP
bigG, shared between them) on the same prompt. The refiner's embeddings are exactly the
base's second-encoder half, so they are sliced from the base's instead of recomputed; only
an empty negative prompt still needs its own encoding for the refiner, whose config does
not zero it. Same tensors bit for bit, one encoder pass fewer.

Textual-inversion embeddings (`embeddings.py`): `embeddings` ({name: Embedding}, the ones the
goal's prompts use) replace their names' tokens by vectors before chunking.
"""

from dataclasses import dataclass
import functools
from typing import Optional

from sdxl_ros.engine.prompt_parser import literal, parse_emphasis
from sdxl_ros.engine.prompting.chunks import chunk_prompt, CHUNK_TOKENS, empty_chunk, TokenSpec
from sdxl_ros.engine.prompting.embeddings import (ENCODER_KEYS, name_ids, plain_call_kwargs,
                                                  substitute, vectors_at)
from sdxl_ros.engine.request import EMPHASIS_MODES

import torch


@dataclass
class PromptEmbeddings:
    """What a pipeline's `__call__` takes instead of prompt strings."""

    prompt_embeds: object
    pooled_prompt_embeds: object
    negative_prompt_embeds: Optional[object] = None
    negative_pooled_prompt_embeds: Optional[object] = None

    def as_kwargs(self):
        """Return the keyword arguments for `StableDiffusionXL*Pipeline.__call__`."""
        return {'prompt_embeds': self.prompt_embeds,
                'pooled_prompt_embeds': self.pooled_prompt_embeds,
                'negative_prompt_embeds': self.negative_prompt_embeds,
                'negative_pooled_prompt_embeds': self.negative_pooled_prompt_embeds}


def uses_guidance(pipeline, guidance_scale):
    """Whether `pipeline` will run classifier-free guidance (its own rule)."""
    return guidance_scale > 1 and pipeline.unet.config.time_cond_proj_dim is None


def shares_text_encoder(base, refiner):
    """Whether the refiner's only text encoder and tokenizer are the base's second ones."""
    return (refiner is not None and refiner.text_encoder is None
            and refiner.text_encoder_2 is base.text_encoder_2
            and refiner.tokenizer_2 is base.tokenizer_2)


def _without_gradients(function):
    """Run `function` under torch.no_grad(), as the pipelines' own `__call__` does."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return function(*args, **kwargs)
    return wrapper


def prompt_pieces(text, emphasis='original'):
    """Parse `text` (LoRA tags already removed) into emphasis pieces for `emphasis` mode."""
    if emphasis not in EMPHASIS_MODES:
        raise ValueError(f'emphasis {emphasis!r} is not one of: ' + ', '.join(EMPHASIS_MODES))
    return parse_emphasis(text) if emphasis == 'original' else literal(text)


def _encoders(pipeline):
    """Return the (tokenizer, text encoder) pairs of a pipeline, in embedding order."""
    pairs = ((pipeline.tokenizer, pipeline.text_encoder),
             (pipeline.tokenizer_2, pipeline.text_encoder_2))
    return [(tok, enc) for tok, enc in pairs if tok is not None and enc is not None]


def _tokenizer_function(tokenizer, embeddings=None, key='clip_l'):
    """Return texts -> ids without start/end tokens and without the 77-token cut."""
    lookup = name_ids(tokenizer, embeddings) if embeddings else []

    def tokenize(texts):
        ids = tokenizer(list(texts), add_special_tokens=False, truncation=False,
                        verbose=False)['input_ids']
        return [substitute(i, lookup, key) for i in ids] if lookup else ids
    return tokenize


def _encoder_key(pipeline, encoder):
    """Return the embedding-file key ('clip_l'/'clip_g') of one of the pipeline's encoders."""
    return ENCODER_KEYS['text_encoder_2' if encoder is pipeline.text_encoder_2
                        else 'text_encoder']


def prompt_chunks(pipeline, pieces, embeddings=None):
    """Return, per text encoder of `pipeline`, the chunks of the parsed prompt `pieces`."""
    return [chunk_prompt(pieces, _tokenizer_function(tok, embeddings,
                                                     _encoder_key(pipeline, enc)),
                         TokenSpec.of(tok))
            for tok, enc in _encoders(pipeline)]


def _pad_chunks(per_encoder, pipeline, count):
    """Pad every encoder's chunk list to `count` chunks with empty chunks."""
    padded = []
    for chunks, (tok, _) in zip(per_encoder, _encoders(pipeline)):
        extra = [empty_chunk(TokenSpec.of(tok)) for _ in range(count - len(chunks))]
        padded.append(list(chunks) + extra)
    return padded


def weighted(hidden, weights):
    """
    Apply A1111's "Original" emphasis to one chunk's token embeddings.

    Multiply each token's embedding by its weight, then scale the whole chunk so its mean
    equals the unweighted mean. Unit weights return `hidden` untouched (bit for bit).
    """
    if all(w == 1.0 for w in weights):
        return hidden
    scale = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)
    original_mean = hidden.mean()
    hidden = hidden * scale.reshape(1, -1, 1)
    return hidden * (original_mean / hidden.mean())


def _encode_chunks(pipeline, per_encoder, device):
    """Encode chunk lists (one per encoder); return (sequence embeddings, pooled)."""
    parts, pooled = [], None
    for chunks, (_, encoder) in zip(per_encoder, _encoders(pipeline)):
        states, seen = [], {}
        for index, chunk in enumerate(chunks):
            key = (tuple(chunk.tokens), tuple(chunk.weights), chunk.fixes)
            if key in seen:
                # Repeated chunks (the empty padding ones) are encoded once.
                states.append(seen[key])
                continue
            ids = torch.tensor([chunk.tokens], dtype=torch.long, device=device)
            if chunk.fixes:
                with vectors_at(encoder, chunk.fixes):
                    out = encoder(ids, output_hidden_states=True, **plain_call_kwargs(ids))
            else:
                out = encoder(ids, output_hidden_states=True)
            if index == 0 and out[0].ndim == 2:
                # The projected pooled output (text_encoder_2): the first chunk's, as A1111.
                pooled = out[0]
            seen[key] = weighted(out.hidden_states[-2], chunk.weights)
            states.append(seen[key])
        parts.append(torch.cat(states, dim=1) if len(states) > 1 else states[0])
    embeds = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    return embeds, pooled


def _embeds_dtype(pipeline):
    """Return the dtype diffusers casts prompt embeddings to (text_encoder_2's, or the UNet's)."""
    encoder = pipeline.text_encoder_2
    return encoder.dtype if encoder is not None else pipeline.unet.dtype


@_without_gradients
def encode_pipeline(pipeline, pieces, negative_pieces, guided, zero_negative, device,
                    embeddings=None):
    """
    Encode parsed prompts for one pipeline; returns PromptEmbeddings.

    `negative_pieces` is ignored when not `guided`; `zero_negative` gives zero negative
    embeddings instead (diffusers' force_zeros_for_empty_prompt for an empty negative).
    Positive and negative get the same number of chunks.
    """
    positive = prompt_chunks(pipeline, pieces, embeddings)
    negative = (prompt_chunks(pipeline, negative_pieces, embeddings)
                if guided and not zero_negative else [])
    count = max(len(c) for c in positive + negative)
    embeds, pooled = _encode_chunks(pipeline, _pad_chunks(positive, pipeline, count), device)
    dtype = _embeds_dtype(pipeline)
    result = PromptEmbeddings(embeds.to(dtype=dtype, device=device), pooled)
    if not guided:
        return result
    if zero_negative:
        result.negative_prompt_embeds = torch.zeros_like(embeds).to(dtype=dtype, device=device)
        result.negative_pooled_prompt_embeds = torch.zeros_like(pooled)
        return result
    negative_embeds, negative_pooled = _encode_chunks(
        pipeline, _pad_chunks(negative, pipeline, count), device)
    result.negative_prompt_embeds = negative_embeds.to(dtype=dtype, device=device)
    result.negative_pooled_prompt_embeds = negative_pooled
    return result


def encode_base(base, prompt, negative_prompt, guidance_scale, device, emphasis='original',
                embeddings=None):
    """Encode for the base pipeline (its `encode_prompt` for short prompts, bit for bit)."""
    return encode_pipeline(
        base, prompt_pieces(prompt, emphasis), prompt_pieces(negative_prompt, emphasis),
        uses_guidance(base, guidance_scale),
        not negative_prompt and base.config.force_zeros_for_empty_prompt, device, embeddings)


def encode_refiner(base, refiner, base_embeds, prompt, negative_prompt, guidance_scale,
                   device, emphasis='original', embeddings=None):
    """
    Encode for the refiner, reusing `base_embeds` where the encoder is shared.

    Falls back to encoding with the refiner's own encoder when it has one of its own.
    """
    guided = uses_guidance(refiner, guidance_scale)
    refiner_zeroes = not negative_prompt and refiner.config.force_zeros_for_empty_prompt
    if not shares_text_encoder(base, refiner):
        return encode_pipeline(
            refiner, prompt_pieces(prompt, emphasis), prompt_pieces(negative_prompt, emphasis),
            guided, refiner_zeroes, device, embeddings)
    width = refiner.text_encoder_2.config.hidden_size
    embeds = PromptEmbeddings(base_embeds.prompt_embeds[..., -width:],
                              base_embeds.pooled_prompt_embeds)
    if not guided:
        return embeds
    base_zeroed = not negative_prompt and base.config.force_zeros_for_empty_prompt
    if base_embeds.negative_prompt_embeds is not None and base_zeroed == refiner_zeroes:
        embeds.negative_prompt_embeds = base_embeds.negative_prompt_embeds[..., -width:]
        embeds.negative_pooled_prompt_embeds = base_embeds.negative_pooled_prompt_embeds
        return embeds
    # The base zeroed an empty negative prompt, the refiner encodes it: one encoder pass
    # per chunk, padded to the positive's chunk count.
    count = embeds.prompt_embeds.shape[1] // (CHUNK_TOKENS + 2)
    negative = prompt_chunks(refiner, prompt_pieces(negative_prompt, emphasis), embeddings)
    negative_embeds, negative_pooled = _without_gradients(_encode_chunks)(
        refiner, _pad_chunks(negative, refiner, max([count] + [len(c) for c in negative])),
        device)
    embeds.negative_prompt_embeds = negative_embeds.to(dtype=_embeds_dtype(refiner),
                                                       device=device)
    embeds.negative_pooled_prompt_embeds = negative_pooled
    return embeds
