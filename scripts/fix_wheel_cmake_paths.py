#!/usr/bin/env python3
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Point the ROS wheels' CMake exports at this venv's Python and numpy headers.

The PyPI ROS wheels were built in a manylinux image and their
``*__rosidl_generator_pyExport.cmake`` files name include directories under
``/opt/python/cp3XX-cp3XX`` that exist nowhere else, which makes CMake's generate step
fail. Rewriting those two paths is enough for rosidl to build our interfaces.
"""

import os
from pathlib import Path
import re
import sys
import sysconfig

import numpy


def main() -> int:
    """Rewrite the include paths in every pyExport file of the venv; idempotent."""
    prefix = Path(sys.prefix)
    python_include = sysconfig.get_paths()['include']
    numpy_include = os.path.realpath(numpy.get_include())
    numpy_pattern = re.compile(r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/'
                               r'numpy/(?:_core|core)/include')
    python_pattern = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
    changed = 0
    for path in prefix.glob('share/*/cmake/*rosidl_generator_pyExport.cmake'):
        text = path.read_text()
        fixed = python_pattern.sub(python_include, numpy_pattern.sub(numpy_include, text))
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    print(f'fixed include paths in {changed} CMake export files')
    return 0


if __name__ == '__main__':
    sys.exit(main())
