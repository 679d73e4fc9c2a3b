# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Check the PyTorch a Python already has and pick the lock that suits it (scripts/install.sh).

`python3 scripts/torch_check.py --profile jetson --machine aarch64` runs with the Python the
project venv will be made from, installs nothing and prints `key=value` lines: `lock=` the
lock file, `torch_site=` the folder torch was imported from, `reason=` why that lock, and any
`note=` lines. Where no lock can work it prints one line saying what to fix on stderr and
exits with 1. The profiles that use a system torch (jetson, system) have two locks: one for
torch >= 2.6.0 and one for 2.3 to 2.5 (transformers 5 disables torch < 2.6.0); each lock's
tag line names its torch range.

torch is imported in a child process: a torch built for another numpy major prints pages to
stderr, and a broken one may crash; neither may reach the user as more than one line.
"""

import argparse
import json
from pathlib import Path
import re
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent

# The JetPack 6 builds and where they come from (README "Jetson AGX Orin" has the table).
JETPACK_FIX = (
    "install NVIDIA's PyTorch for your JetPack 6 into this Python, from "
    'https://developer.download.nvidia.com/compute/redist/jp/: v60dp/pytorch/ (6.0 DP, torch '
    '2.3), v60/pytorch/ (6.0, 2.4), v61/pytorch/ (6.1/6.2, 2.5), or torch 2.7/2.8 from the '
    'index https://pypi.jetson-ai-lab.io/jp6/cu126 (JetPack 6.1/6.2; README "Jetson AGX Orin")')
OTHER_FIX = 'install PyTorch >= 2.3 for this Python (https://pytorch.org/get-started/locally/)'

# Runs in the child: what torch and numpy this Python imports, as JSON on the last line.
PROBE = r"""
import importlib.metadata, json, sys
facts = {}
try:
    facts['dist_version'] = importlib.metadata.version('torch')
except importlib.metadata.PackageNotFoundError:
    facts['dist_version'] = None
try:
    import numpy
    facts['numpy'] = numpy.__version__
except Exception as error:
    facts['numpy'] = None
try:
    import torch
    facts['version'] = torch.__version__
    facts['file'] = torch.__file__
    facts['cuda'] = torch.version.cuda
    facts['cuda_available'] = bool(torch.cuda.is_available())
except Exception as error:
    facts['error'] = f'{type(error).__name__}: {error}'.splitlines()[0]
else:
    if facts['numpy'] is not None:
        try:
            torch.from_numpy(numpy.zeros(2)).numpy()
            facts['numpy_ok'] = True
        except Exception as error:
            facts['numpy_ok'] = False
            facts['numpy_error'] = f'{type(error).__name__}: {error}'.splitlines()[0]
print(json.dumps(facts))
"""


class Refusal(Exception):
    """No lock can work with this torch; the message says what to fix."""


def version_key(text):
    """
    Order PEP 440 versions as torch's are written (`2.3.0a0+40ec155e58.nv24.03`, `2.6.0rc1`).

    Pre-releases sort below their release, as transformers compares them (2.6.0rc1 < 2.6.0).
    Written here because the Python that holds JetPack's torch need not have `packaging`.
    """
    match = re.match(r'(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.post\d+)?(\.dev\d+)?(?:\+.*)?$',
                     text.strip())
    if not match:
        raise ValueError(f'not a version: {text!r}')
    release = tuple(int(part) for part in match.group(1).split('.'))
    release += (0,) * (3 - len(release))
    if match.group(2):
        phase = ('a', 'b', 'rc').index(match.group(2))
        return release, phase, int(match.group(3))
    if match.group(4):
        return release, -1, 0
    return release, 3, 0


def lock_tags(path):
    """Return the `key=value` tags of a lock's `# sdxl_ros-lock:` line."""
    for line in Path(path).read_text().splitlines():
        if line.startswith('# sdxl_ros-lock:'):
            return dict(item.split('=', 1) for item in line.split(':', 1)[1].split())
    return {}


def candidate_locks(locks_dir, profile):
    """Return the profile's locks that use a system torch, with their tags."""
    found = []
    for path in sorted(Path(locks_dir).glob(f'{profile}*.txt')):
        tags = lock_tags(path)
        if path.stem == profile or path.stem.startswith(profile + '-torch'):
            if tags.get('torch') == 'system' and 'torch_min' in tags:
                found.append((path, tags))
    return found


def lock_numpy(path):
    """Return the numpy version a lock pins, or None."""
    match = re.search(r'^numpy==(\S+)', Path(path).read_text(), re.MULTILINE)
    return match.group(1) if match else None


def probe(python):
    """Import torch in `python` (a child process) and return what it found."""
    try:
        done = subprocess.run([python, '-c', PROBE], capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired:
        raise Refusal(f'{python} took over 10 minutes to import torch')
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        how = (f'signal {-done.returncode}' if done.returncode < 0
               else f'exit {done.returncode}')
        last = (done.stderr.strip().splitlines() or ['no message'])[-1]
        raise Refusal(f'{python} crashed importing torch ({how}: {last})')
    return json.loads(lines[-1])


def choose(facts, locks, machine, python='python3'):
    """Return (lock path, reason, notes) for the torch `facts` describe, or raise Refusal."""
    jetson = machine == 'aarch64'
    fix = JETPACK_FIX if jetson else OTHER_FIX
    if facts.get('version') is None:
        why = facts.get('error') or 'no torch'
        raise Refusal(f'{python} cannot import torch ({why}); sdxl_ros uses the installed '
                      f'PyTorch and never installs one: {fix}')
    version = facts['dist_version'] or facts['version']
    notes = []
    if not facts.get('cuda'):
        if jetson:
            raise Refusal(
                f"torch {version} in {python} is a CPU-only build (PyPI's aarch64 wheel?) "
                f"and cannot use the Jetson's GPU; {JETPACK_FIX}")
        notes.append(f'torch {version} is a CPU-only build: the engine runs on the CPU')
    elif not facts.get('cuda_available'):
        notes.append(f'torch {version} is a CUDA {facts["cuda"]} build but sees no GPU '
                     '(in a container: docker run --runtime nvidia); the engine runs on the '
                     'CPU until it does')
    key = version_key(version)
    chosen = [(path, tags) for path, tags in locks
              if version_key(tags['torch_min']) <= key
              and ('torch_below' not in tags or key < version_key(tags['torch_below']))]
    if not chosen:
        oldest = min((tags['torch_min'] for _path, tags in locks), key=version_key,
                     default='2.3')
        raise Refusal(f'torch {version} in {python} is older than sdxl_ros supports '
                      f'(torch >= {oldest.split("a")[0]}); {fix}')
    path, tags = chosen[0]
    numpy_pin = lock_numpy(path)
    numpy_note = _numpy_check(facts, version, numpy_pin, path)
    if numpy_note:
        notes.append(numpy_note)
    span = (f'torch {tags["torch_min"].split("a")[0]} to below {tags["torch_below"]}'
            if 'torch_below' in tags else f'torch >= {tags["torch_min"]}')
    return path, f'torch {version} (CUDA {facts.get("cuda") or "none"}) from ' \
        f'{Path(facts["file"]).parent.parent}: the {path.stem} lock ({span})', notes


def _numpy_check(facts, version, numpy_pin, lock_path):
    """Refuse a torch that cannot work with the lock's numpy; return a note or None."""
    if facts.get('numpy') is None or facts.get('numpy_ok', True) or numpy_pin is None:
        return None
    present, pinned = facts['numpy'].split('.')[0], numpy_pin.split('.')[0]
    if present != pinned:
        # Built for the lock's major: the venv's numpy (the lock's) comes first and serves it.
        return (f'torch {version} cannot use numpy {facts["numpy"]} here (built for numpy '
                f"{pinned}.x); the venv uses the lock's numpy {numpy_pin}")
    raise Refusal(
        f'torch {version} was built for another numpy major than {facts["numpy"]} '
        f'({facts.get("numpy_error")}), and the {lock_path.stem} lock holds numpy '
        f"{numpy_pin}; install a torch built for numpy {pinned}.x (JetPack's are)")


def main(argv=None):
    """Print the chosen lock and why, or the reason none suits; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--profile', required=True)
    parser.add_argument('--machine', required=True)
    parser.add_argument('--locks', default=str(ROOT / 'scripts' / 'locks'))
    args = parser.parse_args(argv)
    locks = candidate_locks(args.locks, args.profile)
    if not locks:
        print(f'sdxl_ros: profile {args.profile!r} has no lock for a system torch',
              file=sys.stderr)
        return 1
    try:
        facts = probe(sys.executable)
        path, reason, notes = choose(facts, locks, args.machine, sys.executable)
    except Refusal as refusal:
        print(f'sdxl_ros: {refusal}', file=sys.stderr)
        return 1
    print(f'lock={path}')
    print(f'torch_site={Path(facts["file"]).parent.parent}')
    print(f'reason={reason}')
    for note in notes:
        print(f'note={note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
