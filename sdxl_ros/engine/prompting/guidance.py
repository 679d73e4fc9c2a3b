# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Guidance for prompts whose conditioning is not one fixed pair: schedules, AND, own lengths.

A prompt plan (`prompt_schedule.py`) may change its text during the run (prompt editing,
alternation), combine several weighted parts (`AND`), or give the prompt and the negative
prompt different chunk counts, which A1111 runs at their own lengths unless
`pad_cond_uncond` is on. The diffusers SDXL pipelines take one prompt/negative pair of equal
length for the whole run; their `callback_on_step_end` may swap the batched `prompt_embeds`,
`add_text_embeds` and `add_time_ids` between steps, which is enough for editing but not for
AND or unequal lengths. So one mechanism serves all three: for the stage's pipeline call the
UNet's forward is wrapped (`StageGuidance.installed`); each call looks up the step's
conditioning and runs the UNet as A1111's CFG denoiser does:

- the AND parts in one batch (shorter parts padded by repeating their last token vector, as
  A1111 stacks them), with the negative in the same batch when the lengths match, else in a
  second UNet pass at its own length (A1111 without pad_cond_uncond does the same);
- the parts combined as uncond + sum_i w_i (cond_i - uncond), which the pipeline's own
  CFG step turns into uncond + cfg * sum_i w_i (cond_i - uncond), A1111's combination
  (it combines the denoised predictions; the same linear combination of the noise
  predictions is equal, as x0 = x - sigma * eps at one x and sigma);
- one part at weight 1 (editing, alternation, own lengths) passes its prediction through
  untouched, so the arithmetic is the pipeline's own.

`stage_prompts` decides per stage: a fixed pair of equal length (or padded) runs exactly as
before, through the pipeline's own batching; anything else gets a StageGuidance.

The embeddings stay inputs of every UNet call: the fast path's graphed UNet copies
`encoder_hidden_states` and `text_embeds` into its static buffers per call, so a schedule
that changes the text replays the same graph; other batch sizes or lengths (AND parts, a
negative at its own length) are new signatures, served eagerly and prepared between goals.
"""

import contextlib
from dataclasses import dataclass

from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from sdxl_ros.engine.prompting.chunks import CHUNK_TOKENS, empty_chunk, TokenSpec
from sdxl_ros.engine.prompting.encoding import (_embeds_dtype, _encode_chunks, _encoders,
                                                _pad_chunks, _without_gradients, encode_base,
                                                encode_refiner, prompt_chunks, prompt_pieces,
                                                shares_text_encoder, uses_guidance)

import torch

#: Tokens of one encoded chunk (start + 75 + end).
CHUNK_LENGTH = CHUNK_TOKENS + 2


@dataclass
class Encoded:
    """One text's conditioning: token embeddings (1, L, D) and pooled vector (1, P)."""

    embeds: object
    pooled: object


def chunk_count(pipeline, text, emphasis, embeddings=None):
    """Return the number of 77-token chunks `text` takes in `pipeline`'s encoders."""
    return max(len(c) for c in prompt_chunks(pipeline, prompt_pieces(text, emphasis),
                                             embeddings))


@_without_gradients
def encode_texts(pipeline, texts, emphasis, device, embeddings=None):
    """
    Encode the texts of one schedule, padded to their largest chunk count; {text: Encoded}.

    A1111 encodes a prompt's scheduled texts as one batch, which pads them with empty
    chunks to the same length; texts of different schedules keep their own lengths.
    """
    chunks = {text: prompt_chunks(pipeline, prompt_pieces(text, emphasis), embeddings)
              for text in texts}
    count = max(len(c) for per_encoder in chunks.values() for c in per_encoder)
    dtype = _embeds_dtype(pipeline)
    result = {}
    for text, per_encoder in chunks.items():
        padded = _pad_chunks(per_encoder, pipeline, count)
        embeds, pooled = _encode_chunks(pipeline, padded, device)
        result[text] = Encoded(embeds.to(dtype=dtype, device=device), pooled)
    return result


@_without_gradients
def encode_empty_chunk(pipeline, device):
    """Return the encoding of one empty chunk (what pad_cond_uncond pads with), (1, 77, D)."""
    per_encoder = [[empty_chunk(TokenSpec.of(tok))] for tok, _ in _encoders(pipeline)]
    embeds, _ = _encode_chunks(pipeline, per_encoder, device)
    return embeds.to(dtype=_embeds_dtype(pipeline), device=device)


def zeros_like_text(pipeline, device):
    """Return the zero conditioning of an empty negative prompt (one chunk), as diffusers."""
    width = sum(enc.config.hidden_size for _, enc in _encoders(pipeline))
    pooled = pipeline.text_encoder_2.config.projection_dim
    dtype = _embeds_dtype(pipeline)
    return Encoded(torch.zeros((1, CHUNK_LENGTH, width), dtype=dtype, device=device),
                   torch.zeros((1, pooled), dtype=dtype, device=device))


def refiner_view(base_encoded, width):
    """Return the refiner's conditioning from the base's when they share text_encoder_2."""
    return {text: Encoded(e.embeds[..., -width:], e.pooled) for text, e in base_encoded.items()}


def encode_stage(base, pipeline, plan, emphasis, device, zero_negative, shared=None,
                 embeddings=None):
    """
    Return (positive {text: Encoded}, negative {text: Encoded}) of `plan` for `pipeline`.

    Every text of the plan is encoded (A1111 encodes the whole schedule for base and
    refiner alike); each AND part's schedule and the negative's are padded on their own.
    `zero_negative`: the negative is empty and this pipeline zeroes it (diffusers'
    force_zeros_for_empty_prompt). `shared` (the base's positive, negative, whether it
    zeroed the negative) is reused by a refiner that shares the base's second encoder;
    `embeddings` are the textual-inversion embeddings the texts may name.
    """
    reuse = shared is not None and shares_text_encoder(base, pipeline)
    width = pipeline.text_encoder_2.config.hidden_size
    if reuse:
        positive = refiner_view(shared[0], width)
    else:
        positive = {}
        for _, schedule in plan.parts:
            texts = tuple(dict.fromkeys(text for _, text in schedule))
            positive.update(encode_texts(pipeline, texts, emphasis, device, embeddings))
    if zero_negative:
        return positive, {'': zeros_like_text(pipeline, device)}
    if reuse and not shared[2]:
        return positive, refiner_view(shared[1], width)
    texts = tuple(dict.fromkeys(text for _, text in plan.negative))
    return positive, encode_texts(pipeline, texts, emphasis, device, embeddings)


def _pad_last(embeds, length):
    """Pad (1, L, D) to `length` tokens by repeating the last vector (A1111's stack_conds)."""
    extra = length - embeds.shape[1]
    if extra <= 0:
        return embeds
    return torch.cat([embeds, embeds[:, -1:].expand(-1, extra, -1)], dim=1)


def _pad_empty(embeds, length, empty):
    """Pad (B, L, D) to `length` with encoded empty chunks (A1111's pad_cond_uncond)."""
    repeats = (length - embeds.shape[1]) // empty.shape[1]
    if repeats <= 0:
        return embeds
    filler = empty.expand(embeds.shape[0], -1, -1).repeat(1, repeats, 1)
    return torch.cat([embeds, filler], dim=1)


class StageGuidance:
    """
    Per-step conditioning and A1111's guidance for one stage's pipeline call.

    `step_of()` returns the current step index (counted over base and refiner); `guided`
    whether the pipeline batches an uncond half; `empty` the encoded empty chunk when
    pad_cond_uncond is on (None: off).
    """

    def __init__(self, plan, positive, negative, step_of, guided, empty=None):
        """Bind the plan, its encodings {text: Encoded} and the step counter."""
        self.plan = plan
        self.positive = positive
        self.negative = negative
        self.step_of = step_of
        self.guided = guided
        self.empty = empty
        self.padded = False
        self.unet_calls = 0

    @contextlib.contextmanager
    def installed(self, unet):
        """Serve `unet`'s calls through this guidance while the block runs."""
        previous = unet.__dict__.get('forward')

        def inner(*args, **kwargs):
            if previous is not None:
                return previous(*args, **kwargs)
            return type(unet).forward(unet, *args, **kwargs)

        def forward(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
            return self.forward(inner, sample, timestep, *args, **kwargs)

        unet.forward = forward
        try:
            yield self
        finally:
            # The fast path may have been switched off meanwhile (its forward removed):
            # only undo what is still ours.
            if unet.__dict__.get('forward') is forward:
                if previous is not None:
                    unet.forward = previous
                else:
                    del unet.forward

    def conditioning(self, step):
        """Return ([(Encoded, weight)], negative Encoded) at step index `step`."""
        parts, negative = self.plan.at(step)
        key = negative if negative in self.negative else ''
        return [(self.positive[text], weight) for text, weight in parts], self.negative[key]

    def forward(self, unet_call, sample, timestep, *args, added_cond_kwargs=None,
                return_dict=True, **kwargs):
        """Run the UNet for one step as A1111 does; return what the pipeline expects."""
        parts, uncond = self.conditioning(self.step_of())
        time_ids = added_cond_kwargs['time_ids']
        rows = sample.shape[0]
        cond_x = sample[rows - 1:]
        plain = len(parts) == 1 and parts[0][1] == 1.0
        extra = dict(kwargs, return_dict=False)
        if not self.guided and plain:
            out = self._call(unet_call, cond_x, timestep, [parts[0][0]], time_ids[-1:],
                             args, extra)
            return _wrap(out, return_dict)
        uncond_x = sample[:1]
        outs, uncond_out = self._run(unet_call, cond_x, uncond_x, timestep, parts, uncond,
                                     time_ids, args, extra)
        if plain:
            combined = outs[0:1]
        else:
            combined = uncond_out.clone()
            for index, (_, weight) in enumerate(parts):
                combined += (outs[index:index + 1] - uncond_out) * weight
        if not self.guided:
            return _wrap(combined, return_dict)
        return _wrap(torch.cat([uncond_out, combined]), return_dict)

    def _run(self, unet_call, cond_x, uncond_x, timestep, parts, uncond, time_ids, args,
             extra):
        """Return (cond predictions (n, ...), uncond prediction (1, ...))."""
        length = max(e.embeds.shape[1] for e, _ in parts)
        conds = torch.cat([_pad_last(e.embeds, length) for e, _ in parts])
        pooled = torch.cat([e.pooled for e, _ in parts])
        uncond_embeds = uncond.embeds
        if self.empty is not None and uncond_embeds.shape[1] != length:
            target = max(length, uncond_embeds.shape[1])
            conds = _pad_empty(conds, target, self.empty)
            uncond_embeds = _pad_empty(uncond_embeds, target, self.empty)
            length = target
            self.padded = True
        count = len(parts)
        cond_ids = _rows(time_ids[-1:], count)
        uncond_ids = time_ids[:1]
        if uncond_embeds.shape[1] == length:
            out = self._raw(unet_call, torch.cat([uncond_x, _rows(cond_x, count)]),
                            timestep, torch.cat([uncond_embeds, conds]),
                            torch.cat([uncond.pooled, pooled]),
                            torch.cat([uncond_ids, cond_ids]), args, extra)
            return out[1:], out[:1]
        outs = self._raw(unet_call, _rows(cond_x, count), timestep, conds, pooled, cond_ids,
                         args, extra)
        uncond_out = self._raw(unet_call, uncond_x, timestep, uncond_embeds, uncond.pooled,
                               uncond_ids, args, extra)
        return outs, uncond_out

    def _call(self, unet_call, x, timestep, encoded, time_ids, args, extra):
        """One UNet call on one conditioning."""
        return self._raw(unet_call, x, timestep, encoded[0].embeds, encoded[0].pooled,
                         time_ids, args, extra)

    def _raw(self, unet_call, x, timestep, embeds, pooled, time_ids, args, extra):
        """Call the (possibly graphed) UNet forward; return its prediction tensor."""
        self.unet_calls += 1
        return unet_call(x, timestep, embeds, *args,
                         added_cond_kwargs={'text_embeds': pooled, 'time_ids': time_ids},
                         **extra)[0]


def _rows(x, count):
    """Return `x` (1, ...) repeated to `count` rows."""
    return x if count == 1 else x.repeat(count, *([1] * (x.ndim - 1)))


def _wrap(out, return_dict):
    """Return `out` as UNet2DConditionModel.forward does for `return_dict`."""
    if not return_dict:
        return (out,)
    return UNet2DConditionOutput(sample=out)


@dataclass
class StagePrompts:
    """
    What one stage's pipeline call takes for its prompts, and what the next stage reuses.

    `kwargs` go to the pipeline call; `guidance` (None for a fixed prompt/negative pair) must
    be installed around the stage's UNet; `reuse` is the base's encodings for the refiner.
    """

    kwargs: dict
    guidance: object = None
    reuse: object = None
    padded_pair: bool = False

    @property
    def padded(self):
        """Whether pad_cond_uncond padded a prompt or negative (A1111's `Pad conds`)."""
        return self.padded_pair or bool(self.guidance is not None and self.guidance.padded)

    def installed(self, unet):
        """Return the context that routes `unet` through the guidance (none: a no-op)."""
        if self.guidance is None:
            return contextlib.nullcontext()
        return self.guidance.installed(unet)


def stage_prompts(models, role, plan, request, emphasis, device, step_of, pad,
                  previous=None, embeddings=None):
    """
    Return the StagePrompts of `plan` for the `role` ('base' or 'refiner') pipeline.

    A fixed prompt/negative pair of equal length (or one padded by `pad`, pad_cond_uncond)
    runs as diffusers runs it, bit for bit as before; a schedule, AND parts or unequal lengths
    run through a StageGuidance around the stage's UNet. `step_of()` is the step index
    counted over base and refiner; `previous` is the base's StagePrompts, for the refiner;
    `embeddings` the textual-inversion embeddings the prompts use.
    """
    pipeline = models.base if role == 'base' else models.refiner
    guided = uses_guidance(pipeline, request.guidance_scale)
    text, negative = plan.parts[0][1][0][1], plan.negative[0][1]
    zero = not negative and pipeline.config.force_zeros_for_empty_prompt
    same_length = (not guided or zero or chunk_count(pipeline, text, emphasis, embeddings)
                   == chunk_count(pipeline, negative, emphasis, embeddings))
    shared = previous.reuse if previous is not None else None
    if plan.static and plan.plain and (same_length or pad) \
            and not isinstance(shared, tuple):
        if role == 'base':
            embeds = encode_base(models.base, text, negative, request.guidance_scale, device,
                                 emphasis, embeddings)
        else:
            embeds = encode_refiner(models.base, models.refiner, shared, text, negative,
                                    request.guidance_scale, device, emphasis, embeddings)
        return StagePrompts(embeds.as_kwargs(), reuse=embeds,
                            padded_pair=guided and not same_length)
    encoded = encode_stage(models.base, pipeline, plan, emphasis, device, zero,
                           shared if isinstance(shared, tuple) else None, embeddings)
    empty = encode_empty_chunk(pipeline, device) if pad else None
    guidance = StageGuidance(plan, encoded[0], encoded[1], step_of, guided, empty)
    parts, _ = guidance.conditioning(step_of())
    first = parts[0][0]
    kwargs = {'prompt_embeds': first.embeds, 'pooled_prompt_embeds': first.pooled}
    if guided:  # shapes for the pipeline's own batching; the guidance supplies the values
        kwargs.update(negative_prompt_embeds=first.embeds,
                      negative_pooled_prompt_embeds=first.pooled)
    return StagePrompts(kwargs, guidance, encoded + (zero,))
