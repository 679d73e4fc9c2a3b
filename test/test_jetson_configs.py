# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""config/jetson_orin_32gb.yaml and config/jetson_orin_64gb.yaml are valid parameter files."""

from pathlib import Path

import pytest

from sdxl_ros.ros.node_parameters import check_parameters, NodeParameters, PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / 'config' / 'jetson_orin_32gb.yaml', ROOT / 'config' / 'jetson_orin_64gb.yaml']
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
    names = [name for name in values if name != 'device']
    node = start_node(params_files=[path])
    request = GetParameters.Request(names=names)
    answer = ros_client.call(GetParameters, f'{node.fqn}/get_parameters', request).values
    got = {}
    for name, value in zip(names, answer):
        kind = type(values[name])
        got[name] = {bool: value.bool_value, int: value.integer_value,
                     str: value.string_value, float: value.double_value}[kind]
    assert got == {name: values[name] for name in names}
