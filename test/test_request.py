# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Each validation rule of validate_request has a test here."""

from dataclasses import replace

import pytest

from sdxl_ros.engine.request import GenerationRequest, Limits, RequestError, validate_request

OK = GenerationRequest(prompt='a robot')


def check_refused(match, **fields):
    """Assert that the request with `fields` changed is refused with a matching message."""
    with pytest.raises(RequestError, match=match):
        validate_request(replace(OK, **fields), Limits())


def test_defaults_are_valid_and_returned_normalised():
    request = validate_request(replace(OK, prompt='  a robot \n', scheduler='euler A'))
    assert request.prompt == 'a robot'
    assert request.scheduler == 'Euler a'


def test_request_error_is_a_value_error():
    assert issubclass(RequestError, ValueError)


@pytest.mark.parametrize('prompt', ['', '   ', '\n\t', '\x00\x01'])
def test_empty_prompt_accepted_as_in_a1111(prompt):
    assert validate_request(replace(OK, prompt=prompt)).prompt == ''


def test_control_characters_removed_newline_and_tab_kept():
    request = validate_request(replace(OK, prompt='a\x00 ro\x1bbot\r\nline\ttab\x7f',
                                       negative_prompt='bad\x07'))
    assert request.prompt == 'a robot\nline\ttab'
    assert request.negative_prompt == 'bad'


def test_prompt_length_limit():
    validate_request(replace(OK, prompt='x' * 100), Limits(max_prompt_chars=100))
    with pytest.raises(RequestError, match='at most 100'):
        validate_request(replace(OK, prompt='x' * 101), Limits(max_prompt_chars=100))
    with pytest.raises(RequestError, match='negative_prompt'):
        validate_request(replace(OK, negative_prompt='x' * 101), Limits(max_prompt_chars=100))


def test_prompt_must_be_text():
    check_refused('prompt must be a string', prompt=5)


@pytest.mark.parametrize('field', ['width', 'height'])
def test_side_multiple_of_8(field):
    check_refused('multiple of 8.*use 1016 or 1024', **{field: 1020})


@pytest.mark.parametrize('field', ['width', 'height'])
@pytest.mark.parametrize('value', [248, 2056, 0, -8])
def test_side_bounds(field, value):
    check_refused('out of range: use 256..2048', **{field: value})


def test_side_bounds_follow_limits():
    limits = Limits(min_side=64, max_side=128)
    assert validate_request(replace(OK, width=64, height=128), limits).width == 64
    with pytest.raises(RequestError, match='64..128'):
        validate_request(replace(OK, width=136), limits)


def test_side_must_be_integer():
    check_refused('width must be an integer', width=512.0)
    check_refused('height must be an integer', height=True)


@pytest.mark.parametrize('steps', [0, -1, 151])
def test_steps_bounds(steps):
    check_refused('steps .* use 1..150', steps=steps)


def test_steps_limit_configurable():
    assert validate_request(replace(OK, steps=1)).steps == 1
    with pytest.raises(RequestError, match='1..20'):
        validate_request(replace(OK, steps=21), Limits(max_steps=20))


@pytest.mark.parametrize('value', [0.99, 30.5, -1.0])
def test_guidance_bounds(value):
    check_refused('guidance_scale .* use 1..30', guidance_scale=value)


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_guidance_finite(value):
    check_refused('finite', guidance_scale=value)


def test_guidance_edges_and_float32_rounding():
    assert validate_request(replace(OK, guidance_scale=1)).guidance_scale == 1.0
    assert validate_request(replace(OK, guidance_scale=30.0)).guidance_scale == 30.0
    # 7.5 and 0.8 as float32 through ROS come back as typed.
    import numpy as np
    request = validate_request(replace(OK, guidance_scale=float(np.float32(7.3)),
                                       refiner_switch=float(np.float32(0.8))))
    assert request.guidance_scale == 7.3
    assert request.refiner_switch == 0.8


@pytest.mark.parametrize('value', [0.0, -0.1, 1.01, float('nan'), float('inf')])
def test_refiner_switch_bounds(value):
    check_refused('refiner_switch', refiner_switch=value)


def test_refiner_switch_one_allowed():
    assert validate_request(replace(OK, refiner_switch=1.0)).refiner_switch == 1.0


@pytest.mark.parametrize('seed', [-2, 2 ** 32, 2 ** 40])
def test_seed_bounds(seed):
    check_refused('seed .* out of range', seed=seed)


def test_seed_edges():
    assert validate_request(replace(OK, seed=-1)).seed == -1
    assert validate_request(replace(OK, seed=0)).seed == 0
    assert validate_request(replace(OK, seed=2 ** 32 - 1)).seed == 2 ** 32 - 1


def test_seed_plus_images_must_fit():
    assert validate_request(replace(OK, seed=2 ** 32 - 3, num_images=3)).num_images == 3
    check_refused('runs past', seed=2 ** 32 - 2, num_images=3)


def test_seed_must_be_integer():
    check_refused('seed must be an integer', seed=1.5)


@pytest.mark.parametrize('name', ['Euler', 'euler', 'EULER A', 'dpm++ 2m  karras', 'ddim'])
def test_scheduler_case_insensitive(name):
    canonical = validate_request(replace(OK, scheduler=name)).scheduler
    assert canonical.lower() == ' '.join(name.split()).lower()


def test_unknown_scheduler_lists_known_names():
    check_refused("unknown scheduler 'DPM fast'.*Euler a", scheduler='DPM fast')


@pytest.mark.parametrize('count', [0, 9, -1])
def test_num_images_bounds(count):
    check_refused('num_images .* use 1..8', num_images=count)


def test_num_images_limit_configurable():
    with pytest.raises(RequestError, match='1..2'):
        validate_request(replace(OK, num_images=3), Limits(max_images=2))


def test_not_a_request():
    with pytest.raises(RequestError, match='GenerationRequest'):
        validate_request({'prompt': 'x'})
