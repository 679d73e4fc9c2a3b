# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
GenerateImage goal <-> GenerationRequest, and engine Progress -> feedback (pure functions).

A zero or empty goal field means "the node's default" (parameters default_*); `seed` -1 means
random. The message classes are passed in or duck-typed, so these functions are tested without
a running node.
"""

from sdxl_ros.engine.request import GenerationRequest


def goal_to_request(goal, params):
    """Fill the zero/empty fields of `goal` from `params` (NodeParameters); not yet validated."""
    return GenerationRequest(
        prompt=goal.prompt,
        negative_prompt=goal.negative_prompt or params.default_negative_prompt,
        width=int(goal.width) or params.default_width,
        height=int(goal.height) or params.default_height,
        steps=int(goal.steps) or params.default_steps,
        guidance_scale=float(goal.guidance_scale) or params.default_guidance_scale,
        refiner_switch=float(goal.refiner_switch) or params.default_refiner_switch,
        seed=int(goal.seed),
        scheduler=goal.scheduler or params.default_scheduler,
        num_images=int(goal.num_images) or 1,
    )


def request_to_goal(request, goal):
    """Copy every field of `request` into the goal message `goal` and return it."""
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
