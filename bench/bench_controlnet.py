# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Per-image cost of ControlNet units: no unit, one unit, two units, on the same engine and seed.

Each configuration runs `--repeats` images after one warm-up; the median seconds per image
and the ratio to no unit are printed and written as JSON. The units are the preset ControlNet
(`--controlnet`, default `tiny`: built from the tiny UNet, so on the tiny preset its cost per
call is about one tiny UNet encoder) fed a synthetic 16UC1 depth frame (depth_metric).

  python3 bench/bench_controlnet.py --preset tiny --device cpu --size 1024 --steps 4
  python3 bench/bench_controlnet.py --preset sdxl-random --device cuda --controlnet NAME
      --controlnet-dir /data/controlnets --out bench/results/<card>_<date>_controlnet.json
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)


def depth_frame(size):
    """Return a synthetic uint16 depth frame (mm): a near box before a far wall, with holes."""
    import numpy as np
    depth = np.full((size, size), 3000, np.uint16)
    depth[size // 4:size // 2, size // 3:2 * size // 3] = 800
    depth[:size // 64 + 1] = 0
    return depth


def run(args):
    """Time the configurations; return the result dictionary."""
    from sdxl_ros.engine import EngineConfig, SdxlEngine
    from sdxl_ros.engine.control_request import ControlUnitRequest
    from sdxl_ros.engine.request import GenerationRequest, Limits
    engine = SdxlEngine(EngineConfig(
        base_model=args.preset, refiner_model=args.preset, device=args.device,
        controlnet_dir=args.controlnet_dir, limits=Limits(min_side=64, max_side=4096)))
    engine.load()
    unit = ControlUnitRequest(model=args.controlnet, image=depth_frame(args.size),
                              module='depth_metric')
    results = {'preset': args.preset, 'device': args.device, 'size': args.size,
               'steps': args.steps, 'controlnet': args.controlnet, 'configs': {}}
    for units in (0, 1, 2):
        request = GenerationRequest(
            prompt='a kitchen, morning light', width=args.size, height=args.size,
            steps=args.steps, seed=1, scheduler='Euler', control=(unit,) * units)
        engine.generate(request)  # warm-up (loads the ControlNet once)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            engine.generate(request)
            times.append(time.perf_counter() - start)
        results['configs'][units] = {'median_sec': statistics.median(times), 'times': times}
    base = results['configs'][0]['median_sec']
    for units, entry in results['configs'].items():
        entry['ratio'] = entry['median_sec'] / base
        print(f'{units} unit(s): {entry["median_sec"]:.2f} s per image, {entry["ratio"]:.2f}x')
    return results


def main():
    """Parse the arguments, run, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--steps', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--controlnet', default='tiny')
    parser.add_argument('--controlnet-dir', default='')
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    results = run(args)
    if args.out:
        with open(args.out, 'w') as stream:
            json.dump(results, stream, indent=2)


if __name__ == '__main__':
    main()
