# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
GenerateImage goal <-> GenerationRequest, and engine Progress -> feedback (pure functions).

A zero or empty goal field means "the node's default" (parameters default_*); `seed` -1 means
random. The message classes are passed in or duck-typed, so these functions are tested without
a running node.
"""

import numpy as np

from sdxl_ros.engine.controlnet_files import request_controlnets
from sdxl_ros.engine.embedding_files import EmbeddingWidths, request_embeddings
from sdxl_ros.engine.lora_files import request_loras
from sdxl_ros.engine.request import (DEFAULT_INPAINT_PADDING, DEFAULT_MASK_BLUR,
                                     GenerationRequest, RequestError, RESIZE_MODES,
                                     validate_request)
from sdxl_ros.ros.control_units import (control_topics, goal_control_units,
                                        request_units_to_goal)
from sdxl_ros.ros.image_conversion import image_msg_to_numpy, mask_msg_to_numpy


def image_is_set(msg):
    """Whether an Image field of a goal was filled in (a default Image has no size or data)."""
    return msg is not None and bool(msg.width or msg.height or msg.encoding or len(msg.data))


def _convert(msg, field, convert):
    """Run an image conversion, turning its ValueError into a RequestError naming `field`."""
    try:
        return convert(msg)
    except ValueError as error:
        raise RequestError(f'{field}: {error}') from None


def init_topic(goal):
    """Return the goal's init_image_topic ('' when none), refusing it together with init_image."""
    topic = getattr(goal, 'init_image_topic', '').strip()
    if topic and image_is_set(getattr(goal, 'init_image', None)):
        raise RequestError('set either init_image or init_image_topic, not both')
    return topic


def stand_in_frame(goal, params):
    """
    Return a black rgb8 frame to validate a topic goal with before its real frame exists.

    It has the mask's size when there is a mask, else the goal's (or default) size; the real
    frame is validated again when it arrives.
    """
    from sdxl_ros.ros.image_conversion import numpy_to_image_msg
    mask = getattr(goal, 'mask_image', None)
    if image_is_set(mask) and mask.width and mask.height:
        height, width = mask.height, mask.width
    else:
        height = int(goal.height) or params.default_height
        width = int(goal.width) or params.default_width
    return numpy_to_image_msg(np.zeros((max(1, height), max(1, width), 3), np.uint8))


def goal_to_request(goal, params, frame=None, control_frames=None):
    """
    Fill the zero/empty fields of `goal` from `params` (NodeParameters); not yet validated.

    Converts `init_image` and `mask_image` (RequestError naming the field when malformed);
    `frame` is the Image taken from `init_image_topic`, if the goal names one. With an init
    image, width/height 0 stay 0: validation takes the init image's size. `control_frames`
    {unit index: Image} are the frames of the ControlNet units' image_topics (stand-ins
    until they came).
    """
    topic = init_topic(goal)
    init = None
    if image_is_set(getattr(goal, 'init_image', None)):
        init = _convert(goal.init_image, 'init_image', image_msg_to_numpy)
    elif topic and frame is not None:
        init = _convert(frame, f'init_image_topic {topic}', image_msg_to_numpy)
    mask = None
    if image_is_set(getattr(goal, 'mask_image', None)):
        mask = _convert(goal.mask_image, 'mask_image', mask_msg_to_numpy)
    from_image = init is not None or bool(topic)
    return GenerationRequest(
        prompt=goal.prompt,
        negative_prompt=goal.negative_prompt or params.default_negative_prompt,
        width=int(goal.width) or (0 if from_image else params.default_width),
        height=int(goal.height) or (0 if from_image else params.default_height),
        steps=int(goal.steps) or params.default_steps,
        guidance_scale=float(goal.guidance_scale) or params.default_guidance_scale,
        refiner_switch=float(goal.refiner_switch) or params.default_refiner_switch,
        seed=int(goal.seed),
        scheduler=goal.scheduler or params.default_scheduler,
        num_images=int(goal.num_images) or 1,
        init_image=init,
        denoising_strength=float(getattr(goal, 'denoising_strength', 0.0))
        or params.default_denoising_strength,
        resize_mode=getattr(goal, 'resize_mode', '') or RESIZE_MODES[0],
        mask_image=mask,
        mask_blur=int(getattr(goal, 'mask_blur', DEFAULT_MASK_BLUR)),
        inpaint_full_res=bool(getattr(goal, 'inpaint_full_res', False)),
        inpaint_full_res_padding=int(getattr(goal, 'inpaint_full_res_padding',
                                             DEFAULT_INPAINT_PADDING)),
        schedule_type=getattr(goal, 'schedule_type', '') or params.default_schedule_type,
        control=goal_control_units(goal, control_frames),
    )


def admit_goal(goal, params, lora_target):
    """
    Validate a goal at admission; return (request, init_image_topic or '').

    A topic goal is checked against a stand-in frame now (its real frame comes when it runs);
    LoRA names, files and shapes are checked too, and the textual-inversion embeddings the
    prompts name, so a bad goal never waits in the queue. Raises RequestError with the reason.
    """
    topic = init_topic(goal)
    control_topics(goal)  # refuses a unit with both or neither of image and image_topic
    frame = stand_in_frame(goal, params) if topic else None
    request = validate_request(goal_to_request(goal, params, frame), params.limits())
    request_loras(request, params.lora_dir, lora_target, with_hash=False,
                  comments=params.prompt_comments)
    widths = (EmbeddingWidths(lora_target.text_encoder_width, lora_target.text_encoder_2_width)
              if lora_target is not None else None)
    request_embeddings([request.prompt, request.negative_prompt],
                       params.embeddings_dir, widths, with_hash=False)
    request_controlnets(request, params.controlnet_dir, params.model_dir,
                        getattr(lora_target, 'cross_attention_dim', None), with_hash=False)
    return request, topic


def request_to_goal(request, goal):
    """
    Copy the fields of `request` into the goal message `goal` and return it.

    The init image and mask are not copied (the client sets them from files or a topic);
    strength, resize mode and the inpainting settings are.
    """
    goal.prompt = request.prompt
    goal.negative_prompt = request.negative_prompt
    goal.width = int(request.width)
    goal.height = int(request.height)
    goal.steps = int(request.steps)
    goal.guidance_scale = float(request.guidance_scale)
    goal.refiner_switch = float(request.refiner_switch)
    goal.seed = int(request.seed)
    goal.scheduler = request.scheduler
    goal.num_images = int(request.num_images)
    goal.denoising_strength = float(request.denoising_strength)
    goal.resize_mode = request.resize_mode
    goal.mask_blur = int(request.mask_blur)
    goal.inpaint_full_res = bool(request.inpaint_full_res)
    goal.inpaint_full_res_padding = int(request.inpaint_full_res_padding)
    goal.schedule_type = request.schedule_type
    request_units_to_goal(request.control, goal)
    return goal


def progress_to_feedback(progress, feedback):
    """Fill the feedback message `feedback` from an engine Progress and return it."""
    feedback.stage = progress.stage
    feedback.queue_position = 0
    feedback.step = int(progress.step)
    feedback.total_steps = int(progress.total_steps)
    feedback.image_index = int(progress.image_index)
    feedback.elapsed_sec = float(progress.elapsed_sec)
    feedback.eta_sec = float(progress.eta_sec)
    return feedback


def queued_feedback(position, feedback):
    """Fill `feedback` for a goal waiting with `position` goals ahead of it and return it."""
    feedback.stage = 'queued'
    feedback.queue_position = int(position)
    return feedback
