# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Infotext (A1111 `parameters`) formatting and exact round trips."""

from dataclasses import replace

import pytest

from sdxl_ros.engine.infotext import format_infotext, parse_infotext, parse_infotext_fields
from sdxl_ros.engine.request import GenerationRequest, RequestError, validate_request

BASE = GenerationRequest(prompt='a robot', negative_prompt='blurry', width=1024, height=768,
                         steps=30, guidance_scale=7.0, refiner_switch=0.8, seed=123,
                         scheduler='DPM++ 2M Karras')


def test_format_matches_a1111_layout():
    text = format_infotext(BASE, 123, 'sd_xl_base_1.0', 'sd_xl_refiner_1.0')
    assert text == (
        'a robot\nNegative prompt: blurry\n'
        'Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, '
        'Size: 1024x768, '
        'Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0, Refiner switch at: 0.8')


def test_no_negative_line_when_empty():
    text = format_infotext(replace(BASE, negative_prompt=''), 5, 'm', '')
    assert 'Negative prompt' not in text
    assert 'Refiner:' not in text
    assert text.splitlines()[0] == 'a robot'


@pytest.mark.parametrize('prompt,negative', [
    ('a robot', ''),
    ('a red, shiny robot: detailed', 'ugly, blurry'),
    ('line one\nline two, with comma\n\nline four', 'neg one\nneg: two'),
    ('quotes "inside" and \\ backslash', 'a "quoted" negative'),
    ('Steps: 3, Sampler: x, Seed: 1 is in my prompt\nreally', ''),
    ('unicode ✓ ロボット', 'нет'),
])
def test_round_trip_exact(prompt, negative):
    request = validate_request(replace(BASE, prompt=prompt, negative_prompt=negative,
                                       guidance_scale=6.5, refiner_switch=0.75, steps=17,
                                       scheduler='Euler a', width=832, height=1216))
    text = format_infotext(request, request.seed, 'base, v1', 'ref:2')
    assert parse_infotext(text) == request


def test_round_trip_with_reported_seed():
    request = replace(BASE, seed=-1, num_images=3)
    parsed = parse_infotext(format_infotext(request, 4242, 'b', 'r'))
    # "DPM++ 2M Karras" is written as A1111 1.9+ writes it: sampler and schedule type.
    assert parsed == replace(request, seed=4242, num_images=1, scheduler='DPM++ 2M',
                             schedule_type='Karras')


def test_model_names_quoted_and_recoverable():
    text = format_infotext(BASE, 1, 'my, model', 'refiner "x"')
    _prompt, _negative, params = parse_infotext_fields(text)
    assert params['Model'] == 'my, model'
    assert params['Refiner'] == 'refiner "x"'


def test_parse_newer_a1111_schedule_type():
    text = ('a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, '
            'Seed: 9, Size: 512x512, Model hash: abc, Model: x')
    request = parse_infotext(text)
    assert (request.scheduler, request.schedule_type) == ('DPM++ 2M', 'Karras')
    assert (request.steps, request.guidance_scale, request.seed) == (20, 5.0, 9)
    assert (request.width, request.height) == (512, 512)


def test_parse_without_parameters_line_uses_defaults():
    request = parse_infotext('just a prompt')
    assert request.prompt == 'just a prompt'
    assert request.steps == GenerationRequest(prompt='').steps


def test_parse_bad_values():
    with pytest.raises(RequestError, match='Steps'):
        parse_infotext('p\nSteps: many, Sampler: Euler, Seed: 1')
    with pytest.raises(RequestError, match='empty'):
        parse_infotext('  ')


def test_infotext_does_not_import_torch():
    import subprocess
    import sys
    code = ('import sys, sdxl_ros.engine.infotext, sdxl_ros.engine.request, '
            'sdxl_ros.engine.png_io; sys.exit(1 if "torch" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


def test_a1111_infotext_without_refiner_means_base_only():
    """A1111 drops empty fields: no `Refiner:` = no refiner ran, so none is used again."""
    text = ('a castle\nNegative prompt: fog\nSteps: 25, Sampler: DPM++ 2M, Schedule type: '
            'Karras, CFG scale: 6, Seed: 42, Size: 1024x1024, Model hash: 31e35c80fc, '
            'Model: sd_xl_base_1.0, Version: v1.10.1')
    request = parse_infotext(text)
    assert request.refiner_switch == 1.0
    assert (request.scheduler, request.schedule_type) == ('DPM++ 2M', 'Karras')
    with_refiner = parse_infotext(text.replace(
        'Version', 'Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.7, Version'))
    assert with_refiner.refiner_switch == 0.7
    assert parse_infotext(text.replace('Version', 'Refiner: r, Version')).refiner_switch == 0.8


def test_emphasis_lora_hashes_and_prompt_syntax_round_trip():
    prompt = '(masterpiece:1.2), [blurry] \\(1990\\) <lora:detail:0.7> BREAK a cat'
    request = validate_request(replace(BASE, prompt=prompt, negative_prompt='(ugly:1.3)'))
    text = format_infotext(request, 9, 'b', 'r', lora_hashes=[('detail', '0123456789ab')],
                           emphasis='none')
    assert 'Lora hashes: "detail: 0123456789ab"' in text and 'Emphasis: None' in text
    parsed = parse_infotext(text)
    assert parsed == replace(request, seed=9, emphasis='none')
    assert parse_infotext_fields(text)[2]['Lora hashes'] == 'detail: 0123456789ab'
    default = format_infotext(request, 9, 'b', 'r', emphasis='original')
    assert 'Emphasis' not in default and parse_infotext(default).emphasis == ''


def test_old_a1111_png_with_a_karras_sampler_name_reads_as_sampler_and_type():
    text = ('a fox\nSteps: 25, Sampler: DPM++ 2M SDE Karras, CFG scale: 6, Seed: 3, '
            'Size: 1024x1024, Model: sd_xl_base_1.0')
    request = parse_infotext(text)
    assert (request.scheduler, request.schedule_type) == ('DPM++ 2M SDE', 'Karras')
    assert 'Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG' in format_infotext(
        validate_request(request), 3)


@pytest.mark.parametrize('sampler, schedule_type, written', [
    ('DPM++ 2M', '', 'Karras'),          # A1111 writes the type Automatic resolved to
    ('DPM++ 2M SDE', 'automatic', 'Exponential'),
    ('Euler a', '', 'Automatic'),        # no type of its own: A1111 keeps "Automatic"
    ('Euler', 'sgm_uniform', 'SGM Uniform'),
    ('LCM', 'SGM Uniform', 'SGM Uniform'),
    ('DDIM', '', 'Automatic'),
])
def test_schedule_type_written_as_a1111_writes_it_and_read_back(
        sampler, schedule_type, written):
    request = validate_request(replace(BASE, scheduler=sampler, schedule_type=schedule_type))
    text = format_infotext(request, 123, 'b', 'r')
    assert f'Sampler: {sampler}, Schedule type: {written}, CFG scale' in text
    parsed = parse_infotext(text)
    assert parsed.scheduler == sampler
    assert validate_request(parsed).schedule_type in (request.schedule_type, written)


def test_a1111_19_infotext_with_sgm_uniform_round_trips_exactly():
    text = ('a robot\nSteps: 4, Sampler: Euler, Schedule type: SGM Uniform, CFG scale: 1, '
            'Seed: 42, Size: 1024x1024, Model: sdxl_lightning_4step, Refiner switch at: 1')
    request = validate_request(parse_infotext(text))
    assert (request.scheduler, request.schedule_type, request.steps,
            request.guidance_scale) == ('Euler', 'SGM Uniform', 4, 1.0)
    assert format_infotext(request, 42, 'sdxl_lightning_4step') == text
