# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The borders between the three layers, checked on the real import graph.

`sdxl_ros/engine/` never imports rclpy or a ROS message module; `sdxl_ros/ros/` and
`sdxl_ros/client/` never import torch (heavy imports happen only when the engine loads models);
no Python module lives outside the three layer folders.
"""

from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / 'sdxl_ros'
LAYERS = ('engine', 'ros', 'client')
ROS_MODULE_PREFIXES = ('rclpy', 'rcl_interfaces', 'sensor_msgs', 'lifecycle_msgs',
                       'builtin_interfaces', 'std_msgs', 'diagnostic_msgs', 'sdxl_ros.action',
                       'sdxl_ros.srv', 'rosidl')


def _modules(layer):
    """Return the dotted names of every module of a layer folder."""
    folder = SOURCES / layer
    names = []
    for path in sorted(folder.rglob('*.py')):
        parts = path.relative_to(SOURCES.parent).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        if parts[-1] != '__main__':
            names.append('.'.join(parts))
    return names


def _loaded_after_import(modules):
    """Import `modules` in a fresh interpreter; return every module name then loaded."""
    code = ('import importlib, sys\n'
            f'for name in {modules!r}:\n'
            '    importlib.import_module(name)\n'
            'print("\\n".join(sorted(sys.modules)))\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_every_module_lives_in_a_layer_folder():
    stray = [str(p.relative_to(ROOT)) for p in SOURCES.glob('*.py')]
    folders = sorted(p.name for p in SOURCES.iterdir()
                     if p.is_dir() and p.name != '__pycache__')
    assert not stray, f'modules outside the layer folders: {stray}'
    assert folders == sorted(LAYERS)


def test_engine_imports_no_ros():
    modules = _modules('engine')
    loaded = _loaded_after_import(modules)
    assert set(modules) <= loaded and len(modules) > 15
    ros = sorted(m for m in loaded if m.startswith(ROS_MODULE_PREFIXES))
    assert not ros, f'the engine layer loaded ROS modules: {ros}'


@pytest.mark.parametrize('layer', ['ros', 'client'])
def test_ros_side_imports_no_torch(layer):
    pytest.importorskip('rclpy')
    modules = _modules(layer)
    loaded = _loaded_after_import(modules)
    assert set(modules) <= loaded
    heavy = sorted(m for m in loaded
                   if m.split('.')[0] in ('torch', 'diffusers', 'transformers'))
    assert not heavy, f'the {layer} layer loaded {heavy[:5]}'
