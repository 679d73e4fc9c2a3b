# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""ROS 2 style linters run as tests: flake8, pep257, copyright headers, package.xml, vermin."""

from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_DIRS = ['sdxl_ros', 'test', 'launch', 'bench', 'scripts']
EXECUTABLES = ['scripts/sdxl_node', 'scripts/sdxl_generate']
HEADER_SUFFIXES = {'.py', '.sh'}
SKIP_DIRS = {'__pycache__', 'results'}

pytestmark = pytest.mark.linter


def _existing(paths):
    return [str(ROOT / p) for p in paths if (ROOT / p).exists()]


def _tracked_sources():
    """Yield the project's own source files that must carry a licence header."""
    for name in PYTHON_DIRS:
        base = ROOT / name
        if not base.exists():
            continue
        for path in sorted(base.rglob('*')):
            if path.is_file() and not SKIP_DIRS.intersection(path.parts) and (
                    path.suffix in HEADER_SUFFIXES or str(path.relative_to(ROOT)) in EXECUTABLES):
                yield path
    yield from (ROOT / '.ci').glob('*')


def test_flake8():
    """Code follows flake8 with the ament configuration (99 columns, single quotes)."""
    ament_flake8 = pytest.importorskip('ament_flake8.main')
    rc, errors = ament_flake8.main_with_errors(
        argv=_existing(PYTHON_DIRS) + _existing(EXECUTABLES))
    assert rc == 0, f'{len(errors)} flake8 errors:\n' + '\n'.join(errors)


def test_pep257():
    """Docstrings follow pep257 as ament checks them."""
    ament_pep257 = pytest.importorskip('ament_pep257.main')
    rc = ament_pep257.main(argv=_existing(PYTHON_DIRS))
    assert rc == 0, 'pep257 found problems; see the output above'


def test_copyright_headers():
    """Every source file starts with the project's copyright and licence lines."""
    missing = []
    for path in _tracked_sources():
        head = path.read_text(errors='replace').splitlines()[:6]
        text = '\n'.join(head)
        if 'Copyright' not in text or 'Apache License, Version 2.0' not in text:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f'files without a copyright/licence header: {missing}'


def test_package_xml_is_valid_format_3():
    """package.xml parses as format 3 and names the dependencies the code uses."""
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3
    assert package.name == 'sdxl_ros'
    assert package.get_build_type() == 'ament_cmake'
    runtime = {d.name for d in package.exec_depends + package.build_export_depends}
    for needed in ('rclpy', 'rosidl_default_runtime', 'lifecycle_msgs', 'python3-numpy',
                   'python3-torch'):
        assert needed in runtime, f'package.xml lacks exec_depend {needed}'
    assert 'sensor_msgs' in {d.name for d in package.build_depends}
    assert 'python3-pytest' in {d.name for d in package.test_depends}
    assert 'rosidl_interface_packages' in {g.name for g in package.member_of_groups}


def test_sources_run_on_python_3_10():
    """Nothing needs a Python newer than 3.10 (JetPack 6, Humble), syntax or stdlib (vermin)."""
    vermin = shutil.which('vermin', path=str(Path(sys.executable).parent)) or shutil.which(
        'vermin')
    if vermin is None:
        pytest.skip('vermin is not installed (it is in every lock of scripts/locks/)')
    result = subprocess.run(
        [vermin, '--target=3.10-', '--no-tips', '--violations', '--eval-annotations',
         *_existing(PYTHON_DIRS)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        'vermin found code that needs a Python newer than 3.10:\n' + result.stdout
        + result.stderr)
