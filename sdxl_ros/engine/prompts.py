# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Prompt embeddings for one image, encoded once for base and refiner.

Left to themselves the two diffusers pipelines both run the big text encoder (OpenCLIP
bigG, shared between them) on the same prompt. The refiner's embeddings are exactly the
base's second-encoder half, so they are sliced from the base's instead of recomputed; only
an empty negative prompt still needs its own encoding for the refiner, whose config does
not zero it. Same tensors bit for bit, one encoder pass fewer.
"""

from dataclasses import dataclass
import functools
from typing import Optional


@dataclass
class PromptEmbeddings:
    """What a pipeline's `__call__` takes instead of prompt strings."""

    prompt_embeds: object
    pooled_prompt_embeds: object
    negative_prompt_embeds: Optional[object] = None
    negative_pooled_prompt_embeds: Optional[object] = None

    @classmethod
    def from_encode_prompt(cls, embeds):
        """Wrap the 4-tuple diffusers' `encode_prompt` returns (positive, negative, pooled...)."""
        return cls(embeds[0], embeds[2], embeds[1], embeds[3])

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
        import torch
        with torch.no_grad():
            return function(*args, **kwargs)
    return wrapper


@_without_gradients
def encode_base(base, prompt, negative_prompt, guidance_scale, device):
    """Encode for the base pipeline exactly as its `__call__` would."""
    return PromptEmbeddings.from_encode_prompt(base.encode_prompt(
        prompt=prompt, device=device, num_images_per_prompt=1,
        do_classifier_free_guidance=uses_guidance(base, guidance_scale),
        negative_prompt=negative_prompt or None))


@_without_gradients
def encode_refiner(base, refiner, base_embeds, prompt, negative_prompt, guidance_scale,
                   device):
    """
    Encode for the refiner, reusing `base_embeds` where the encoder is shared.

    Falls back to the refiner's own `encode_prompt` when it has an encoder of its own.
    """
    guided = uses_guidance(refiner, guidance_scale)
    if not shares_text_encoder(base, refiner):
        return PromptEmbeddings.from_encode_prompt(refiner.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=guided, negative_prompt=negative_prompt or None))
    width = refiner.text_encoder_2.config.hidden_size
    embeds = PromptEmbeddings(base_embeds.prompt_embeds[..., -width:],
                              base_embeds.pooled_prompt_embeds)
    if not guided:
        return embeds
    base_zeroed = not negative_prompt and base.config.force_zeros_for_empty_prompt
    refiner_zeroes = not negative_prompt and refiner.config.force_zeros_for_empty_prompt
    if base_embeds.negative_prompt_embeds is not None and base_zeroed == refiner_zeroes:
        embeds.negative_prompt_embeds = base_embeds.negative_prompt_embeds[..., -width:]
        embeds.negative_pooled_prompt_embeds = base_embeds.negative_pooled_prompt_embeds
        return embeds
    # The base zeroed an empty negative prompt, the refiner encodes it: one encoder pass.
    out = refiner.encode_prompt(
        prompt=None, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt=negative_prompt or None, prompt_embeds=embeds.prompt_embeds,
        pooled_prompt_embeds=embeds.pooled_prompt_embeds)
    embeds.negative_prompt_embeds, embeds.negative_pooled_prompt_embeds = out[1], out[3]
    return embeds
