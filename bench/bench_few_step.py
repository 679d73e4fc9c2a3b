# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Few-step against classic settings: per-image time and UNet calls, as ratios to 25 steps CFG 7.

Runs the engine (base only, refiner off, as few-step models are used) with:
  1 step CFG 1 (Euler a, as SDXL-Turbo), 4 and 8 steps CFG 1 (Euler + SGM Uniform, as
  SDXL-Lightning), and 25 steps CFG 7 (DPM++ 2M, the classic setting);
counts the base UNet's forward calls and the rows they process (CFG doubles the batch) with a
forward pre-hook, times each image (--repeats after one warm-up image: the median, and the
best, which a machine shared with other work distorts least) and prints the ratios. On the
tiny preset on a CPU the UNet is a smaller part of an image than on real weights (text
encoders, VAE and Python overhead weigh more); the UNet-row ratio is what carries over.

  python3 bench/bench_few_step.py --out bench/results/cpu_vm_<date>_few_step.json
  python3 bench/bench_few_step.py --preset sdxl-random --device cuda --size 1024 --out ...
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

PROMPT = 'a photo of a robot reading a book in a library, warm light'
#: (label, sampler, schedule type, steps, guidance scale); the last is the reference.
CASES = (
    ('1 step CFG 1', 'Euler a', '', 1, 1.0),
    ('4 steps CFG 1', 'Euler', 'SGM Uniform', 4, 1.0),
    ('8 steps CFG 1', 'Euler', 'SGM Uniform', 8, 1.0),
    ('25 steps CFG 7', 'DPM++ 2M', 'Karras', 25, 7.0),
)


class UnetCounter:
    """Count forward calls and processed rows (batch sizes summed) of a UNet."""

    def __init__(self, unet):
        """Install a forward pre-hook."""
        self.calls = self.rows = 0
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        sample = args[0] if args else kwargs['sample']
        self.calls += 1
        self.rows += int(sample.shape[0])

    def reset(self):
        """Start counting from zero."""
        self.calls = self.rows = 0


def measure(engine, counter, case, args):
    """Return the figures of one case: median seconds per image, UNet calls and rows."""
    from sdxl_ros.engine.request import GenerationRequest
    label, sampler, schedule_type, steps, guidance = case
    request = GenerationRequest(prompt=PROMPT, width=args.size, height=args.size, steps=steps,
                                guidance_scale=guidance, refiner_switch=1.0, seed=1,
                                scheduler=sampler, schedule_type=schedule_type)
    engine.generate(request)  # warm-up: first-call allocations and caches
    times = []
    for _ in range(args.repeats):
        counter.reset()
        start = time.perf_counter()
        engine.generate(request)
        times.append(time.perf_counter() - start)
    return {'case': label, 'sampler': sampler, 'schedule_type': schedule_type or 'Automatic',
            'steps': steps, 'guidance_scale': guidance,
            'seconds_per_image': statistics.median(times), 'best_seconds': min(times),
            'all_seconds': times,
            'unet_calls': counter.calls, 'unet_rows': counter.rows}


def main(argv=None):
    """Run every case, print a table with ratios to the reference, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default='')
    args = parser.parse_args(argv)
    from sdxl_ros.engine import EngineConfig, SdxlEngine
    from sdxl_ros.engine.request import Limits
    import torch
    engine = SdxlEngine(EngineConfig(base_model=args.preset, refiner_model='',
                                     device=args.device, limits=Limits(min_side=64)))
    engine.load()
    counter = UnetCounter(engine.base_pipeline.unet)
    rows = [measure(engine, counter, case, args) for case in CASES]
    reference = rows[-1]
    for row in rows:
        row['time_ratio_to_reference'] = row['seconds_per_image'] / reference['seconds_per_image']
        row['best_time_ratio_to_reference'] = row['best_seconds'] / reference['best_seconds']
        row['unet_rows_ratio_to_reference'] = row['unet_rows'] / reference['unet_rows']
    print(f'{"case":<16}{"median s":>10}{"best s":>9}{"calls":>7}{"rows":>6}{"median x":>10}'
          f'{"best x":>8}{"rows x":>8}')
    for row in rows:
        print(f'{row["case"]:<16}{row["seconds_per_image"]:>10.3f}{row["best_seconds"]:>9.3f}'
              f'{row["unet_calls"]:>7}{row["unet_rows"]:>6}'
              f'{row["time_ratio_to_reference"]:>10.3f}{row["best_time_ratio_to_reference"]:>8.3f}'
              f'{row["unet_rows_ratio_to_reference"]:>8.3f}')
    report = {'machine': platform.node(), 'cpus': os.cpu_count(),
              'load_average': os.getloadavg(),
              'python': platform.python_version(), 'torch': torch.__version__,
              'settings': vars(args), 'command': ' '.join(['python3'] + sys.argv),
              'cases': rows}
    if args.out:
        with open(args.out, 'w') as stream:
            json.dump(report, stream, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
