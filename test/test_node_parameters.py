# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The node's parameter table, dataclass and checks (no ROS), and config/sdxl.yaml."""

from dataclasses import fields, replace
from pathlib import Path
import re

import pytest

from sdxl_ros.engine.config import EngineConfig, needs_reload
from sdxl_ros.engine.request import Limits
from sdxl_ros.ros.node_parameters import (check_parameters, NodeParameters, PARAMETERS,
                                          TEST_HOOKS)

ROOT = Path(__file__).resolve().parents[1]


def test_table_and_dataclass_agree():
    specs = PARAMETERS + TEST_HOOKS
    assert [spec.name for spec in specs] == [f.name for f in fields(NodeParameters)]
    for spec, field in zip(specs, fields(NodeParameters)):
        assert field.metadata['spec'] is spec and field.type is type(spec.default)
        assert getattr(NodeParameters(), spec.name) == spec.default
    for spec in PARAMETERS:
        assert spec.description.endswith('.') or spec.description.endswith(')') \
            or ':' in spec.description, spec.name
        if spec.minimum is not None:
            assert spec.minimum <= spec.default <= spec.maximum, spec.name


def test_defaults_are_the_sdxl_checkpoints():
    params = NodeParameters.defaults()
    assert params.base_model == 'sd_xl_base_1.0.safetensors'
    assert (params.default_width, params.default_height) == (1024, 1024)
    assert params.autostart is True


def test_choices_scheduler_and_sides_are_checked():
    params = NodeParameters.defaults().updated({
        'device': 'tpu', 'default_scheduler': 'Warp', 'min_side': 4096})
    problems = check_parameters(params, check_models=False)
    assert any('device' in p for p in problems)
    assert any('default_scheduler' in p for p in problems)
    assert any('min_side' in p for p in problems)


def test_models_are_looked_up(tmp_path):
    params = NodeParameters.defaults().updated({'model_dir': str(tmp_path)})
    assert any('not found' in p for p in check_parameters(params))
    tiny = params.updated({'base_model': 'tiny', 'refiner_model': ''})
    assert check_parameters(tiny) == []
    assert any('base_model is empty' in p for p in check_parameters(
        tiny.updated({'base_model': ''})))


def test_test_hooks_are_not_user_parameters():
    user = {spec.name for spec in PARAMETERS}
    assert {spec.name for spec in TEST_HOOKS} & user == set()
    assert 'fault_oom_at_step' not in user
    for document in ('config/sdxl.yaml', 'README.md'):
        assert 'fault_oom_at_step' not in (ROOT / document).read_text(), document
    assert NodeParameters.defaults().engine_config().fault_oom_at_step == 0


def test_reload_only_for_model_settings():
    # The rule the node applies (NodeParameters.reloads_models) is the engine slot's.
    params = NodeParameters.defaults()
    assert params.reloads_models(params.updated({'refiner_model': ''}))
    assert params.reloads_models(params.updated({'device': 'cpu'}))
    assert params.reloads_models(params.updated({'fast_path': False}))
    assert params.reloads_models(params.updated({'fault_oom_at_step': 2}))
    assert not params.reloads_models(params.updated({'default_steps': 10, 'max_side': 1024}))
    assert not params.reloads_models(params.updated({'emphasis': 'none', 'lora_dir': '/x'}))


def test_reload_rule_covers_every_engine_setting_but_limits_emphasis_and_loras():
    config = EngineConfig()
    for name, value in (('base_model', 'other'), ('refiner_model', ''), ('model_dir', '/m'),
                        ('tokenizer_dir', '/t'), ('device', 'cpu'), ('dtype', 'float32'),
                        ('memory_mode', 'model_offload'), ('vae_tiling', True),
                        ('fast_path', False), ('fault_oom_at_step', 3)):
        assert needs_reload(config, replace(config, **{name: value})), name
    assert needs_reload(config, replace(config, acceleration=replace(
        config.acceleration, precision='fp8')))
    assert not needs_reload(config, replace(config, limits=Limits(max_steps=3),
                                            emphasis='none', lora_dir='/loras'))


def test_engine_config_and_limits():
    params = NodeParameters.defaults().updated({'min_side': 64, 'base_model': 'tiny'})
    config = params.engine_config()
    assert config.base_model == 'tiny' and config.limits.min_side == 64
    assert params.limits().max_steps == 150
    assert config.fast_path is True
    assert params.updated({'fast_path': False}).engine_config().fast_path is False


def test_config_file_has_every_parameter_with_a_comment():
    text = (ROOT / 'config' / 'sdxl.yaml').read_text()
    lines = text.splitlines()
    assert re.search(r'^/\*\*/sdxl:\s*$', text, re.MULTILINE)
    assert re.search(r'^  ros__parameters:\s*$', text, re.MULTILINE)
    for spec in PARAMETERS:
        # An unset array is shown as a commented example: YAML parameter files cannot hold an
        # empty array (ros2/rclcpp#1955).
        entry = rf'^    # {spec.name}: \[' if spec.default == () else rf'^    {spec.name}:'
        index = next((i for i, line in enumerate(lines) if re.match(entry, line)), None)
        assert index is not None, f'{spec.name} missing from config/sdxl.yaml'
        assert lines[index - 1].strip().startswith('#'), f'{spec.name} has no comment'


def test_config_file_values_are_the_defaults():
    yaml = pytest.importorskip('yaml', reason='PyYAML is not installed')
    values = yaml.safe_load((ROOT / 'config' / 'sdxl.yaml').read_text())
    values = values['/**/sdxl']['ros__parameters']
    for spec in PARAMETERS:
        if spec.default == ():
            assert spec.name not in values, spec.name  # unset: see the test above
            continue
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), spec.name


def test_fast_path_parameters_reach_the_engine_config():
    from sdxl_ros.engine.config import STANDARD_SIZES
    params = NodeParameters.defaults()
    accel = params.engine_config().acceleration
    assert accel.precision == 'fp16' and accel.prepare_sizes == STANDARD_SIZES
    assert accel.compile_cache_dir == ''
    changed = params.updated({'precision': 'fp8', 'prepare_sizes': '1152x896, 64x64',
                              'compile_cache_dir': '/tmp/cc'})
    accel = changed.engine_config().acceleration
    assert accel.precision == 'fp8' and accel.prepare_sizes == ((1152, 896), (64, 64))
    assert accel.compile_cache_dir == '/tmp/cc'
    assert params.updated({'prepare_sizes': ''}).engine_config().acceleration.prepare_sizes == ()
    for name in ('precision', 'prepare_sizes', 'compile_cache_dir'):
        assert params.reloads_models(params.updated({name: getattr(changed, name)}))


def test_bad_fast_path_parameters_are_refused_with_a_reason():
    params = NodeParameters.defaults()
    assert any('precision' in p for p in check_parameters(
        params.updated({'precision': 'int4'}), check_models=False))
    assert any('WIDTHxHEIGHT' in p for p in check_parameters(
        params.updated({'prepare_sizes': '1024x1024,big'}), check_models=False))
    assert any('multiple of 8' in p for p in check_parameters(
        params.updated({'prepare_sizes': '1020x1024'}), check_models=False))
    for bad, reason in (('cfg,turbo', "prepare_variants: variant 'turbo' is not cfg or nocfg"),
                        ('cfg:100', '77 per prompt chunk'), (' , ', 'prepare_variants is empty')):
        problems = check_parameters(params.updated({'prepare_variants': bad}),
                                    check_models=False)
        assert any(reason in p for p in problems), problems


def test_prepare_variants_reach_the_engine_config():
    params = NodeParameters.defaults()
    assert params.prepare_variants == 'cfg'  # today's behaviour: batch 2, one 77-token chunk
    assert params.engine_config().acceleration.prepare_variants == ((2, 77),)
    changed = params.updated({'prepare_variants': 'cfg, nocfg, cfg:154, nocfg:231'})
    assert check_parameters(changed, check_models=False) == []
    assert changed.engine_config().acceleration.prepare_variants == \
        ((2, 77), (1, 77), (2, 154), (1, 231))
    assert params.reloads_models(changed)
