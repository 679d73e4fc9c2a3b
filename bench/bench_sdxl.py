# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Benchmark: stock diffusers (eager, and tuned as its docs say) against the sdxl_ros engine.

One command, one GPU, one process (plus one child process for the warm restart)::

    PYTHONUNBUFFERED=1 python3 bench/bench_sdxl.py --out bench/results/<name>.json

Every path uses the same random full-size SDXL base + refiner weights (the engine's
`sdxl-random` preset, built with a fixed seed), the same prompt, seed and settings
(1024x1024, 25 steps, refiner switch 0.8, CFG 7, Euler, batch 1). Results are written as JSON
after every phase, so a run cut short still leaves what it measured. Not a test: CI never
runs it. See bench/README.md for what each figure means.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository (for sdxl_ros) and the test tooling (single_file_export) on the path.
for _path in (ROOT, os.path.join(ROOT, 'test')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

PROMPT = 'a photo of an astronaut riding a horse on the moon, highly detailed'
SEED = 1234
ALL_PHASES = ('env', 'attention', 'stock_eager', 'stock_best', 'ours', 'new_size', 'fp8',
              'kernels', 'restart', 'memory', 'checkpoint', 'signatures')
# Stock tunings a skilled user takes from diffusers' and PyTorch's docs, each on top of fused
# QKV, channels_last and fp16 VAE decode; 'stock best' is the fastest of those that ran.
STOCK_VARIANTS = ('compile_default', 'compile_reduce_overhead', 'compile_repeated_blocks')
NEW_SIZE = (1152, 896)
# SDXL's attention shapes at 1024x1024 with CFG (batch, heads, queries, keys, head dim).
# Goal kinds of the `signatures` phase: the prepare_variants entry that serves each, and what
# its request changes. The few-step kinds meet the nocfg signature (timesteps are inputs).
SIGNATURE_KINDS = {
    'cfg': ('cfg', {}),
    'nocfg': ('nocfg', {'guidance_scale': 1.0}),
    'nocfg_lcm4': ('nocfg', {'guidance_scale': 1.0, 'scheduler': 'LCM', 'steps': 4}),
    'nocfg_trailing4': ('nocfg', {'guidance_scale': 1.0, 'schedule_type': 'SGM Uniform',
                                  'steps': 4}),
    'cfg_154': ('cfg:154', {'prompt': PROMPT + ' BREAK earth in the sky, stars',
                            'negative_prompt': 'blurry BREAK low resolution'}),
    'cfg_231': ('cfg:231', {'prompt': PROMPT + ' BREAK earth in the sky BREAK stars',
                            'negative_prompt': 'blurry BREAK low resolution BREAK noise'}),
    'img2img': ('cfg', {'denoising_strength': 0.6}),
}
ATTENTION_SHAPES = {'base_64x64_self': (2, 10, 4096, 4096, 64),
                    'base_32x32_self': (2, 20, 1024, 1024, 64),
                    'base_32x32_cross': (2, 20, 1024, 77, 64)}


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='', help='JSON file to write (default: print)')
    parser.add_argument('--phases', default=','.join(ALL_PHASES),
                        help='comma-separated subset of: ' + ', '.join(ALL_PHASES))
    parser.add_argument('--preset', default='sdxl-random')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--steps', type=int, default=25)
    parser.add_argument('--switch', type=float, default=0.8)
    parser.add_argument('--cfg', type=float, default=7.0)
    parser.add_argument('--images', type=int, default=3, help='timed images per path')
    parser.add_argument('--component-iters', type=int, default=10)
    parser.add_argument('--offload-steps', type=int, default=25,
                        help='steps for the model_offload run')
    parser.add_argument('--sequential-steps', type=int, default=5,
                        help='steps for the (slow) sequential_offload run')
    parser.add_argument('--work-dir', default=os.path.join(ROOT, '.bench_work'),
                        help='compile caches and checkpoints (on local disk)')
    parser.add_argument('--stock-variants', default=','.join(STOCK_VARIANTS),
                        help='comma-separated stock tunings to measure (stock_best phase): '
                        + ', '.join(STOCK_VARIANTS))
    parser.add_argument('--images-dir', default='',
                        help='keep the images of each path here (.npy) so that runs split '
                        'over several invocations still compare pictures')
    parser.add_argument('--keep-caches', action='store_true',
                        help='keep the compile caches of an earlier run (default: start cold)')
    parser.add_argument('--restart-variants', default='default',
                        help='semicolon-separated restarts to time, each "default" or '
                        'space-separated NAME=VALUE AccelerationConfig fields (Python literals)')
    parser.add_argument('--profile-restart', action='store_true',
                        help='also profile one restart (cProfile; slower, not timed)')
    parser.add_argument('--signature-kinds', default=','.join(SIGNATURE_KINDS),
                        help='signatures phase: goal kinds, of: ' + ', '.join(SIGNATURE_KINDS))
    parser.add_argument('--signature-stock', default='',
                        help="signatures phase: the stock tuning to compare with ('eager' = "
                             "no compile; default: stock_best's fastest, else compile_default)")
    parser.add_argument('--child-restart', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--child-profile', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--child-accel', default='', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- helpers
def sync():
    """Wait for the GPU (no-op on CPU)."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ms(fn, iters):
    """Median wall time of `fn()` in ms over `iters` runs after one warm-up (GPU synced)."""
    fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def gpu_memory():
    """Peak allocated / reserved GiB since the last reset, and reset."""
    import torch
    if not torch.cuda.is_available():
        return {}
    figures = {'peak_allocated_gib': round(torch.cuda.max_memory_allocated() / 2**30, 3),
               'peak_reserved_gib': round(torch.cuda.max_memory_reserved() / 2**30, 3)}
    torch.cuda.reset_peak_memory_stats()
    return figures


def free_all():
    """Collect garbage and return cached GPU memory."""
    gc.collect()
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def to_uint8(array):
    """Diffusers' float [0, 1] numpy output to uint8 the way both paths round."""
    import numpy as np
    return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)


def agreement(a, b):
    """Max / mean absolute difference (0..255) and PSNR of two uint8 images."""
    import numpy as np
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((diff ** 2).mean())
    psnr = float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    return {'max_abs_diff': float(diff.max()), 'mean_abs_diff': round(float(diff.mean()), 4),
            'psnr_db': round(psnr, 2) if psnr != float('inf') else 'inf',
            'pixels_differing': int((diff > 0).any(axis=-1).sum())}


def make_config(args, acceleration=None, **fields):
    """Build the EngineConfig for the benchmark preset (fast path prepared by hand)."""
    from sdxl_ros.engine import AccelerationConfig, EngineConfig
    from sdxl_ros.engine.request import Limits
    accel = {'background_prepare': False, 'prepare_sizes': (),
             'compile_cache_dir': os.path.join(args.work_dir, 'cache_ours')}
    accel.update(acceleration or {})
    values = {'base_model': args.preset, 'refiner_model': args.preset, 'device': args.device,
              'dtype': 'float16' if args.device == 'cuda' else 'float32',
              'limits': Limits(min_side=64), 'acceleration': AccelerationConfig(**accel)}
    values.update(fields)
    return EngineConfig(**values)


def make_request(args, steps=None, size=None):
    """Build the benchmark request (Euler = the pipelines' default scheduler)."""
    from sdxl_ros.engine.request import GenerationRequest
    width, height = size or (args.size, args.size)
    return GenerationRequest(prompt=PROMPT, width=width, height=height,
                             steps=steps or args.steps, guidance_scale=args.cfg,
                             refiner_switch=args.switch, seed=SEED, scheduler='Euler')


# ------------------------------------------------------------------------ stock paths
def load_stock(args):
    """Build the stock diffusers pipelines on the preset's weights (as the engine does)."""
    import torch
    from sdxl_ros.engine.models.loading import load_models
    config = make_config(args, fast_path=False)
    dtype = torch.float16 if args.device == 'cuda' else torch.float32
    models = load_models(config, torch.device(args.device), dtype)
    for pipe in (models.base, models.refiner):
        pipe.set_progress_bar_config(disable=True)
    return models.base, models.refiner


def stock_image(args, base, refiner, steps=None):
    """One stock image: base to latents (denoising_end), refiner from there, decoded."""
    import torch
    steps = steps or args.steps
    generator = torch.Generator('cpu').manual_seed(SEED)
    common = {'prompt': PROMPT, 'num_inference_steps': steps, 'guidance_scale': args.cfg,
              'generator': generator}
    latents = base(width=args.size, height=args.size, denoising_end=args.switch,
                   output_type='latent', **common).images
    image = refiner(image=latents, denoising_start=args.switch, output_type='np',
                    **common).images[0]
    return to_uint8(image)


def stock_embeddings(args, base, refiner):
    """Compute the prompt embeddings of both pipelines once (for loop-only timings)."""
    import torch
    device = torch.device(args.device)
    with torch.no_grad():
        b = base.encode_prompt(prompt=PROMPT, device=device, num_images_per_prompt=1,
                               do_classifier_free_guidance=True)
        r = refiner.encode_prompt(prompt=PROMPT, device=device, num_images_per_prompt=1,
                                  do_classifier_free_guidance=True)
    names = ('prompt_embeds', 'negative_prompt_embeds', 'pooled_prompt_embeds',
             'negative_pooled_prompt_embeds')
    return dict(zip(names, b)), dict(zip(names, r))


def loop_image(args, base, refiner, embeds, decode):
    """One image from precomputed embeddings: the denoising loops and the decode alone."""
    import torch
    generator = torch.Generator('cpu').manual_seed(SEED)
    common = {'num_inference_steps': args.steps, 'guidance_scale': args.cfg,
              'generator': generator, 'output_type': 'latent'}
    latents = base(width=args.size, height=args.size, denoising_end=args.switch,
                   **embeds[0], **common).images
    latents = refiner(image=latents, denoising_start=args.switch, **embeds[1],
                      **common).images
    return decode(latents)


def time_loop(args, base, refiner, decode):
    """Median seconds of `--images` loop-only images (after one untimed)."""
    embeds = stock_embeddings(args, base, refiner)
    loop_image(args, base, refiner, embeds, decode)
    sync()
    times = []
    for _ in range(args.images):
        start = time.perf_counter()
        loop_image(args, base, refiner, embeds, decode)
        sync()
        times.append(time.perf_counter() - start)
    return {'loop_image_sec': [round(t, 4) for t in times],
            'median_loop_sec': round(statistics.median(times), 4)}


def time_images(make_image, count):
    """Warm-up image (timed: includes compile) then `count` timed images."""
    start = time.perf_counter()
    first = make_image()
    warm = time.perf_counter() - start
    times = []
    for _ in range(count):
        start = time.perf_counter()
        image = make_image()
        times.append(time.perf_counter() - start)
    return first, image, {'first_image_sec': round(warm, 3),
                          'image_sec': [round(t, 4) for t in times],
                          'median_image_sec': round(statistics.median(times), 4)}


def unet_inputs(pipe, args):
    """CFG-batch inputs for one UNet call of `pipe` at the benchmark size."""
    import torch
    unet = pipe.unet
    config = unet.config
    device, dtype = torch.device(args.device), pipe.text_encoder_2.dtype
    text_dim = pipe.text_encoder_2.config.projection_dim
    latent = args.size // 8
    n_ids = (config.projection_class_embeddings_input_dim - text_dim) // \
        config.addition_time_embed_dim
    gen = torch.Generator('cpu').manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    sample = rand(2, config.in_channels, latent, latent)
    hidden = rand(2, 77, config.cross_attention_dim)
    cond = {'text_embeds': rand(2, text_dim),
            'time_ids': torch.tensor([[args.size, args.size, 0, 0, args.size, args.size][:n_ids]]
                                     * 2, device=device, dtype=dtype)}
    t = torch.tensor(500.0, device=device)
    return sample, t, hidden, cond


def components(args, base, refiner, vae_decode, encode=None):
    """Per-component times (ms): text encoders, one base / refiner CFG step, VAE decode."""
    import torch
    device = torch.device(args.device)
    out = {}

    def stock_encode():
        base.encode_prompt(prompt=PROMPT, device=device, num_images_per_prompt=1,
                           do_classifier_free_guidance=True)
        refiner.encode_prompt(prompt=PROMPT, device=device, num_images_per_prompt=1,
                              do_classifier_free_guidance=True)
    encode = encode or stock_encode
    try:
        _time_components(args, base, refiner, vae_decode, encode, device, out)
    except Exception as error:  # noqa: BLE001 - keep the per-image figures of the phase
        out['error'] = repr(error)[:1500]
    return out


def _time_components(args, base, refiner, vae_decode, encode, device, out):
    """Fill `out` with the component times (see `components`)."""
    import torch
    with torch.no_grad():
        out['text_encoders_ms'] = median_ms(encode, args.component_iters)
        for name, pipe in (('base_step_ms', base), ('refiner_step_ms', refiner)):
            sample, t, hidden, cond = unet_inputs(pipe, args)
            out[name] = median_ms(lambda p=pipe, s=sample, tt=t, h=hidden, c=cond: p.unet(
                s, tt, encoder_hidden_states=h, added_cond_kwargs=c, return_dict=False),
                args.component_iters)
        gen = torch.Generator('cpu').manual_seed(1)
        latents = torch.randn(1, 4, args.size // 8, args.size // 8, generator=gen).to(device)
        out['vae_decode_ms'] = median_ms(lambda: vae_decode(latents), max(3, args.component_iters
                                                                          // 3))
    return out


def phase_stock_eager(args, state):
    """Stock diffusers, eager, fp16 (VAE upcast to fp32 for decoding, as stock does)."""
    import torch
    base, refiner = load_stock(args)
    state['stock'] = (base, refiner)
    first, image, figures = time_images(lambda: stock_image(args, base, refiner), args.images)
    state['images']['stock_eager'] = image
    figures['deterministic'] = bool((first == image).all())

    vae = base.vae
    vae.to(torch.float32)  # stock upcasts the fp16-unsafe VAE for every decode
    from sdxl_ros.engine.generation.decoding import decode_latents
    figures.update(time_loop(args, base, refiner, lambda lat: decode_latents(vae, lat)))

    def vae_decode(latents):
        vae.decode(latents.float() / vae.config.scaling_factor, return_dict=False)
    figures['components'] = components(args, base, refiner, vae_decode)
    vae.to(torch.float16 if args.device == 'cuda' else torch.float32)
    figures['memory'] = gpu_memory()
    return figures


def _tuned_stock(args, variant):
    """Fresh stock pipelines tuned as `variant` ('eager': the tuning without a compile)."""
    import torch
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = os.path.join(args.work_dir, 'cache_stock_' + variant)
    torch._dynamo.reset()
    base, refiner = load_stock(args)
    base.fuse_qkv_projections()  # UNet and VAE
    refiner.fuse_qkv_projections(unet=True, vae=False)  # the VAE is shared
    for module in (base.unet, refiner.unet, base.vae):
        module.to(memory_format=torch.channels_last)
    base.vae.register_to_config(force_upcast=False)  # fp16 decode
    tuning = ['fuse_qkv_projections', 'channels_last', 'fp16 VAE decode']
    if variant == 'compile_repeated_blocks':
        # diffusers' regional compile: UNet2DConditionModel._repeated_blocks in 0.42 is
        # BasicTransformerBlock alone.
        for unet in (base.unet, refiner.unet):
            unet.compile_repeated_blocks(fullgraph=True)
        tuning.append('compile_repeated_blocks(unet x2: %s; fullgraph), vae.decode'
                      % ','.join(base.unet._repeated_blocks))
        base.vae.decode = torch.compile(base.vae.decode, fullgraph=True)
    elif variant != 'eager':
        mode = 'reduce-overhead' if variant == 'compile_reduce_overhead' else 'default'
        base.unet = torch.compile(base.unet, fullgraph=True, mode=mode)
        refiner.unet = torch.compile(refiner.unet, fullgraph=True, mode=mode)
        base.vae.decode = torch.compile(base.vae.decode, fullgraph=True, mode=mode)
        tuning.append(f'torch.compile(unet x2, vae.decode; mode {mode}, fullgraph)')
    return base, refiner, tuning


def _stock_variant(args, state, variant):
    """Fresh stock pipelines tuned as `variant`; first image, median, loop-only, components."""
    base, refiner, tuning = _tuned_stock(args, variant)
    first, image, figures = time_images(lambda: stock_image(args, base, refiner), args.images)
    figures['tuning'] = tuning

    def vae_decode(latents):
        return base.vae.decode(latents.to(base.vae.dtype) / base.vae.config.scaling_factor,
                               return_dict=False)
    try:
        figures.update(time_loop(args, base, refiner, vae_decode))
    except Exception as error:  # noqa: BLE001 - keep the per-image figures
        figures['loop_error'] = repr(error)[:1500]
    figures['memory'] = gpu_memory()
    return image, figures


def phase_stock_best(args, state):
    """Every stock tuning (--stock-variants) on fresh pipelines; 'best' is the fastest."""
    state.pop('stock', None)
    free_all()
    out = {'variants': {}}
    for variant in [v.strip() for v in args.stock_variants.split(',') if v.strip()]:
        print(f'   stock variant {variant}', flush=True)
        try:
            image, figures = _stock_variant(args, state, variant)
            state['images']['stock_' + variant] = image
        except Exception as error:  # noqa: BLE001 - record, measure the next variant
            figures = {'error': repr(error)[:2000]}
        free_all()  # the variant's pipelines went with its frame
        out['variants'][variant] = figures
        state['results']['stock_best'] = out
        write_partial(args, state)
    timed = {k: v for k, v in out['variants'].items() if 'median_image_sec' in v}
    if timed:
        best = min(timed, key=lambda k: timed[k]['median_image_sec'])
        out['best_end_to_end'] = best
        out['median_image_sec'] = timed[best]['median_image_sec']
        state['images']['stock_best'] = state['images']['stock_' + best]
        loops = {k: v['median_loop_sec'] for k, v in timed.items() if 'median_loop_sec' in v}
        if loops:
            out['best_loop'] = min(loops, key=loops.get)
            out['median_loop_sec'] = loops[out['best_loop']]
    return out


# ---------------------------------------------------------------------------- ours
def phase_ours(args, state):
    """Measure the sdxl_ros engine with its fast path, from cold caches, prepared at 1024²."""
    from sdxl_ros.engine import SdxlEngine
    state.pop('stock', None)
    import torch
    torch._dynamo.reset()
    free_all()
    start = time.perf_counter()
    engine = SdxlEngine(make_config(args, fast_path=True))
    engine.load()
    load_sec = time.perf_counter() - start
    state['engine'] = engine
    request = make_request(args)
    # The first goal before any preparation: served eagerly (what a goal at a new size gets).
    start = time.perf_counter()
    engine.generate(request)
    unprepared_sec = time.perf_counter() - start
    prepare_sec = engine.prepare_fast_path([(args.size, args.size)])
    load_memory = gpu_memory()
    first, image, figures = time_images(lambda: engine.generate(request).images[0],
                                        args.images)
    state['images']['ours'] = image
    figures['load_sec'] = round(load_sec, 3)
    figures['first_goal_unprepared_sec'] = round(unprepared_sec, 3)
    figures['prepare_1024_cold_sec'] = round(prepare_sec, 3)
    accel = engine.accelerator
    base, refiner = engine.base_pipeline, engine.refiner_pipeline
    figures.update(time_loop(args, base, refiner, accel.decode))
    vae = accel.fast_vae if accel is not None and accel.fast_vae is not None else base.vae

    def vae_decode(latents):
        with torch.inference_mode():
            vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)

    def encode():
        from sdxl_ros.engine.prompting.encoding import encode_base, encode_refiner
        device = torch.device(args.device)
        embeds = encode_base(base, PROMPT, '', args.cfg, device)
        encode_refiner(base, refiner, embeds, PROMPT, '', args.cfg, device)
    figures['components'] = components(args, base, refiner, vae_decode, encode)
    figures['memory'] = gpu_memory()
    figures['memory_during_prepare'] = load_memory
    figures['accelerator'] = accel.summary() if accel else None
    return figures


def phase_new_size(args, state):
    """
    Time a goal at a size never prepared (served eagerly at once), then that size prepared.

    Reports the first goal at the new size, the time to prepare it (warm Inductor cache for
    the shapes 1024² shares, cold for the rest), and its per-pixel time against 1024².
    """
    engine = state.get('engine')
    if engine is None:
        return {'error': 'run the ours phase first'}
    size = NEW_SIZE
    request = make_request(args, size=size)
    unprepared = []
    for _ in range(2):  # the first goal, then a second one before the size is prepared
        start = time.perf_counter()
        image = engine.generate(request).images[0]
        unprepared.append((time.perf_counter() - start, image))
    prepare_sec = engine.prepare_fast_path([size])
    times = []
    for _ in range(args.images):
        start = time.perf_counter()
        image = engine.generate(request).images[0]
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    ours = state['results'].get('ours', {}).get('median_image_sec')
    out = {'size': f'{size[0]}x{size[1]}', 'first_goal_sec': round(unprepared[0][0], 3),
           'second_goal_unprepared_sec': round(unprepared[1][0], 3),
           'prepare_sec': round(prepare_sec, 3), 'image_sec': [round(t, 4) for t in times],
           'median_image_sec': round(median, 4),
           # Two unprepared (eager) goals: exact is expected; the prepared (compiled) path
           # against the eager one: fp16 noise.
           'agreement_second_vs_first': agreement(unprepared[1][1], unprepared[0][1]),
           'agreement_prepared_vs_first': agreement(image, unprepared[0][1]),
           'accelerator': engine.accelerator.summary()}
    if ours:
        per_pixel = (median / (size[0] * size[1])) / (ours / (args.size * args.size))
        out['per_pixel_over_1024'] = round(per_pixel, 4)
    return out


def phase_fp8(args, state):
    """Measure precision fp8 (torchao row-wise FP8 in both UNets): time, deviation from fp16."""
    from sdxl_ros.engine import SdxlEngine
    state.pop('engine', None)
    import torch
    torch._dynamo.reset()
    free_all()
    engine = SdxlEngine(make_config(args, fast_path=True, acceleration={
        'precision': 'fp8', 'compile_cache_dir': os.path.join(args.work_dir, 'cache_fp8')}))
    start = time.perf_counter()
    engine.load()
    load_sec = time.perf_counter() - start
    prepare_sec = engine.prepare_fast_path([(args.size, args.size)])
    request = make_request(args)
    first, image, figures = time_images(lambda: engine.generate(request).images[0],
                                        args.images)
    state['images']['ours_fp8'] = image
    figures.update(load_sec=round(load_sec, 3), prepare_sec=round(prepare_sec, 3),
                   accelerator=engine.accelerator.summary(), memory=gpu_memory())
    figures.update(time_loop(args, engine.base_pipeline, engine.refiner_pipeline,
                             engine.accelerator.decode))
    return figures


def child_restart(args):
    """
    Time a fresh process: import, load (serving), first goal, preparation, images.

    The first goal comes right after load; then the child waits for the background
    preparation of 1024² and times three images.
    """
    t0 = time.time()
    from sdxl_ros.engine import SdxlEngine
    t_import = time.time()
    overrides = json.loads(args.child_accel or '{}')
    accel = {'background_prepare': True, 'prepare_sizes': ((args.size, args.size),)}
    accel.update(overrides)
    engine = SdxlEngine(make_config(args, acceleration=accel, fast_path=True))
    profiler = None
    if args.child_profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    engine.load()
    t_ready = time.time()
    engine.generate(make_request(args))
    t_first = time.time()
    while engine.accelerator.has_work() and time.time() - t_ready < 300:
        time.sleep(0.05)
    t_prepared = time.time()
    if profiler is not None:
        profiler.disable()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        engine.generate(make_request(args))
        times.append(time.perf_counter() - start)
    summary = engine.accelerator.summary()
    out = {'import_sec': round(t_import - t0, 3),
           'load_sec': round(t_ready - t_import, 3),
           'ready_wall': t_ready, 'first_image_wall': t_first, 'prepared_wall': t_prepared,
           'first_image_sec': round(t_first - t_ready, 3),
           'median_image_sec': round(statistics.median(times), 4), 'accelerator': summary}
    if profiler is not None:
        out['profile'] = _profile_text(profiler)
        try:
            import torch._dynamo.utils as dynamo_utils
            out['dynamo_compile_times'] = dynamo_utils.compile_times(repr='str',
                                                                     aggregate=True)
        except Exception as error:  # noqa: BLE001 - diagnostics only
            out['dynamo_compile_times'] = repr(error)
    print(json.dumps(out, default=str), flush=True)


def _profile_text(profiler, lines=45):
    """Return the top functions of a cProfile run by cumulative and by own time, as text."""
    import io
    import pstats
    text = {}
    for key in ('cumulative', 'tottime'):
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(key).print_stats(lines)
        text[key] = stream.getvalue()[-12000:]
    return text


def _run_child(args, overrides, profile=False, timeout=400):
    """Spawn a restart child with AccelerationConfig `overrides`; return its figures."""
    command = [sys.executable, os.path.abspath(__file__), '--child-restart',
               '--preset', args.preset, '--device', args.device, '--size', str(args.size),
               '--steps', str(args.steps), '--work-dir', args.work_dir,
               '--child-accel', json.dumps(overrides)] + (['--child-profile'] if profile else [])
    spawn = time.time()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'error': f'timed out after {timeout} s', 'overrides': overrides}
    if proc.returncode != 0:
        return {'error': proc.stderr[-3000:], 'overrides': overrides}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    child['overrides'] = overrides
    child['spawn_to_serving_sec'] = round(child.pop('ready_wall') - spawn, 3)
    child['spawn_to_first_image_sec'] = round(child.pop('first_image_wall') - spawn, 3)
    child['spawn_to_prepared_sec'] = round(child.pop('prepared_wall') - spawn, 3)
    return child


def _parse_variant(text):
    """Turn 'default' or 'compile_regions=("ResnetBlock2D",) ...' into (name, overrides)."""
    import ast
    text = text.strip()
    if text in ('', 'default'):
        return 'default', {}
    pairs = dict(item.split('=', 1) for item in text.split())
    return text, {k: ast.literal_eval(v) for k, v in pairs.items()}


def phase_restart(args, state):
    """
    Start fresh processes on the warm compile cache: time from spawn to serving.

    The cache is the one the 'ours' phase filled; without it (a run that skipped 'ours')
    one child fills it first, and that cold start is reported as such. Each variant
    (--restart-variants) runs in its own child, after which --profile-restart profiles one
    more default child.
    """
    out = {}
    cache = os.path.join(args.work_dir, 'cache_ours')
    if not os.path.isdir(cache) or not os.listdir(cache):
        out['cold_child'] = _run_child(args, {}, timeout=500)
        write_partial(args, state)
    for text in args.restart_variants.split(';'):
        name, env = _parse_variant(text)
        if name in out:  # a repeated variant (e.g. the second start of a new setting)
            name = f'{name} #{sum(1 for key in out if key.startswith(name)) + 1}'
        out[name] = _run_child(args, env)
        state['results']['restart'] = out
        write_partial(args, state)
    if args.profile_restart:
        out['profiled'] = _run_child(args, {}, profile=True)
    default = out.get('default', {})
    for key in ('spawn_to_serving_sec', 'spawn_to_first_image_sec', 'spawn_to_prepared_sec',
                'median_image_sec'):
        if key in default:
            out[key] = default[key]
    return out


KERNEL_KINDS = (('attention', ('fmha', 'flash', 'attention', 'sdpa', 'attn')),
                ('conv', ('conv', 'fprop', 'dgrad', 'implicit', 'winograd')),
                ('gemm', ('gemm', 'nvjet', 'cublas', 'matmul')),
                ('inductor (norms, pointwise)', ('triton',)))


def _kernel_kind(name):
    """Coarse kind of a CUDA kernel from its name."""
    low = name.lower()
    for kind, marks in KERNEL_KINDS:
        if any(mark in low for mark in marks):
            return kind
    return 'other'


def _profile_kernels(call):
    """GPU kernel time of one `call()` (after warm-up): totals by kind and the top kernels."""
    import torch
    from torch.profiler import profile, ProfilerActivity
    with torch.inference_mode():
        for _ in range(3):
            call()
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            sync()
    by_kind, by_name = {}, {}
    for event in prof.events():
        if getattr(event, 'device_type', None) != torch.autograd.DeviceType.CUDA:
            continue
        us = event.time_range.elapsed_us()
        kind = _kernel_kind(event.name)
        by_kind[kind] = by_kind.get(kind, 0.0) + us
        count, total = by_name.get(event.name, (0, 0.0))
        by_name[event.name] = (count + 1, total + us)
    top = sorted(by_name.items(), key=lambda item: -item[1][1])[:25]
    return {'total_ms': round(sum(by_kind.values()) / 1000, 3),
            'by_kind_ms': {k: round(v / 1000, 3) for k, v in sorted(by_kind.items())},
            'top': [{'name': name[:120], 'calls': c, 'ms': round(t / 1000, 3)}
                    for name, (c, t) in top]}


def phase_kernels(args, state):
    """Where a CFG step's GPU time goes (ours: compiled blocks, no graph), and SDPA's choice."""
    import torch
    engine = state.get('engine')
    if engine is None:
        return {'error': 'run the ours phase first'}
    out = {}
    for name, pipe in (('base', engine.base_pipeline), ('refiner', engine.refiner_pipeline)):
        sample, t, hidden, cond = unet_inputs(pipe, args)
        graphed = next((g for g in engine.accelerator.graphed
                        if getattr(g, 'unet', None) is pipe.unet), None)
        forward = graphed._plain if graphed is not None else pipe.unet
        out[name] = _profile_kernels(lambda f=forward, s=sample, tt=t, h=hidden, c=cond: f(
            s, tt, h, added_cond_kwargs=c, return_dict=False))
    choice = {}
    for shape_name, (batch, heads, queries, keys, dim) in ATTENTION_SHAPES.items():
        q, k, v = (torch.zeros(batch, heads, n, dim, device=args.device, dtype=torch.float16)
                   for n in (queries, keys, keys))
        try:
            choice[shape_name] = int(torch._fused_sdp_choice(q, k, v))
        except Exception as error:  # noqa: BLE001 - private API, diagnostics only
            choice[shape_name] = repr(error)[:200]
    from torch.nn.attention import SDPBackend
    out['sdpa_choice'] = {k: (SDPBackend(v).name if isinstance(v, int) else v)
                          for k, v in choice.items()}
    out['sdpa_priority'] = [SDPBackend(int(b)).name for b in torch._C._get_sdp_priority_order()]
    return out


# ----------------------------------------------------------------- checkpoint, memory
def _drop_page_cache():
    """Drop the OS page cache so reads come from disk (root only); return whether it did."""
    try:
        subprocess.run(['sync'], check=True)
        with open('/proc/sys/vm/drop_caches', 'w') as stream:
            stream.write('3\n')
        return True
    except OSError:
        return False


def phase_checkpoint(args, state):
    """Write sdxl-random as single files, then: raw read of the bytes vs engine load."""
    from sdxl_ros.engine import SdxlEngine
    from sdxl_ros.engine.models import tokenizers as toks
    from single_file_export import save_single_file
    folder = os.path.join(args.work_dir, 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    paths = {role: os.path.join(folder, f'sdxl_random_{role}.safetensors')
             for role in ('base', 'refiner')}
    start = time.perf_counter()
    base, refiner = load_stock(args)
    save_single_file(base, paths['base'], 'base')
    save_single_file(refiner, paths['refiner'], 'refiner')
    del base, refiner
    free_all()
    write_sec = time.perf_counter() - start
    tok_dir = os.path.join(folder, 'tokenizer')
    first, second = toks.tiny_tokenizers()
    first.save_pretrained(os.path.join(tok_dir, 'tokenizer'))
    second.save_pretrained(os.path.join(tok_dir, 'tokenizer_2'))
    sizes = {role: os.path.getsize(path) for role, path in paths.items()}
    cold = _drop_page_cache()
    start = time.perf_counter()
    for path in paths.values():
        with open(path, 'rb') as stream:
            while stream.read(64 << 20):
                pass
    read_sec = time.perf_counter() - start
    cold_load = _drop_page_cache()
    config = make_config(args, base_model=paths['base'], refiner_model=paths['refiner'],
                         tokenizer_dir=tok_dir, fast_path=False)
    start = time.perf_counter()
    engine = SdxlEngine(config)
    engine.load()
    sync()
    load_sec = time.perf_counter() - start
    image = engine.generate(make_request(args, steps=5)).images[0]
    del engine
    free_all()
    fs_type = subprocess.run(['stat', '-f', '-c', '%T', folder], capture_output=True,
                             text=True).stdout.strip()
    return {'folder': folder, 'filesystem': fs_type, 'bytes': sizes,
            'gib': round(sum(sizes.values()) / 2**30, 3),
            'write_sec': round(write_sec, 2), 'page_cache_dropped': cold and cold_load,
            'read_bytes_sec': round(read_sec, 2),
            'read_gib_per_sec': round(sum(sizes.values()) / 2**30 / read_sec, 2),
            'engine_load_sec': round(load_sec, 2),
            'load_over_read': round(load_sec / read_sec, 2),
            'image_ok': bool(image.shape == (args.size, args.size, 3))}


def _memory_mode_run(args, mode, steps):
    """
    Place sdxl-random in `mode` and time one image (after a short warm-up).

    Random full-size weights are slow to initialise on a CPU, so they are built on the GPU
    (resident, fast path off), moved to the CPU and placed as `mode` places them: the same
    state a load in that mode reaches from files.
    """
    import torch
    from sdxl_ros.engine import SdxlEngine
    engine = SdxlEngine(make_config(args, memory_mode='resident', fast_path=False))
    engine.load()
    engine.config.memory_mode = mode
    engine.config.fast_path = True
    models = engine._models
    for pipe in (models.base, models.refiner):
        pipe.to('cpu')
    free_all()
    start = time.perf_counter()
    engine._place(models)
    engine._accelerate(models)
    load_sec = time.perf_counter() - start
    free_gib = round(torch.cuda.mem_get_info()[0] / 2**30, 2) if args.device == 'cuda' else None
    engine.generate(make_request(args, steps=5))
    gpu_memory()
    start = time.perf_counter()
    engine.generate(make_request(args, steps=steps))
    image_sec = time.perf_counter() - start
    figures = {'steps': steps, 'place_sec': round(load_sec, 2),
               'image_sec': round(image_sec, 3), **gpu_memory(),
               'allocated_after_load_gib': None, 'free_after_load_gib': free_gib,
               'fast_path': engine.accelerator.summary()['applied'] if engine.accelerator
               else []}
    figures['allocated_after_load_gib'] = round(torch.cuda.memory_allocated() / 2**30, 3) \
        if args.device == 'cuda' else None
    engine.unload()
    del engine
    free_all()
    return figures


def phase_memory(args, state):
    """Each memory mode's peak GPU memory and time per image (resident = the fast path)."""
    out = {}
    # resident is the 'ours' phase (fast path): its figures are not repeated here.
    for mode, steps in (('model_offload', args.offload_steps),
                        ('sequential_offload', args.sequential_steps)):
        try:
            out[mode] = _memory_mode_run(args, mode, steps)
        except Exception as error:  # noqa: BLE001 - record and go on with the next mode
            out[mode] = {'error': repr(error)[:2000]}
        write_partial(args, state)
    return out


def phase_attention(args, state):
    """SDPA backends on SDXL's attention shapes: time (ms) and error against fp32 math."""
    import torch
    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    out = {}
    for name, (batch, heads, queries, keys, dim) in ATTENTION_SHAPES.items():
        gen = torch.Generator('cpu').manual_seed(2)
        q, k, v = (torch.randn(batch, heads, n, dim, generator=gen).to(
            args.device, torch.float16) for n in (queries, keys, keys))
        ref = sdpa(q.float(), k.float(), v.float())
        row = {}
        for backend in ('FLASH_ATTENTION', 'CUDNN_ATTENTION', 'EFFICIENT_ATTENTION'):
            try:
                with sdpa_kernel([getattr(SDPBackend, backend)]):
                    result = sdpa(q, k, v)
                    ms = median_ms(lambda: sdpa(q, k, v), 20)
                err = float((result.float() - ref).abs().max())
                row[backend.lower()] = {'ms': ms, 'max_abs_err': round(err, 6)}
            except RuntimeError as error:
                row[backend.lower()] = {'error': str(error)[:200]}
        out[name] = row
    return out


# ---------------------------------------------------------------------------- driver
def phase_env(args, state):
    """GPU, library versions and settings."""
    import diffusers
    import torch
    import transformers
    info = {'python': platform.python_version(), 'torch': torch.__version__,
            'diffusers': diffusers.__version__, 'transformers': transformers.__version__,
            'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),
            'settings': {'size': args.size, 'steps': args.steps, 'switch': args.switch,
                         'cfg': args.cfg, 'scheduler': 'Euler (EulerDiscreteScheduler)',
                         'batch': 1, 'seed': SEED, 'prompt': PROMPT, 'preset': args.preset,
                         'dtype': 'float16', 'timed_images': args.images},
            'stock_variants': args.stock_variants}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    sm_count=props.multi_processor_count)
    try:
        info['nvidia_smi'] = subprocess.run(
            ['nvidia-smi', '--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,'
             'power.limit,temperature.gpu', '--format=csv,noheader'],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def summarize(results):
    """Ratios against stock eager and stock best (the fastest stock tuning), per target."""
    summary = {}
    eager = results.get('stock_eager', {})
    best = results.get('stock_best', {})
    ours = results.get('ours', {})
    fp8 = results.get('fp8', {})
    for key, name in (('median_image_sec', 'end_to_end'), ('median_loop_sec', 'loop_only')):
        if ours.get(key) and best.get(key):
            summary[f'ours_over_stock_best_{name}'] = round(ours[key] / best[key], 4)
        if ours.get(key) and eager.get(key):
            summary[f'ours_over_stock_eager_{name}'] = round(ours[key] / eager[key], 4)
        if fp8.get(key) and best.get(key):
            summary[f'fp8_over_stock_best_{name}'] = round(fp8[key] / best[key], 4)
    if best.get('median_image_sec') and eager.get('median_image_sec'):
        summary['stock_best_over_stock_eager'] = round(
            best['median_image_sec'] / eager['median_image_sec'], 4)
    new_size = results.get('new_size', {})
    for key in ('first_goal_sec', 'per_pixel_over_1024'):
        if key in new_size:
            summary[f'new_size_{key}'] = new_size[key]
    restart = results.get('restart', {})
    for key in ('spawn_to_serving_sec', 'spawn_to_first_image_sec', 'spawn_to_prepared_sec'):
        if key in restart:
            summary[f'restart_{key}'] = restart[key]
    return summary


def load_images(args):
    """Images saved by earlier invocations (see --images-dir)."""
    import numpy as np
    images = {}
    if args.images_dir and os.path.isdir(args.images_dir):
        for name in os.listdir(args.images_dir):
            if name.endswith('.npy'):
                images[name[:-4]] = np.load(os.path.join(args.images_dir, name))
    return images


def write_partial(args, state):
    """Write what has been measured so far."""
    results = dict(state['results'])
    images = state['images']
    if args.images_dir:
        import numpy as np
        os.makedirs(args.images_dir, exist_ok=True)
        for name, image in images.items():
            np.save(os.path.join(args.images_dir, name + '.npy'), image)
    agree = {}
    if 'stock_eager' in images:
        for name in sorted(images):
            if name != 'stock_eager':
                agree[f'{name}_vs_stock_eager'] = agreement(images[name], images['stock_eager'])
    if 'ours' in images and 'stock_best' in images:
        agree['ours_vs_stock_best'] = agreement(images['ours'], images['stock_best'])
    if 'ours' in images and 'ours_fp8' in images:
        agree['ours_fp8_vs_ours_fp16'] = agreement(images['ours_fp8'], images['ours'])
    results['agreement'] = agree
    results['summary'] = summarize(results)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as stream:
            stream.write(text + '\n')
    return results


# ------------------------------------------------------------------------ signatures
def _kind_request(args, fields):
    """Return the benchmark request changed as a goal kind says (img2img: an init image)."""
    import dataclasses
    import numpy as np
    fields = dict(fields)
    if 'denoising_strength' in fields:
        rng = np.random.default_rng(SEED)
        small = rng.integers(0, 256, (args.size // 64, args.size // 64, 3), dtype=np.uint8)
        fields['init_image'] = np.kron(small, np.ones((64, 64, 1), dtype=np.uint8))
    return dataclasses.replace(make_request(args), **fields)


def _stock_kind_image(args, base, refiner, request):
    """One stock image for a goal kind, the prompt given as the engine's embeddings."""
    import torch
    from diffusers import (EulerDiscreteScheduler, LCMScheduler,
                           StableDiffusionXLImg2ImgPipeline)
    from sdxl_ros.engine.prompting.encoding import encode_base, encode_refiner
    device = torch.device(args.device)
    with torch.no_grad():  # long prompts: stock diffusers would cut them at 77 tokens
        embeds = encode_base(base, request.prompt, request.negative_prompt,
                             request.guidance_scale, device)
        refined = encode_refiner(base, refiner, embeds, request.prompt,
                                 request.negative_prompt, request.guidance_scale, device)
    scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config)
    if request.scheduler == 'LCM':
        scheduler = LCMScheduler.from_config(base.scheduler.config)
    elif request.schedule_type == 'SGM Uniform':
        scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config,
                                                       timestep_spacing='trailing')
    common = {'num_inference_steps': request.steps, 'guidance_scale': request.guidance_scale,
              'generator': torch.Generator('cpu').manual_seed(SEED)}
    if request.init_image is not None:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(base, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        latents = pipe(image=request.init_image, strength=request.denoising_strength,
                       denoising_end=args.switch, output_type='latent',
                       **embeds.as_kwargs(), **common).images
    else:
        pipe = type(base).from_pipe(base, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        latents = pipe(width=request.width, height=request.height, denoising_end=args.switch,
                       output_type='latent', **embeds.as_kwargs(), **common).images
    refiner_pipe = type(refiner).from_pipe(  # from_pipe keeps the pipelines' config flags
        refiner, scheduler=type(scheduler).from_config(scheduler.config))
    refiner_pipe.set_progress_bar_config(disable=True)
    image = refiner_pipe(image=latents, denoising_start=args.switch, output_type='np',
                         **refined.as_kwargs(), **common).images[0]
    return to_uint8(image)


def phase_signatures(args, state):
    """
    Each goal kind on the fast path (its signature prepared first) against stock, same kind.

    For every kind (--signature-kinds: CFG, CFG 1, few-step schedules, 2- and 3-chunk
    prompts, img2img) it prepares the prepare_variants entry that serves it, one entry at a
    time, recording the seconds and the GPU memory its graphs add (allocated and reserved),
    then checks that a goal of that kind queues nothing more (its signature was the one
    prepared), and times it against the stock tuning (--signature-stock) on the same request.
    On a CPU (--device cpu --preset tiny: a dry run) the fast path is simulated, nothing is
    compiled or captured and the figures mean nothing.
    """
    import torch
    from sdxl_ros.engine import SdxlEngine
    from sdxl_ros.engine.config import parse_variant
    state.pop('engine', None)
    state.pop('stock', None)
    free_all()
    torch._dynamo.reset()
    kinds = [k.strip() for k in args.signature_kinds.split(',') if k.strip()]
    unknown = [k for k in kinds if k not in SIGNATURE_KINDS]
    if unknown:
        return {'error': 'unknown --signature-kinds: ' + ', '.join(unknown)}
    cpu = args.device == 'cpu'
    accel = {'simulate_cuda': True, 'compile': 'none'} if cpu else {}
    engine = SdxlEngine(make_config(args, acceleration=accel, fast_path=True))
    engine.load()
    size = (args.size, args.size)
    out = {'kinds': {}, 'variants': {}}
    for variant in dict.fromkeys(SIGNATURE_KINDS[k][0] for k in kinds):
        free_all()
        before = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved()) \
            if torch.cuda.is_available() else (0, 0)
        engine.accelerator.queue_size(*size, variants=[parse_variant(variant)])
        seconds = engine.prepare_fast_path()
        figures = {'prepare_sec': round(seconds, 3)}
        if torch.cuda.is_available():
            figures['graphs_allocated_gib'] = round(
                (torch.cuda.memory_allocated() - before[0]) / 2**30, 3)
            figures['graphs_reserved_gib'] = round(
                (torch.cuda.memory_reserved() - before[1]) / 2**30, 3)
        out['variants'][variant] = figures
    ours = {}
    for kind in kinds:
        request = _kind_request(args, SIGNATURE_KINDS[kind][1])
        engine.generate(request)
        met = [unit[2][2][0] for unit in engine.accelerator._pending if unit[0] == 'unet']
        engine.prepare_fast_path()  # what the kind met beyond its variant, if anything
        _first, ours[kind], figures = time_images(
            lambda: engine.generate(request).images[0], args.images)
        figures['unprepared_signatures_met'] = [list(shape) for shape in met]
        out['kinds'][kind] = {'variant': SIGNATURE_KINDS[kind][0], 'ours': figures}
        state['results']['signatures'] = out
        write_partial(args, state)
    out['accelerator'] = engine.accelerator.summary()
    engine.unload()  # its memory goes before the stock pipelines load
    free_all()
    stock = args.signature_stock or state['results'].get('stock_best', {}).get(
        'best_end_to_end', 'compile_default')
    base, refiner, out['stock_tuning'] = _tuned_stock(args, stock)
    for kind in kinds:
        request = _kind_request(args, SIGNATURE_KINDS[kind][1])
        try:
            _first, image, figures = time_images(
                lambda: _stock_kind_image(args, base, refiner, request), args.images)
        except Exception as error:  # noqa: BLE001 - record, time the next kind
            out['kinds'][kind]['stock'] = {'error': repr(error)[:1500]}
            continue
        entry = out['kinds'][kind]
        entry['stock'] = figures
        entry['ours_over_stock'] = round(
            entry['ours']['median_image_sec'] / figures['median_image_sec'], 4)
        entry['agreement_ours_vs_stock'] = agreement(ours[kind], image)
        write_partial(args, state)
    return out


PHASES = {'env': phase_env, 'attention': phase_attention, 'stock_eager': phase_stock_eager,
          'stock_best': phase_stock_best, 'ours': phase_ours, 'new_size': phase_new_size,
          'fp8': phase_fp8, 'kernels': phase_kernels,
          'restart': phase_restart,
          'memory': phase_memory, 'checkpoint': phase_checkpoint,
          'signatures': phase_signatures}


def main(argv=None):
    """Run the requested phases in order and write the JSON."""
    args = parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if args.child_restart:
        child_restart(args)
        return 0
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.keep_caches:  # cold caches: this run's compile caches start empty
        import glob
        subprocess.run(['rm', '-rf'] + glob.glob(os.path.join(args.work_dir, 'cache_*')),
                       check=False)
    state = {'results': {'phases_run': []}, 'images': load_images(args)}
    phases = [p.strip() for p in args.phases.split(',') if p.strip()]
    for name in phases:
        if name in ('stock_best', 'fp8') and 'engine' in state:
            del state['engine']  # ours is measured; free its memory for the stock run
            free_all()
            import torch
            torch._dynamo.reset()
        if name in ('checkpoint', 'memory'):
            state.pop('stock', None)
            state.pop('engine', None)
            free_all()
        print(f'== {name}', flush=True)
        start = time.perf_counter()
        try:
            state['results'][name] = PHASES[name](args, state)
        except Exception as error:  # noqa: BLE001 - record, keep the other phases
            import traceback
            traceback.print_exc()
            state['results'][name] = {'error': repr(error)[:3000]}
        state['results'][name + '_phase_sec'] = round(time.perf_counter() - start, 1)
        state['results']['phases_run'].append(name)
        results = write_partial(args, state)
        print(json.dumps({name: state['results'][name]}, default=str)[:3000], flush=True)
    print(json.dumps({'summary': results['summary'], 'agreement': results['agreement']},
                     indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
