# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The stages of one goal, in order, as diffusers' pipeline `__call__` numbers its own.

1. check inputs (SdxlEngine.generate: validate the request, resolve the seed -> Goal)
2. prepare: LoRAs, init image and its latents (A1111's img2img step count), the step plan,
   the ControlNet units
3. encode the prompts (per UNet: the refiner's embeddings reuse the base's text encoder 2;
   prompt editing, alternation, AND parts, or prompt and negative of different lengths
   also give the stage a guidance around its UNet: prompting/guidance.py)
4. denoise with the base
5. denoise with the refiner (when the plan uses it)
6. decode (fast path fp16 VAE with fp32 fallback, or the plain VAE)
7. package the result (image, seed, infotext)

Stages 3-6 run once per image. Where later features plug in: guidance <= 1 (one UNet pass)
is decided by the encoders (`uses_guidance`); other schedulers and schedule types come from
`make_scheduler`/`plan_steps`; ControlNet units run inside the base call (`denoise`: a
hook on the base UNet adds their residuals).
"""

import logging
import time

from sdxl_ros.engine.conditioning.controlnet import controlled
from sdxl_ros.engine.controlnet_files import request_controlnets
from sdxl_ros.engine.generation.decoding import decode_latents, encode_image
from sdxl_ros.engine.generation.goal import ImageSteps
from sdxl_ros.engine.generation.init_image import prepare_init
from sdxl_ros.engine.infotext import format_infotext
from sdxl_ros.engine.progress import ProgressClock
from sdxl_ros.engine.prompt_schedule import plan_prompts, schedule_length
from sdxl_ros.engine.prompting.guidance import stage_prompts
from sdxl_ros.engine.prompting.lora import fused_mode_needed
from sdxl_ros.engine.request import RequestError
from sdxl_ros.engine.result import GenerationResult
from sdxl_ros.engine.schedulers import make_scheduler
from sdxl_ros.engine.step_plan import img2img_strength, img2img_switch, plan_steps

import torch

LOG = logging.getLogger(__name__)


def run_goal(engine, goal):
    """Run stages 2-7 of a checked goal on a loaded engine; return the GenerationResult."""
    prepare(engine, goal)                                               # 2
    result = GenerationResult(warnings=list(goal.warnings))
    for index in range(goal.request.num_images):
        image = ImageSteps(goal, index)
        generator = torch.Generator('cpu').manual_seed(goal.seed + index)
        latents = denoise(engine, goal, image, generator, 'base')       # 3, 4
        if goal.plan.uses_refiner:
            latents = denoise(engine, goal, image, generator, 'refiner',
                              latents)                                  # 3, 5
        picture = decode(engine, goal, image, latents)                  # 6
        package(engine, goal, image, result, picture, goal.seed + index)  # 7
    result.elapsed_sec = goal.clock.elapsed()
    return result


def prepare(engine, goal):
    """Stage 2: apply the LoRAs, prepare the init image and plan the steps."""
    models = engine.models
    engine.loras.apply(goal.loras, fused_mode_needed(models.base, engine.accelerator))
    request = goal.request
    goal.prepared = prepare_init(request)
    if goal.prepared is not None:
        goal.kind = 'img2img' if goal.prepared.mask is None else 'inpaint'
    goal.strength = handed_strength(request, goal.prepared, engine.config.a1111_img2img_steps)
    goal.switch = img2img_switch(goal.strength, request.refiner_switch)
    goal.plan = plan_steps(request.scheduler, engine.scheduler_configs['base'], request.steps,
                           goal.switch, models.refiner is not None, goal.strength,
                           request.schedule_type)
    goal.clock = ProgressClock(goal.plan.total, request.num_images, goal.started)
    goal.init_latents = None
    if goal.prepared is not None:
        goal.init_latents = encode_image(models.base.vae, goal.prepared.init, engine.dtype)
    prepare_control(engine, goal)


def prepare_control(engine, goal):
    """Stage 2: find, load and prepare the goal's ControlNet units (none: unload all)."""
    request = goal.request
    if not request.control:
        engine.controlnets.use([])  # kept while goals use them
        return
    unet = engine.models.base.unet
    goal.control_files = request_controlnets(
        request, engine.config.controlnet_dir, engine.config.model_dir,
        engine.lora_target.cross_attention_dim)
    cfg = request.guidance_scale > 1 and unet.config.time_cond_proj_dim is None
    goal.control_units = engine.controlnets.prepare(request, goal.control_files, request.width,
                                                    request.height, cfg)
    accel = engine.accelerator
    if goal.control_units and accel is not None and accel.enabled:
        LOG.info("ControlNet goal: its controlled base steps run eagerly (the fast path's "
                 'CUDA graphs take no ControlNet residuals)')


def handed_strength(request, prepared, a1111_count):
    """Return the img2img strength handed to diffusers (1.0 without an init image)."""
    if prepared is None:
        return 1.0
    strength = img2img_strength(request.denoising_strength, request.steps, a1111_count)
    if int(request.steps * strength) < 1:
        raise RequestError(
            f'steps {request.steps} x denoising_strength {request.denoising_strength} leaves '
            "no step to run with diffusers' count (int(steps * strength) = 0): raise steps "
            'or denoising_strength, or set a1111_img2img_steps')
    return strength


def encode_prompts(engine, goal, image, role, order):
    """
    Stage 3: the `role` UNet's prompt conditioning (guidance.StagePrompts), kept per image.

    The step index a schedule follows is the image's, counted over base and refiner; the
    schedule spans the steps, twice them for a sampler of `order` 2 (as A1111 counts).
    """
    if goal.prompts is None:
        goal.prompts = plan_prompts(goal.text, goal.negative,
                                    schedule_length(goal.request.steps, order))
    previous = image.prompts[-1] if image.prompts else None
    image.prompts.append(stage_prompts(
        engine.models, role, goal.prompts, goal.request, goal.emphasis, engine.device,
        lambda: image.step, engine.config.pad_cond_uncond, previous, goal.embeddings))
    return image.prompts[-1]


def base_inputs(goal):
    """Return what the base call takes besides prompts and steps: size, or init latents."""
    request = goal.request
    if goal.kind == 'text':
        return {'width': request.width, 'height': request.height}
    return {'image': goal.init_latents, 'strength': goal.strength}


def denoise(engine, goal, image, generator, role, latents=None):
    """
    Stages 4 and 5: run the `role` UNet's part of the schedule; return latents.

    Stops early (no decode follows) when the goal is cancelled; `latents` are the base's
    output handed to the refiner.
    """
    request = goal.request
    common = {'num_inference_steps': request.steps,
              'guidance_scale': request.guidance_scale, 'generator': generator,
              'output_type': 'latent', 'callback_on_step_end': image.on_step_end,
              'callback_on_step_end_tensor_inputs': ['latents']}
    if goal.kind == 'inpaint':
        common.update(mask_image=goal.prepared.mask, width=request.width,
                      height=request.height)
    goal.check_cancel()
    image.stage = role
    engine.enter_stage(role)
    pipeline = engine.pipeline(goal.kind, role)
    pipeline.scheduler = make_scheduler(request.scheduler, engine.scheduler_configs[role],
                                        request.schedule_type)
    prompts = encode_prompts(engine, goal, image, role, pipeline.scheduler.order)    # 3
    with prompts.installed(pipeline.unet):
        if role == 'base':
            with controlled(pipeline.unet, goal.control_units,
                            lambda: image.step / goal.plan.total):
                return pipeline(denoising_end=goal.switch if goal.plan.uses_refiner else None,
                                **base_inputs(goal), **prompts.kwargs, **common).images
        return pipeline(image=latents, denoising_start=goal.switch, **prompts.kwargs,
                        **common).images


def decode(engine, goal, image, latents):
    """Stage 6: latents to one uint8 RGB image (composited into the init image if any)."""
    goal.check_cancel()
    image.report('decoding', goal.plan.total)
    start = time.monotonic()
    accel = engine.accelerator
    picture = (accel.decode(latents) if accel is not None
               else decode_latents(engine.models.base.vae, latents))[0]
    if goal.prepared is not None:
        picture = goal.prepared.composite(picture)
    goal.clock.decode_finished(time.monotonic() - start)
    return picture


def package(engine, goal, image, result, picture, seed):
    """Stage 7: add one image with its seed and infotext to the result."""
    models = engine.models
    result.images.append(picture)
    result.seeds.append(seed)
    result.infotexts.append(format_infotext(
        goal.request, seed, models.base_name,
        models.refiner_name if goal.plan.uses_refiner else '', lora_hashes=goal.lora_hashes,
        emphasis=goal.emphasis, ti_hashes=goal.ti_hashes,
        pad_conds=any(stage.padded for stage in image.prompts),
        control_hashes=[f.short_hash for f in goal.control_files]))
