# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Goal <-> request conversion and feedback filling on real messages, without a running node."""

import numpy as np
import pytest

from ros_harness import over_the_wire
from sdxl_ros.action import GenerateImage
from sdxl_ros.engine.progress import Progress
from sdxl_ros.engine.request import GenerationRequest, Limits, RequestError, validate_request
from sdxl_ros.ros.goal_conversion import (goal_to_request, progress_to_feedback, queued_feedback,
                                          request_to_goal)
from sdxl_ros.ros.node_parameters import NodeParameters


#: A float32 message field holds the nearest float32, about 1e-7 relative from the float.
FLOAT32 = 1e-7


def _goal(**fields):
    """Return a GenerateImage goal as the node receives it; unset fields keep their defaults."""
    return over_the_wire(GenerateImage.Goal(**fields))


def _fields(message):
    """Return a message's fields as a dict."""
    return {name: getattr(message, name) for name in message.get_fields_and_field_types()}


PARAMS = NodeParameters.defaults().updated({
    'default_width': 512, 'default_height': 768, 'default_steps': 25,
    'default_guidance_scale': 6.5, 'default_refiner_switch': 0.75,
    'default_scheduler': 'Euler a', 'default_negative_prompt': 'blurry'})


def test_zero_and_empty_fields_take_the_node_defaults():
    request = goal_to_request(_goal(prompt='a robot'), PARAMS)
    assert request == GenerationRequest(
        prompt='a robot', negative_prompt='blurry', width=512, height=768, steps=25,
        guidance_scale=6.5, refiner_switch=0.75, seed=-1, scheduler='Euler a', num_images=1)


def test_given_fields_win_over_defaults():
    goal = _goal(prompt='p', negative_prompt='n', width=1024, height=1024, steps=30,
                 guidance_scale=7.0, refiner_switch=1.0, seed=0, scheduler='DDIM',
                 num_images=2)
    request = goal_to_request(goal, PARAMS)
    assert (request.negative_prompt, request.width, request.steps, request.refiner_switch,
            request.seed, request.scheduler, request.num_images) == (
        'n', 1024, 30, 1.0, 0, 'DDIM', 2)


def test_float32_values_come_back_as_typed_after_validation():
    goal = _goal(prompt='p', guidance_scale=7.3, refiner_switch=0.8)
    assert goal.guidance_scale != 7.3 and goal.guidance_scale == float(np.float32(7.3))
    request = validate_request(goal_to_request(goal, PARAMS))
    assert (request.guidance_scale, request.refiner_switch) == (7.3, 0.8)


def test_an_invalid_goal_fails_validation_with_the_engine_message():
    with pytest.raises(RequestError, match='steps 100000'):
        validate_request(goal_to_request(_goal(prompt='  ', steps=100000), PARAMS))


def test_request_to_goal_round_trip():
    request = GenerationRequest(prompt='a', negative_prompt='b', width=64, height=72, steps=3,
                                guidance_scale=5.0, refiner_switch=0.5, seed=9,
                                scheduler='Euler', num_images=2)
    goal = request_to_goal(request, _goal())
    assert goal_to_request(goal, PARAMS) == request


def test_request_to_goal_fills_a_real_goal_message():
    goal = request_to_goal(GenerationRequest(prompt='x', seed=4294967295), _goal())
    assert goal.seed == 4294967295 and goal.width == 1024


def test_progress_to_feedback():
    feedback = progress_to_feedback(
        Progress(stage='refiner', step=25, total_steps=30, image_index=1, num_images=2,
                 elapsed_sec=3.5, eta_sec=4.25), GenerateImage.Feedback())
    assert _fields(feedback) == {'stage': 'refiner', 'queue_position': 0, 'step': 25,
                                 'total_steps': 30, 'image_index': 1, 'elapsed_sec': 3.5,
                                 'eta_sec': 4.25}


def test_feedback_seconds_are_float32():
    feedback = over_the_wire(progress_to_feedback(
        Progress(stage='base', elapsed_sec=0.1, eta_sec=1 / 3), GenerateImage.Feedback()))
    assert feedback.elapsed_sec != 0.1
    assert feedback.elapsed_sec == pytest.approx(0.1, rel=FLOAT32)
    assert feedback.eta_sec == pytest.approx(1 / 3, rel=FLOAT32)


def test_queued_feedback():
    feedback = queued_feedback(2, GenerateImage.Feedback())
    assert (feedback.stage, feedback.queue_position) == ('queued', 2)


def _real_goal(**fields):
    """Return a real GenerateImage.Goal (the interfaces are built by scripts/test.sh)."""
    action = pytest.importorskip('sdxl_ros.action', reason='interfaces not built')
    return action.GenerateImage.Goal(prompt='a robot', **fields)


def _rgb(height, width):
    import numpy as np
    from sdxl_ros.ros.image_conversion import numpy_to_image_msg
    return numpy_to_image_msg(np.full((height, width, 3), 9, np.uint8))


def test_init_image_fields_become_the_request():
    import numpy as np
    from sdxl_ros.ros.image_conversion import numpy_to_mono_msg
    mask = np.zeros((40, 48), np.uint8)
    mask[5:9, 5:9] = 255
    goal = _real_goal(init_image=_rgb(40, 48), mask_image=numpy_to_mono_msg(mask),
                      resize_mode='Crop And Resize', inpaint_full_res=True)
    assert (goal.mask_blur, goal.inpaint_full_res_padding) == (4, 32), 'A1111 defaults'
    request = goal_to_request(goal, PARAMS)
    assert (request.width, request.height) == (0, 0), 'size comes from the init image'
    assert request.denoising_strength == PARAMS.default_denoising_strength
    assert request.init_image.shape == (40, 48, 3) and np.array_equal(request.mask_image, mask)
    valid = validate_request(request, Limits(min_side=8))
    assert (valid.width, valid.height, valid.resize_mode) == (48, 40, 'Crop and resize')


def test_init_image_problems_name_the_field():
    from sdxl_ros.ros.goal_conversion import init_topic
    with pytest.raises(RequestError, match='init_image: image is 0x0'):
        goal_to_request(_real_goal(init_image=_rgb(1, 1).__class__(encoding='rgb8')), PARAMS)
    with pytest.raises(RequestError, match='not both'):
        init_topic(_real_goal(init_image=_rgb(8, 8), init_image_topic='/cam'))
    assert init_topic(_real_goal(init_image_topic=' /cam ')) == '/cam'


def test_topic_goals_validate_against_a_stand_in_frame():
    from sdxl_ros.ros.goal_conversion import stand_in_frame
    goal = _real_goal(init_image_topic='/cam', width=0, height=0)
    frame = stand_in_frame(goal, PARAMS)
    assert (frame.width, frame.height) == (PARAMS.default_width, PARAMS.default_height)
    request = validate_request(goal_to_request(goal, PARAMS, frame), PARAMS.limits())
    assert (request.width, request.height) == (512, 768)
    real = goal_to_request(goal, PARAMS, _rgb(300, 400))
    assert validate_request(real, PARAMS.limits()).width == 400


def test_request_to_goal_carries_the_img2img_settings():
    request = GenerationRequest(prompt='p', denoising_strength=0.5, resize_mode='Resize and fill',
                                mask_blur=0, inpaint_full_res=True,
                                inpaint_full_res_padding=12)
    goal = request_to_goal(request, _real_goal())
    assert (round(goal.denoising_strength, 6), goal.resize_mode, goal.mask_blur,
            goal.inpaint_full_res, goal.inpaint_full_res_padding) == (
        0.5, 'Resize and fill', 0, True, 12)
