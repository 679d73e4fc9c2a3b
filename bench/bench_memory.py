# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Unified-memory figures: load peak against the checkpoint bytes, and each memory mode's peaks.

On a Jetson the CPU and GPU share one RAM, so what matters is host RSS + device memory at the
same instant. Every measurement runs in a fresh child process (clean allocator and page
state) with a sampling thread that reads VmRSS/RssAnon/RssFile from /proc/self/status and
the device use (total - free from cudaMemGetInfo, which counts the CUDA context too, and
PyTorch's reserved bytes) every 2 ms; the peak of their sum is reported, and also VmHWM and
max_memory_reserved (separate peaks; their sum is an upper bound).

Phases (`--phases`, comma-separated):
  make   write the sdxl-random preset (or --preset) as SGM single files + tokenizers
  load   load base + refiner from those files onto the device: ours (engine, resident) and
         stock (diffusers' pipeline from_single_file, then .to(device): the old loader)
  modes  each memory mode (resident, model_offload, sequential_offload) loaded from the
         files; one image per vae_tiling setting under GPU caps that emulate Jetson budgets
         (--budgets-gb: bytes usable by the process, host side included)

  python3 bench/bench_memory.py --phases make,load,modes --out bench/results/x.json
  python3 bench/bench_memory.py --preset tiny --device cpu --phases make,load --size 128
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository (sdxl_ros, where it is not installed) and the test tooling (single_file_export).
for _path in (ROOT, os.path.join(ROOT, 'test')):
    if _path not in sys.path:
        sys.path.append(_path)

PROMPT = 'a photo of a robot reading a book in a library, warm light'
GIB = 2 ** 30


# --------------------------------------------------------------------------- sampling
def _status():
    """Return VmRSS, VmHWM, RssAnon, RssFile of this process in bytes."""
    out = {}
    with open('/proc/self/status') as stream:
        for line in stream:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile'):
                out[key] = int(value.split()[0]) * 1024
    return out


class Sampler:
    """Sample host RSS and device use every `interval` seconds; keep the peaks."""

    def __init__(self, cuda, interval=0.002):
        """Take the baseline now (after imports and CUDA init)."""
        self.cuda = cuda
        self.interval = interval
        self.baseline = self._sample()
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        """Return one sample: host figures, device figures and their sum."""
        host = _status()
        sample = {'rss': host['VmRSS'], 'rss_anon': host['RssAnon'],
                  'rss_file': host['RssFile'], 'device_used': 0, 'reserved': 0}
        if self.cuda:
            import torch
            free, total = torch.cuda.mem_get_info()
            sample['device_used'] = total - free
            sample['reserved'] = torch.cuda.memory_reserved()
        sample['sum'] = sample['rss'] + sample['device_used']
        sample['sum_anon'] = sample['rss_anon'] + sample['device_used']
        return sample

    def _run(self):
        """Sample until stopped, keeping the peaks."""
        while not self._stop.is_set():
            sample = self._sample()
            for key, value in sample.items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(self.interval)

    def __enter__(self):
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *exc):
        """Stop sampling and take a last sample."""
        self._stop.set()
        self._thread.join()
        last = self._sample()
        for key, value in last.items():
            self.peak[key] = max(self.peak[key], value)
        self.last = last

    def figures(self, reference_bytes):
        """Peaks in GiB, and the load-peak ratio against `reference_bytes`."""
        gib = {f'peak_{k}_gib': round(v / GIB, 3) for k, v in self.peak.items()}
        gib.update({f'baseline_{k}_gib': round(v / GIB, 3) for k, v in self.baseline.items()})
        gib.update({f'end_{k}_gib': round(v / GIB, 3) for k, v in self.last.items()})
        delta = self.peak['sum'] - self.baseline['sum']
        gib['peak_sum_delta_gib'] = round(delta / GIB, 3)
        gib['ratio_peak_sum_delta_to_bytes'] = round(delta / reference_bytes, 3)
        gib['ratio_peak_sum_anon_delta_to_bytes'] = round(
            (self.peak['sum_anon'] - self.baseline['sum_anon']) / reference_bytes, 3)
        gib['ratio_end_sum_delta_to_bytes'] = round(
            (self.last['sum'] - self.baseline['sum']) / reference_bytes, 3)
        return gib


# ----------------------------------------------------------------------------- helpers
def _paths(args):
    """Return the checkpoint and tokenizer paths under the work dir."""
    folder = os.path.join(args.work_dir, 'checkpoints')
    return ({role: os.path.join(folder, f'{args.preset}_{role}.safetensors')
             for role in ('base', 'refiner')}, os.path.join(folder, 'tokenizer'))


def _config(args, **fields):
    """Return the engine configuration on the written single files."""
    from sdxl_ros.engine import EngineConfig
    from sdxl_ros.engine.request import Limits
    paths, tok_dir = _paths(args)
    values = {'base_model': paths['base'], 'refiner_model': paths['refiner'],
              'tokenizer_dir': tok_dir, 'device': args.device,
              'dtype': 'float16' if args.device == 'cuda' else 'float32', 'fast': False,
              'limits': Limits(min_side=64)}
    values.update(fields)
    return EngineConfig(**values)


def _request(args):
    """Return the image request of every mode run (few steps: peaks do not depend on them)."""
    from sdxl_ros.engine.request import GenerationRequest
    return GenerationRequest(prompt=PROMPT, width=args.size, height=args.size,
                             steps=args.steps, guidance_scale=7.0, refiner_switch=0.8,
                             seed=1, scheduler='Euler')


def _preimport():
    """Import what loading uses, so the baseline holds the libraries, not the load."""
    import diffusers  # noqa: F401
    from diffusers import (AutoencoderKL, StableDiffusionXLImg2ImgPipeline,  # noqa: F401
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from diffusers.loaders import single_file_utils  # noqa: F401
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: F401
    from sdxl_ros.engine import SdxlEngine  # noqa: F401
    from sdxl_ros.engine.models import loading  # noqa: F401


def _init_device(args):
    """Initialise CUDA (its context is part of the baseline)."""
    import torch
    if args.device == 'cuda':
        torch.cuda.init()
        torch.zeros(1, device='cuda')
        torch.cuda.synchronize()
    return args.device == 'cuda'


def _file_bytes(args):
    """Total bytes of the two single files."""
    paths, _ = _paths(args)
    return sum(os.path.getsize(p) for p in paths.values())


# ------------------------------------------------------------------------------ phases
def phase_make(args, _save):
    """Write the preset as single files, in a child process (this one keeps off the GPU)."""
    return _run_child(args, argv=['make'])


def child_make(args):
    """Write the preset as single files (built where the engine would build it)."""
    import torch
    from sdxl_ros.engine.models import tokenizers as toks
    from sdxl_ros.engine.models.loading import load_models
    from single_file_export import save_single_file
    paths, tok_dir = _paths(args)
    os.makedirs(os.path.dirname(paths['base']), exist_ok=True)
    start = time.perf_counter()
    config = _config(args, base_model=args.preset, refiner_model=args.preset)
    dtype = torch.float16 if args.device == 'cuda' else torch.float32
    models = load_models(config, torch.device(args.device), dtype)
    save_single_file(models.base, paths['base'], 'base')
    save_single_file(models.refiner, paths['refiner'], 'refiner')
    first, second = toks.tiny_tokenizers()
    first.save_pretrained(os.path.join(tok_dir, 'tokenizer'))
    second.save_pretrained(os.path.join(tok_dir, 'tokenizer_2'))
    import diffusers
    import transformers
    return {'torch': torch.__version__, 'diffusers': diffusers.__version__,
            'transformers': transformers.__version__,
            'gpu': torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu',
            'bytes': {r: os.path.getsize(p) for r, p in paths.items()},
            'gib': round(_file_bytes(args) / GIB, 3),
            'write_sec': round(time.perf_counter() - start, 1)}


def child_load(args):
    """In a fresh process: load base + refiner with `args.loader`; return the peaks."""
    import torch
    cuda = _init_device(args)
    _preimport()
    gc.collect()
    from sdxl_ros.engine.generation.memory import module_bytes
    reference = _file_bytes(args)
    start = time.perf_counter()
    with Sampler(cuda) as sampler:
        if args.loader == 'ours':
            from sdxl_ros.engine import SdxlEngine
            engine = SdxlEngine(_config(args))
            engine.load()
            base, refiner = engine.base_pipeline, engine.refiner_pipeline
        else:
            base, refiner = _stock_load(args)
        if cuda:
            torch.cuda.synchronize()
    figures = sampler.figures(reference)
    weights = module_bytes([base.vae, base.text_encoder, base.text_encoder_2, base.unet,
                            refiner.unet])
    figures.update({'loader': args.loader, 'load_sec': round(time.perf_counter() - start, 2),
                    'checkpoint_bytes': reference, 'loaded_weight_bytes': weights,
                    'ratio_peak_sum_delta_to_loaded_weights': round(
                        (sampler.peak['sum'] - sampler.baseline['sum']) / weights, 3),
                    'vm_hwm_gib': round(_status()['VmHWM'] / GIB, 3)})
    if cuda:
        figures['max_memory_reserved_gib'] = round(torch.cuda.max_memory_reserved() / GIB, 3)
        figures['hwm_plus_max_reserved_delta_gib'] = round(
            (_status()['VmHWM'] + torch.cuda.max_memory_reserved()
             - sampler.baseline['rss']) / GIB, 3)
    return figures


def _stock_load(args):
    """Load as before this change: diffusers' pipeline from_single_file, then .to()."""
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from sdxl_ros.engine.models import tokenizers as toks
    from sdxl_ros.engine.models.resources import model_config_dir
    paths, tok_dir = _paths(args)
    dtype = torch.float16 if args.device == 'cuda' else torch.float32
    names = ('sdxl-base', 'sdxl-refiner') if args.preset != 'tiny' else ('tiny-base',
                                                                         'tiny-refiner')
    first, second = toks.find_tokenizers(tok_dir)
    common = {'local_files_only': True, 'torch_dtype': dtype, 'add_watermarker': False}
    base = StableDiffusionXLPipeline.from_single_file(
        paths['base'], config=str(model_config_dir(names[0])), tokenizer=first,
        tokenizer_2=second, **common)
    refiner = StableDiffusionXLImg2ImgPipeline.from_single_file(
        paths['refiner'], config=str(model_config_dir(names[1])),
        text_encoder_2=base.text_encoder_2, vae=base.vae, tokenizer_2=base.tokenizer_2,
        **common)
    base.to(args.device)
    refiner.to(args.device)
    return base, refiner


def child_mode(args):
    """In a fresh process: load in `args.mode`, then one image per tiling under each cap."""
    import torch
    from sdxl_ros.engine import OutOfMemory, SdxlEngine
    from sdxl_ros.engine.generation.memory import release_cached_memory
    cuda = _init_device(args)
    _preimport()
    reference = _file_bytes(args)
    engine = SdxlEngine(_config(args, memory_mode=args.mode))
    with Sampler(cuda) as sampler:
        start = time.perf_counter()
        engine.load()
        load_sec = time.perf_counter() - start
    out = {'mode': args.mode, 'load_sec': round(load_sec, 2),
           'load': sampler.figures(reference)}
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    request = _request(args)
    for tiling in (False, True):
        if tiling:
            engine.base_pipeline.vae.enable_tiling()
        else:
            engine.base_pipeline.vae.disable_tiling()
        for budget_gb in args.budgets_gb:
            release_cached_memory()
            rss = _status()['VmRSS']
            cap = budget_gb * 1e9 - rss
            row = {'budget_gb': budget_gb, 'vae_tiling': tiling,
                   'host_rss_before_gib': round(rss / GIB, 3),
                   'gpu_cap_gib': round(cap / GIB, 3)}
            if cuda:
                torch.cuda.set_per_process_memory_fraction(max(cap, 0) / total)
                torch.cuda.reset_peak_memory_stats()
            try:
                with Sampler(cuda) as sampler:
                    start = time.perf_counter()
                    engine.generate(request)
                    row['image_sec'] = round(time.perf_counter() - start, 2)
                row['ok'] = True
            except OutOfMemory as error:
                row.update(ok=False, error=str(error)[:300])
            peak = sampler.peak
            row.update({'peak_rss_gib': round(peak['rss'] / GIB, 3),
                        'peak_device_used_gib': round(peak['device_used'] / GIB, 3),
                        'peak_sum_gib': round(peak['sum'] / GIB, 3),
                        'fits_budget': bool(peak['sum'] <= budget_gb * 1e9)})
            if cuda:
                row['max_allocated_gib'] = round(torch.cuda.max_memory_allocated() / GIB, 3)
                row['max_reserved_gib'] = round(torch.cuda.max_memory_reserved() / GIB, 3)
                torch.cuda.set_per_process_memory_fraction(1.0)
            out.setdefault('images', []).append(row)
    return out


def _run_child(args, **extra):
    """Run one measurement in a fresh python process; return its JSON."""
    command = [sys.executable, os.path.abspath(__file__), '--child', *extra.pop('argv'),
               '--work-dir', args.work_dir, '--preset', args.preset, '--device', args.device,
               '--size', str(args.size), '--steps', str(args.steps),
               '--budgets-gb', *[str(b) for b in args.budgets_gb]]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
    if done.returncode or not lines:
        return {'error': f'child exited {done.returncode}', 'stderr': done.stderr[-3000:]}
    return json.loads(lines[-1])


def phase_load(args, save):
    """Load peaks of our loader and of the stock one, each in a fresh process."""
    out = {}
    for loader in args.loaders:
        out[loader] = _run_child(args, argv=['load', '--loader', loader])
        save('load', out)
    return out


def phase_modes(args, save):
    """Every memory mode in a fresh process."""
    out = {}
    for mode in args.modes:
        out[mode] = _run_child(args, argv=['mode', '--mode', mode])
        save('modes', out)
    return out


def parse_args(argv=None):
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--phases', default='make,load,modes')
    parser.add_argument('--preset', default='sdxl-random')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--work-dir', default='/tmp/sdxl_ros_memory')
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--budgets-gb', type=float, nargs='+', default=[58.0, 26.0])
    parser.add_argument('--loaders', nargs='+', default=['ours', 'stock'])
    parser.add_argument('--modes', nargs='+',
                        default=['resident', 'model_offload', 'sequential_offload'])
    parser.add_argument('--out', default='')
    parser.add_argument('--child', default='', help=argparse.SUPPRESS)
    parser.add_argument('--loader', default='ours', help=argparse.SUPPRESS)
    parser.add_argument('--mode', default='resident', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    """Run the phases (or one child measurement) and print / write the JSON."""
    args = parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if args.child:
        result = {'make': child_make, 'load': child_load, 'mode': child_mode}[args.child](args)
        print(json.dumps(result), flush=True)
        return 0
    import platform
    results = {'machine': platform.node(), 'python': platform.python_version(),
               'settings': vars(args)}
    # Versions and the GPU come from the children: this process never touches the GPU.

    def save(name, value):
        results[name] = value
        if args.out:
            with open(args.out, 'w') as stream:
                json.dump(results, stream, indent=1)

    phases = {'make': phase_make, 'load': phase_load, 'modes': phase_modes}
    for name in [p for p in args.phases.split(',') if p]:
        start = time.perf_counter()
        save(name, phases[name](args, save))
        results[name + '_sec'] = round(time.perf_counter() - start, 1)
        print(f'== {name}: ' + json.dumps(results[name])[:6000], flush=True)
        gc.collect()
    save('done', True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
