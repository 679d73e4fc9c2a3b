# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
scripts/torch_check.py (run by scripts/install.sh) against the torch builds a Jetson may have.

Each case runs the real script in a clean venv (no packages) whose only torch and numpy are
small stand-ins written here: they carry the version, CUDA build and numpy behaviour of the
build named, which is all the check reads. The expected lock follows from the tag lines of
scripts/locks/ (transformers 5 refuses torch below 2.6.0, pre-releases included).
"""

from pathlib import Path
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / 'scripts' / 'torch_check.py'

FAKE_TORCH = """
__version__ = {version!r}
class version:
    cuda = {cuda!r}
class cuda:
    @staticmethod
    def is_available():
        return {available!r}
class _Tensor:
    def numpy(self):
        return None
def from_numpy(array):
    if {numpy_broken!r}:
        raise RuntimeError('Numpy is not available')
    return _Tensor()
"""


@pytest.fixture(scope='module')
def clean_python(tmp_path_factory):
    """Make a venv without torch or numpy: the stand-ins below are all it imports."""
    folder = tmp_path_factory.mktemp('clean-venv')
    venv.create(folder, with_pip=False)
    return str(folder / 'bin' / 'python')


def run_check(python, tmp_path, profile='jetson', machine='aarch64', version=None,
              cuda='12.6', available=True, numpy='1.26.4', numpy_broken=False):
    """Run torch_check.py with a stand-in torch `version` (None: no torch at all)."""
    site = tmp_path / 'site'
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir()
    if version is not None:
        (site / 'torch').mkdir()
        (site / 'torch' / '__init__.py').write_text(FAKE_TORCH.format(
            version=version, cuda=cuda, available=available, numpy_broken=numpy_broken))
        dist = site / f'torch-{version.split("+")[0]}.dist-info'
        dist.mkdir()
        (dist / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: torch\nVersion: {version}\n')
    if numpy is not None:
        (site / 'numpy').mkdir()
        (site / 'numpy' / '__init__.py').write_text(
            f'__version__ = {numpy!r}\ndef zeros(n):\n    return [0.0] * n\n')
    done = subprocess.run(
        [python, str(CHECK), '--profile', profile, '--machine', machine],
        capture_output=True, text=True, timeout=120, env={'PYTHONPATH': str(site)})
    facts = dict(line.split('=', 1) for line in done.stdout.splitlines())
    return done, facts


@pytest.mark.parametrize('version,lock', [
    ('2.3.0a0+40ec155e58.nv24.03', 'jetson-torch2.3-2.5'),   # JetPack 6.0 DP
    ('2.4.0a0+07cecf4168.nv24.05', 'jetson-torch2.3-2.5'),   # JetPack 6.0
    ('2.5.0a0+872d972e41.nv24.08', 'jetson-torch2.3-2.5'),   # JetPack 6.1
    ('2.6.0rc1', 'jetson-torch2.3-2.5'),                      # jetson-ai-lab: below 2.6.0
    ('2.6.0', 'jetson'),
    ('2.8.0', 'jetson'),                                      # jetson-ai-lab, JetPack 6.2
])
def test_each_jetpack_torch_gets_the_lock_for_it(clean_python, tmp_path, version, lock):
    """The lock whose torch range holds the torch found; the reason names both."""
    done, facts = run_check(clean_python, tmp_path, version=version)
    assert done.returncode == 0, done.stderr
    assert Path(facts['lock']) == ROOT / 'scripts' / 'locks' / f'{lock}.txt'
    assert facts['reason'].startswith(f'torch {version} (CUDA 12.6) from ')
    assert f': the {lock} lock (' in facts['reason']
    assert facts['torch_site'] == str(tmp_path / 'site')
    assert 'note' not in facts


def test_the_system_profile_picks_among_its_own_locks(clean_python, tmp_path):
    """Give PyPI's torch 2.3.1 on x86_64 (CI) the system-torch2.3-2.5 lock."""
    done, facts = run_check(clean_python, tmp_path, profile='system', machine='x86_64',
                            version='2.3.1+cu121', cuda='12.1', available=False)
    assert done.returncode == 0, done.stderr
    assert Path(facts['lock']).name == 'system-torch2.3-2.5.txt'
    assert facts['note'].startswith('torch 2.3.1+cu121 is a CUDA 12.1 build but sees no GPU')


def _refusal(done):
    """Return the one stderr line of a refusal (asserting there is exactly one)."""
    assert done.returncode == 1
    assert done.stdout == ''
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith('sdxl_ros: ')
    return lines[0]


def test_no_torch_is_refused_naming_the_wheels(clean_python, tmp_path):
    line = _refusal(run_check(clean_python, tmp_path, version=None)[0])
    assert 'cannot import torch (ModuleNotFoundError' in line
    assert 'v60dp/pytorch/' in line and 'pypi.jetson-ai-lab.io/jp6/cu126' in line


def test_a_torch_older_than_2_3_is_refused(clean_python, tmp_path):
    line = _refusal(run_check(clean_python, tmp_path, version='2.2.0')[0])
    assert 'torch 2.2.0 in ' in line and 'older than sdxl_ros supports (torch >= 2.3.0)' in line


def test_a_cpu_only_torch_on_a_jetson_is_refused(clean_python, tmp_path):
    """Refuse PyPI's aarch64 torch (no CUDA): on a Jetson that is the wrong wheel."""
    line = _refusal(run_check(clean_python, tmp_path, version='2.6.0', cuda=None)[0])
    assert 'torch 2.6.0 in ' in line and 'is a CPU-only build' in line
    assert 'v61/pytorch/' in line


def test_a_cpu_only_torch_elsewhere_is_noted(clean_python, tmp_path):
    done, facts = run_check(clean_python, tmp_path, profile='system', machine='x86_64',
                            version='2.6.0+cpu', cuda=None)
    assert done.returncode == 0, done.stderr
    assert facts['note'] == 'torch 2.6.0+cpu is a CPU-only build: the engine runs on the CPU'


def test_a_torch_that_cannot_use_the_locks_numpy_major_is_refused(clean_python, tmp_path):
    """Refuse a torch that cannot use numpy 1.26 (the lock's major): built for numpy 2."""
    line = _refusal(run_check(clean_python, tmp_path, version='2.8.0', numpy='1.26.4',
                              numpy_broken=True)[0])
    assert 'torch 2.8.0 was built for another numpy major than 1.26.4' in line
    assert 'the jetson lock holds numpy 1.26.4' in line


def test_a_numpy_1_torch_beside_numpy_2_gets_the_locks_numpy(clean_python, tmp_path):
    """Note that the venv's numpy 1.26 serves JetPack's torch where numpy 2 is present."""
    done, facts = run_check(clean_python, tmp_path, version='2.5.0a0+872d972e41.nv24.08',
                            numpy='2.1.0', numpy_broken=True)
    assert done.returncode == 0, done.stderr
    assert facts['note'] == ('torch 2.5.0a0+872d972e41.nv24.08 cannot use numpy 2.1.0 here '
                             "(built for numpy 1.x); the venv uses the lock's numpy 1.26.4")


def test_install_refuses_before_installing_anything(clean_python, tmp_path):
    """install.sh stops at the check: one line, no venv, nothing written to the cache."""
    repo = tmp_path / 'repo'
    shutil.copytree(ROOT / 'scripts', repo / 'scripts')
    site = tmp_path / 'site'
    run_check(clean_python, tmp_path, version='2.6.0', cuda=None)   # writes the stand-ins
    cache = tmp_path / 'cache'
    done = subprocess.run(
        ['bash', str(repo / 'scripts' / 'install.sh')], capture_output=True, text=True,
        timeout=120, env={'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path),
                          'XDG_CACHE_HOME': str(cache), 'PYTHONPATH': str(site),
                          'SDXL_ROS_PROFILE': 'system', 'SDXL_ROS_MACHINE': 'aarch64',
                          'SDXL_ROS_PYTHON': clean_python, 'ROS_DISTRO': 'humble'})
    line = _refusal(done)
    assert 'is a CPU-only build' in line
    assert not cache.exists()
    assert not (repo / '.venv-system').exists()
    assert not (repo / 'log').exists()


def test_version_order_puts_pre_releases_below_their_release():
    """PEP 440 order as transformers applies it, for the forms torch versions take."""
    sys.path.insert(0, str(ROOT / 'scripts'))
    try:
        from torch_check import version_key
    finally:
        sys.path.pop(0)
    ordered = ['2.2.9', '2.3.0.dev20240101', '2.3.0a0+40ec155e58.nv24.03', '2.3.0', '2.3.1',
               '2.6.0rc1', '2.6', '2.6.1', '2.10.0']
    keys = [version_key(text) for text in ordered]
    assert keys == sorted(keys)
    assert version_key('2.6') == version_key('2.6.0')
