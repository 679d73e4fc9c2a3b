# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The borders between the three layers, checked on the real import graph.

`sdxl_ros/engine/` never imports rclpy or a ROS message module; `sdxl_ros/ros/` and
`sdxl_ros/client/` never import torch (heavy imports happen only when the engine loads models);
no Python module lives outside the three layer folders. Inside the engine, the top level is
the torch-free room (what the ROS side may import) and the sub-packages are the torch rooms,
which import torch at their top, not inside functions.
"""

import ast
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / 'sdxl_ros'
LAYERS = ('engine', 'ros', 'client')
HEAVY = ('torch', 'diffusers', 'transformers')
# The engine's torch rooms: sub-packages of sdxl_ros/engine.
TORCH_ROOMS = ('conditioning', 'fast_path', 'generation', 'models', 'prompting')
# Function-local heavy imports that stay, each a feature check of a newer library.
LAZY_ON_PURPOSE = {('generation/placement.py', 'diffusers.hooks'),
                   ('fast_path/torch_internals.py', 'torch._dynamo.config'),
                   ('fast_path/torch_internals.py', 'torch._inductor.config')}
ROS_MODULE_PREFIXES = ('rclpy', 'rcl_interfaces', 'sensor_msgs', 'lifecycle_msgs',
                       'builtin_interfaces', 'std_msgs', 'diagnostic_msgs', 'sdxl_ros.action',
                       'sdxl_ros.srv', 'sdxl_ros.msg', 'rosidl')


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


def _top_level_engine_modules():
    """Return the dotted names of the engine's top-level (torch-free) modules."""
    return sorted(f'sdxl_ros.engine.{p.stem}' for p in (SOURCES / 'engine').glob('*.py')
                  if p.stem not in ('__init__', '__main__')) + ['sdxl_ros.engine']


def test_engine_rooms_are_the_expected_ones():
    rooms = sorted(p.name for p in (SOURCES / 'engine').iterdir()
                   if p.is_dir() and p.name != '__pycache__')
    assert rooms == sorted(TORCH_ROOMS)


def test_engine_top_level_imports_no_torch():
    modules = _top_level_engine_modules()
    loaded = _loaded_after_import(modules)
    assert 'sdxl_ros.engine.request' in loaded and 'sdxl_ros.engine.engine_slot' in loaded
    heavy = sorted(m for m in loaded if m.split('.')[0] in HEAVY)
    assert not heavy, f'the torch-free engine top level loaded {heavy[:5]}'


def _imported_names(path):
    """Yield (module name, whether inside a function) for every import statement of a file."""
    tree = ast.parse(path.read_text())
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(sub) for sub in ast.walk(node) if sub is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in inside
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, id(node) in inside


def test_torch_rooms_import_torch_at_the_top():
    lazy = set()
    for room in TORCH_ROOMS:
        for path in sorted((SOURCES / 'engine' / room).glob('*.py')):
            relative = path.relative_to(SOURCES / 'engine').as_posix()
            lazy.update((relative, name) for name, in_function in _imported_names(path)
                        if in_function and name.split('.')[0] in HEAVY)
    assert lazy == LAZY_ON_PURPOSE


def test_ros_side_imports_only_the_torch_free_engine_room():
    allowed = set(_top_level_engine_modules())
    used = set()
    for layer in ('ros', 'client'):
        for path in sorted((SOURCES / layer).rglob('*.py')):
            used.update(name for name, _inside in _imported_names(path)
                        if name.startswith('sdxl_ros.engine'))
    assert used and used <= allowed, sorted(used - allowed)
