# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Command line: generate PNGs (with A1111 infotext) without ROS.

Example: python -m sdxl_ros.engine --preset tiny --prompt "a robot" --seed 7 --steps 4
--out a.png
"""

import argparse
from dataclasses import replace
import sys

import sdxl_ros.engine as engine_package
from sdxl_ros.engine import EngineConfig, EngineError, PRESETS
from sdxl_ros.engine.png_io import output_paths, save_png
from sdxl_ros.engine.request import GenerationRequest, Limits, RequestError
from sdxl_ros.engine.schedulers import SCHEDULER_NAMES

_DEFAULTS = GenerationRequest(prompt='')


def build_parser():
    """Return the argument parser (separate so tests and docs can inspect it)."""
    parser = argparse.ArgumentParser(
        prog='python -m sdxl_ros.engine',
        description='Generate images with SDXL base + refiner (no ROS needed).')
    models = parser.add_argument_group('models')
    models.add_argument('--preset', choices=sorted(PRESETS),
                        help='use a preset for base and refiner (no weight files)')
    models.add_argument('--base', default='', help='base model: file, folder or preset')
    models.add_argument('--refiner', default=None,
                        help="refiner model: file, folder or preset ('' = none)")
    models.add_argument('--model-dir', default='', help='folder relative model paths start in')
    models.add_argument('--tokenizer-dir', default='', help='CLIP tokenizer folder')
    models.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
    models.add_argument('--dtype', default='auto',
                        choices=('auto', 'float16', 'bfloat16', 'float32'))
    models.add_argument('--memory-mode', default='resident',
                        choices=('resident', 'model_offload', 'sequential_offload'))
    models.add_argument('--vae-tiling', action='store_true')
    models.add_argument('--no-fast-path', dest='fast_path', action='store_false',
                        help='on CUDA: plain diffusers, no compiling or CUDA graphs at load')
    gen = parser.add_argument_group('generation')
    gen.add_argument('--prompt', required=True)
    gen.add_argument('--negative-prompt', default='')
    gen.add_argument('--width', type=int, default=None,
                     help='default 1024, or 64 with --preset tiny')
    gen.add_argument('--height', type=int, default=None)
    gen.add_argument('--steps', type=int, default=_DEFAULTS.steps)
    gen.add_argument('--guidance-scale', '--guidance', dest='guidance_scale', type=float,
                     default=_DEFAULTS.guidance_scale)
    gen.add_argument('--refiner-switch', type=float, default=_DEFAULTS.refiner_switch)
    gen.add_argument('--seed', type=int, default=-1)
    gen.add_argument('--scheduler', default=_DEFAULTS.scheduler,
                     help='one of: ' + ', '.join(SCHEDULER_NAMES))
    gen.add_argument('--num-images', type=int, default=1)
    parser.add_argument('--out', default='sdxl.png',
                        help='output PNG; with several images, -1, -2 ... are appended')
    return parser


def main(argv=None):
    """Parse arguments, load, generate, save; return a process exit code."""
    args = build_parser().parse_args(argv)
    tiny = args.preset == 'tiny' or args.base == 'tiny'
    base = args.base or args.preset
    if not base:
        print('error: give --preset or --base', file=sys.stderr)
        return 2
    refiner = args.refiner if args.refiner is not None else (args.preset or '')
    default_side = 64 if tiny else _DEFAULTS.width
    limits = Limits(min_side=64) if tiny else Limits()
    config = EngineConfig(base_model=base, refiner_model=refiner, model_dir=args.model_dir,
                          tokenizer_dir=args.tokenizer_dir, device=args.device, dtype=args.dtype,
                          memory_mode=args.memory_mode, vae_tiling=args.vae_tiling,
                          fast_path=args.fast_path, limits=limits)
    request = replace(_DEFAULTS, prompt=args.prompt, negative_prompt=args.negative_prompt,
                      width=args.width or default_side, height=args.height or default_side,
                      steps=args.steps, guidance_scale=args.guidance_scale,
                      refiner_switch=args.refiner_switch, seed=args.seed,
                      scheduler=args.scheduler, num_images=args.num_images)
    try:
        engine = engine_package.SdxlEngine(config)   # imports torch; checks the libraries
        engine.load()
        result = engine.generate(request, on_progress=_print_progress)
    except (EngineError, RequestError) as error:
        print(f'\nerror: {error}', file=sys.stderr)
        return 1
    print(file=sys.stderr)
    for path, image, infotext in zip(output_paths(args.out, len(result.images)),
                                     result.images, result.infotexts):
        save_png(path, image, infotext)
        print(f'{path}  seed {infotext.rsplit("Seed: ", 1)[-1].split(",")[0]}')
    print(f'{len(result.images)} image(s) in {result.elapsed_sec:.1f} s', file=sys.stderr)
    return 0


def _print_progress(progress):
    """One status line on stderr, rewritten in place."""
    print(f'\r{progress.stage:8s} image {progress.image_index + 1}/{progress.num_images} '
          f'step {progress.step}/{progress.total_steps}  eta {progress.eta_sec:5.1f} s',
          end='', file=sys.stderr, flush=True)


if __name__ == '__main__':
    sys.exit(main())
