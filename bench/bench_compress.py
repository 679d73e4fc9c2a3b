#!/usr/bin/env python3
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
What ~/image/compressed costs: Pillow coding of one 1024x1024 rgb8 image, as the node does it.

`python bench/bench_compress.py [--side 1024] [--repeat 7]` (needs only numpy, Pillow and the
sensor_msgs Python package: source scripts/env.sh). Two pictures: a smooth one with grain (what
SDXL images look like to a coder) and the tiny preset's colour noise (the worst case).
Prints the median seconds per image and the bytes per codec.
"""

import argparse
import statistics
import time

import numpy as np
from sdxl_ros.ros.compressed_image import encode


def pictures(side):
    """Return {name: uint8 side x side x 3 image}."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:side, 0:side] / side
    smooth = np.stack([np.sin(6 * rows) * 100 + 120, cols * 200 + 30,
                       np.cos(4 * (rows + cols)) * 90 + 120], axis=-1)
    grain = rng.normal(0, 4, (side, side))[..., None]
    return {'smooth+grain': np.clip(smooth + grain, 0, 255).astype(np.uint8),
            'colour noise': rng.integers(0, 256, (side, side, 3), dtype=np.uint8)}


def main():
    """Time each codec on each picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--side', type=int, default=1024)
    parser.add_argument('--repeat', type=int, default=7)
    args = parser.parse_args()
    print(f'{args.side}x{args.side} rgb8 = {3 * args.side ** 2} bytes raw')
    for name, image in pictures(args.side).items():
        for codec, quality in (('png', 95), ('jpeg', 95), ('jpeg', 80)):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                data = encode(image, codec, quality)
                times.append(time.perf_counter() - start)
            label = codec if codec == 'png' else f'{codec} q{quality}'
            print(f'{name:13s} {label:8s} {statistics.median(times) * 1000:7.1f} ms '
                  f'{len(data):>9d} bytes')


if __name__ == '__main__':
    main()
