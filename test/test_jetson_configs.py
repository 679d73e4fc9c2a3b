# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The Jetson parameter files (config/jetson_orin_*.yaml) are valid and do what they say."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from ros_harness import TINY_PARAMETERS
from sdxl_ros.ros.node_parameters import check_parameters, NodeParameters, PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
FAST = ROOT / 'config' / 'jetson_orin_fast.yaml'
FILES = [ROOT / 'config' / 'jetson_orin_32gb.yaml', ROOT / 'config' / 'jetson_orin_64gb.yaml',
         FAST]
SPECS = {spec.name: spec for spec in PARAMETERS}
# What bench/README.md "Unified memory" supports on both: resident weights, tiled decode.
MEASURED = {'memory_mode': 'resident', 'vae_tiling': True, 'device': 'cuda'}


def _values(path):
    yaml = pytest.importorskip('yaml', reason='PyYAML is not installed')
    document = yaml.safe_load(path.read_text())
    assert list(document) == ['/**/sdxl']
    return document['/**/sdxl']['ros__parameters']


@pytest.mark.parametrize('path', FILES, ids=lambda p: p.name)
def test_values_are_known_typed_and_checked(path):
    values = _values(path)
    for name, value in values.items():
        assert name in SPECS, f'{name} is not a parameter of sdxl_node'
        assert type(value) is type(SPECS[name].default), name
    params = NodeParameters.defaults().updated(values)
    assert check_parameters(params, check_models=False) == []
    config = params.engine_config()
    assert {k: values[k] for k in MEASURED} == MEASURED
    assert config.memory_mode == 'resident' and config.vae_tiling is True


@pytest.mark.ros
@pytest.mark.parametrize('path', FILES, ids=lambda p: p.name)
def test_node_accepts_the_file(ros_client, start_node, path):
    """The real node starts with the file (tiny models, CPU override) and takes its values."""
    from rcl_interfaces.srv import GetParameters
    values = _values(path)
    # The harness's tiny-preset values (models, CPU, 64x64) override the file's.
    names = [name for name in values if name not in TINY_PARAMETERS]
    node = start_node(params_files=[path])
    request = GetParameters.Request(names=names)
    answer = ros_client.call(GetParameters, f'{node.fqn}/get_parameters', request).values
    got = {}
    for name, value in zip(names, answer):
        kind = type(values[name])
        got[name] = {bool: value.bool_value, int: value.integer_value,
                     str: value.string_value, float: value.double_value}[kind]
    assert got == {name: values[name] for name in names}


@pytest.mark.ros  # builds a goal message: skipped where ROS is missing
def test_fast_file_makes_empty_goals_few_step_goals():
    """A goal that sets only a prompt becomes Lightning's settings: 4 steps, CFG 1, no refiner."""
    from sdxl_ros.engine.request import validate_request
    from sdxl_ros.ros.goal_conversion import goal_to_request
    values = _values(FAST)
    params = NodeParameters.defaults().updated(values)
    assert params.refiner_model == '' and params.base_model.endswith('.safetensors')
    goal = SimpleNamespace(prompt='a robot', negative_prompt='', width=0, height=0, steps=0,
                           guidance_scale=0.0, refiner_switch=0.0, seed=-1, scheduler='',
                           num_images=0, schedule_type='')
    request = validate_request(goal_to_request(goal, params), params.limits())
    assert (request.scheduler, request.schedule_type, request.steps,
            request.guidance_scale, request.refiner_switch) == ('Euler', 'SGM Uniform', 4,
                                                                1.0, 1.0)
    assert (request.width, request.height) == (1024, 1024)


def test_fast_file_states_its_speed_as_an_estimate_from_the_figures():
    text = FAST.read_text()
    for words in ('ESTIMATE', 'no Orin measured', 'MLPerf', '9.96 s', '67.8 ms',
                  'bench/bench_few_step.py'):
        assert words in text
