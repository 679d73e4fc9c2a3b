# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
SdxlEngine: load SDXL base + refiner once, then generate images for validated requests.

No ROS here (README "Architecture"): the node drives this class from its execute callback and
translates progress, cancel and errors into action feedback and results.
"""

import logging
import random
import threading
import time

from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline

from sdxl_ros.engine.conditioning.controlnet import controlled, ControlNetSet
from sdxl_ros.engine.config import EngineConfig
from sdxl_ros.engine.controlnet_files import request_controlnets
from sdxl_ros.engine.errors import (EngineError, GenerationCancelled, ModelLoadError,
                                    OutOfMemory)
from sdxl_ros.engine.fast_path.accelerator import Yielded
from sdxl_ros.engine.fast_path.applying import accelerate_pipelines
from sdxl_ros.engine.fast_path.decision import precision_problem, probe_facts
from sdxl_ros.engine.fast_path.preparation import BackgroundPreparer, GoalGate
from sdxl_ros.engine.fast_path.switching import switch_off
from sdxl_ros.engine.generation.decoding import decode_latents, encode_image, vae_needs_fp32
from sdxl_ros.engine.generation.init_image import prepare_init
from sdxl_ros.engine.generation.memory import (activation_bytes, cuda_memory, host_memory,
                                               MemoryReport, module_bytes,
                                               release_cached_memory, usable_device_bytes)
from sdxl_ros.engine.generation.preview import latents_to_rgb
from sdxl_ros.engine.infotext import format_infotext
from sdxl_ros.engine.lora_files import request_loras
from sdxl_ros.engine.models.loading import load_models
from sdxl_ros.engine.progress import Progress, ProgressClock
from sdxl_ros.engine.prompting.encoding import encode_base, encode_refiner
from sdxl_ros.engine.prompting.lora import fused_mode_needed, lora_target, LoraSet
from sdxl_ros.engine.request import SEED_LIMIT, validate_request
from sdxl_ros.engine.result import GenerationResult
from sdxl_ros.engine.schedulers import make_scheduler
from sdxl_ros.engine.step_plan import img2img_switch, plan_steps

import torch

LOG = logging.getLogger(__name__)

# Message fragments by which torch reports running out of memory.
_OOM_MARKERS = ('out of memory', "can't allocate memory", 'not enough memory')


def _is_oom(error):
    """Whether an exception is torch running out of (device or host) memory."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(
        marker in str(error).lower() for marker in _OOM_MARKERS)


class _Cancelled(Exception):
    """Internal: raised from the step callback path when the cancel flag is seen."""


class SdxlEngine:
    """Text-to-image with SDXL base + refiner; one request at a time (not thread-safe)."""

    def __init__(self, config=None):
        """Remember the configuration; nothing is loaded until `load()`."""
        self.config = config or EngineConfig()
        self._models = None
        self._device = None
        self._dtype = None
        self._scheduler_configs = None
        self._accel = None
        self._derived = {}
        self._preparer = None
        self._lora_target = None
        self._loras = None
        self._controlnets = None
        self._lock = threading.Lock()
        self._gate = GoalGate()

    # ----------------------------------------------------------------- loading
    @property
    def is_loaded(self):
        """Whether models are loaded and `generate` may be called."""
        return self._models is not None

    @property
    def model_names(self):
        """Return (base name, refiner name or '') as written into infotext."""
        if self._models is None:
            return ('', '')
        return (self._models.base_name, self._models.refiner_name)

    @property
    def device(self):
        """Return the torch device generation runs on (after `load`)."""
        return self._device

    @property
    def dtype(self):
        """Return the torch dtype of the models (after `load`)."""
        return self._dtype

    @property
    def base_pipeline(self):
        """Return the diffusers base pipeline (for benchmarks and tests; None before `load`)."""
        return self._models.base if self._models else None

    @property
    def refiner_pipeline(self):
        """Return the diffusers refiner pipeline, or None when there is no refiner."""
        return self._models.refiner if self._models else None

    @property
    def lora_target(self):
        """Return the widths a LoRA must match (lora_files.LoraTarget), or None before load."""
        return self._lora_target

    def _resolve_device_dtype(self):
        """Turn 'auto' device/dtype into torch objects, refusing CUDA when there is none."""
        device = self.config.device
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda' and not torch.cuda.is_available():
            raise ModelLoadError('device cuda requested but PyTorch sees no CUDA GPU; '
                                 'use device cpu (slow) or auto')
        dtype = self.config.dtype
        if dtype == 'auto' and self.config.acceleration.precision == 'fp8':
            dtype = 'bfloat16'  # what torchao's row-wise FP8 quantisation takes
        elif dtype == 'auto':
            dtype = 'float16' if device == 'cuda' else 'float32'
        return torch.device(device), getattr(torch, dtype)

    def load(self, on_progress=None):
        """Load base (+ refiner) as configured; raises ModelLoadError with what to fix."""
        start = time.monotonic()
        if on_progress:
            on_progress(Progress(stage='loading'))
        self.unload()
        device, dtype = self._resolve_device_dtype()
        self._check_precision(device, dtype)
        try:
            models = load_models(self.config, device, dtype)
        except ModelLoadError:
            release_cached_memory()
            raise
        except Exception as error:
            release_cached_memory()
            if _is_oom(error):
                raise ModelLoadError(
                    f'not enough memory to load the models: {error}. Try memory_mode '
                    'model_offload or sequential_offload') from error
            raise ModelLoadError(f'cannot load models: {error}') from error
        self._device, self._dtype = device, dtype
        for pipeline in (models.base, models.refiner):
            if pipeline is not None:
                pipeline.set_progress_bar_config(disable=True)
        self._place(models)
        self._scheduler_configs = {
            'base': dict(models.base.scheduler.config),
            'refiner': dict(models.refiner.scheduler.config) if models.refiner else None}
        self._models = models
        self._lora_target = lora_target(models.base, models.refiner)
        self._loras = LoraSet(models.base)
        self._controlnets = ControlNetSet(models.base.unet, device, dtype)
        self._accelerate(models)
        if on_progress:
            on_progress(Progress(stage='loading', elapsed_sec=time.monotonic() - start))

    def _check_precision(self, device, dtype):
        """Refuse a precision this machine cannot run (before any weight is read)."""
        if self.config.acceleration.precision == 'fp16':
            return
        problem = precision_problem(
            probe_facts(device, self.config.acceleration.simulate_cuda),
            self.config.fast_path, self.config.acceleration, str(dtype).replace('torch.', ''))
        if problem:
            raise ModelLoadError(f'{problem}; use precision fp16')

    def _accelerate(self, models):
        """Apply the GPU fast path (fast_path/; a no-op on CPU); prepare in background."""
        accel = self._accel = accelerate_pipelines(models.base, models.refiner, self.config,
                                                   self._device, self._dtype)
        if not accel.enabled or not self.config.acceleration.background_prepare:
            return
        self._preparer = BackgroundPreparer(
            accel, self._lock, self._gate, Yielded,
            lambda error: switch_off(accel, 'preparing failed', error))
        accel.on_work = self._preparer.wake
        self._preparer.start()

    def prepare_fast_path(self, sizes=None):
        """
        Prepare (compile, capture) the fast path now, in this thread; return the seconds.

        For benchmarks and tests: `sizes` [(width, height)] are queued first; everything
        pending is done before this returns. A failure switches the fast path off (logged)
        and is not raised: the engine then serves plain diffusers.
        """
        accel = self._accel
        if accel is None or not accel.enabled:
            return 0.0
        start = time.monotonic()
        for width, height in sizes or ():
            accel.queue_size(width, height)
        with self._lock:
            try:
                while accel.prepare_next():
                    pass
            except Exception as error:  # noqa: BLE001 - degrade, never break
                switch_off(accel, 'preparing failed', error)
        return time.monotonic() - start

    @property
    def accelerator(self):
        """Return the fast path's Accelerator (what it applied, its timings), or None."""
        return self._accel

    def _place(self, models):
        """Put the models where the memory mode wants them; upcast an fp16-unsafe VAE."""
        base, refiner = models.base, models.refiner
        mode = self.config.memory_mode
        if vae_needs_fp32(base.vae, self._dtype):
            # Kept in fp32 for good (~170 MB): decoding fp16 SDXL latents overflows otherwise.
            base.vae.to(torch.float32)
        if self.config.vae_tiling:
            base.vae.enable_tiling()
        cuda = self._device.type == 'cuda'
        if mode == 'resident' or not cuda:
            base.to(self._device)
            if refiner is not None:
                refiner.to(self._device)
            return
        # Offloaded modes keep the small VAE resident: it makes the pipelines' device the GPU.
        base.vae.to(self._device)
        if mode == 'model_offload':
            base.text_encoder.to(self._device)
            base.text_encoder_2.to(self._device)
            return
        modules = [base.text_encoder, base.text_encoder_2, base.unet]
        if refiner is not None:
            modules.append(refiner.unet)
        # Lazy on purpose: diffusers.hooks is newer than some supported diffusers, and only
        # this memory mode needs it.
        from diffusers.hooks import apply_group_offloading
        for module in modules:
            apply_group_offloading(module, onload_device=self._device,
                                   offload_device=torch.device('cpu'),
                                   offload_type='leaf_level')

    def _enter_stage(self, stage):
        """In model_offload mode, keep only the UNet of `stage` on the GPU."""
        if self.config.memory_mode != 'model_offload' or self._device.type != 'cuda':
            return
        base, refiner = self._models.base, self._models.refiner
        active = base.unet if stage == 'base' else refiner.unet
        idle = refiner.unet if (stage == 'base' and refiner is not None) else (
            base.unet if stage == 'refiner' else None)
        if idle is not None:
            idle.to(torch.device('cpu'))
        active.to(self._device)

    def _pipeline(self, kind, role):
        """
        Return the base/refiner pipeline for 'text', 'img2img' or 'inpaint'.

        Built once per load with `from_pipe`, which shares the loaded modules (no second copy
        of weights; the fast path's graphed UNet and the offload hooks are shared too).
        """
        models = self._models
        own = models.base if role == 'base' else models.refiner
        if kind == 'text' or (kind == 'img2img' and role == 'refiner'):
            return own
        key = (kind, role)
        if key not in self._derived:
            cls = StableDiffusionXLInpaintPipeline if kind == 'inpaint' \
                else StableDiffusionXLImg2ImgPipeline
            pipeline = cls.from_pipe(own)
            pipeline.set_progress_bar_config(disable=True)
            self._derived[key] = pipeline
        return self._derived[key]

    def unload(self):
        """Drop the pipelines and return their GPU memory."""
        self._derived = {}
        if self._preparer is not None:
            self._preparer.stop(timeout=60)
            self._preparer = None
        self._models = None
        self._scheduler_configs = None
        self._lora_target = None
        self._loras = None
        self._controlnets = None
        if self._accel is not None:
            self._accel.disable('unloaded')
            self._accel = None
        release_cached_memory()

    # ------------------------------------------------------------------ memory
    def estimate_memory_bytes(self, request):
        """Rough peak device bytes to generate `request` (weights resident + activations)."""
        return self._estimate_bytes(self._models, request.width, request.height)

    def _estimate_bytes(self, models, width, height, weights_too=True):
        """Estimate for one width x height image of `models` (activations only, or + weights)."""
        if models is None:
            raise EngineError('models are not loaded: call load() first')
        base, refiner = models.base, models.refiner
        modules = [base.vae, base.text_encoder, base.text_encoder_2]
        unets = [base.unet] + ([refiner.unet] if refiner is not None else [])
        mode = self.config.memory_mode
        if mode == 'resident' or self._device.type != 'cuda':
            weights = module_bytes(modules + unets)
        elif mode == 'model_offload':
            weights = module_bytes(modules) + max(module_bytes([u]) for u in unets)
        else:
            weights = module_bytes([base.vae])
        scale = base.unet.config.block_out_channels[0] / 320
        itemsize = 2 if self._dtype is not None and self._dtype.itemsize == 2 else 4
        tile = getattr(base.vae.config, 'sample_size', 1024) or 1024
        tile = int(tile[0] if isinstance(tile, (list, tuple)) else tile)
        activations = activation_bytes(width, height, itemsize, self.config.vae_tiling, scale,
                                       tile * tile)
        return int((weights if weights_too else 0) + activations)

    def memory_report(self, width, height):
        """
        Return a MemoryReport of the device, with the estimate for one width x height image.

        Safe to call while another thread generates: it only reads. Before `load` the device
        is not known yet and only its configured name is reported.
        """
        models, device = self._models, self._device
        if models is None or device is None:
            return MemoryReport(device=self.config.device)
        if device.type == 'cuda':
            used, free, total = cuda_memory(device)
            return MemoryReport(str(device), used, free, total,
                                self._estimate_bytes(models, width, height),
                                usable_device_bytes(device))
        used, free, total = host_memory()
        return MemoryReport(str(device), used, free, total,
                            self._estimate_bytes(models, width, height, weights_too=False), free)

    def usable_memory_bytes(self):
        """Bytes a generation may use on the GPU (compare with estimate_memory_bytes)."""
        return usable_device_bytes(self._device)

    # -------------------------------------------------------------- generation
    def generate(self, request, on_progress=None, cancel=None, preview_every_n_steps=0):
        """Generate `request.num_images` images; see the package docstring for the contract."""
        started = time.monotonic()  # elapsed_sec counts all of it, scheduler setup included
        request = validate_request(request, self.config.limits)
        if self._models is None:
            raise EngineError('models are not loaded: call load() first')
        text, loras = request_loras(request, self.config.lora_dir, self._lora_target)
        with self._gate.goal(), self._lock:
            try:
                return self._generate_degrading(request, on_progress, cancel,
                                                preview_every_n_steps, text, loras, started)
            except _Cancelled:
                raise GenerationCancelled('generation cancelled; no image was decoded') \
                    from None
            except (EngineError, ValueError):
                raise
            except Exception as error:
                if _is_oom(error):
                    release_cached_memory()
                    raise OutOfMemory(
                        f'out of memory while generating {request.width}x{request.height}: '
                        f'{str(error).splitlines()[0]} Try a smaller size, fewer images, '
                        'vae_tiling, or memory_mode model_offload') from error
                raise EngineError(f'generation failed: {error}') from error

    def _generate_degrading(self, request, on_progress, cancel, preview_every, text, loras,
                            started):
        """Run `_generate`; if the fast path fails inside it, switch it off and run plainly."""
        accel = self._accel
        if accel is None or not accel.enabled:
            return self._generate(request, on_progress, cancel, preview_every, text, loras,
                                  started)
        try:
            return self._generate(request, on_progress, cancel, preview_every, text, loras,
                                  started)
        except (_Cancelled, EngineError, ValueError):
            raise
        except Exception as error:
            if _is_oom(error):
                raise
            switch_off(accel, 'failed during a goal', error)
            return self._generate(request, on_progress, cancel, preview_every, text, loras,
                                  started)

    def _generate(self, request, on_progress, cancel, preview_every, text, loras, started):
        """Run the body of `generate`, without the error translation."""
        models = self._models
        self._loras.apply(loras, fused_mode_needed(models.base, self._accel))
        emphasis = request.emphasis or self.config.emphasis
        lora_hashes = [(lora.name, lora.short_hash) for lora, _ in loras]
        seed = request.seed if request.seed != -1 else random.randrange(
            SEED_LIMIT - request.num_images + 1)
        prepared = prepare_init(request)
        strength = request.denoising_strength if prepared is not None else 1.0
        switch = img2img_switch(strength, request.refiner_switch)
        plan = plan_steps(request.scheduler, self._scheduler_configs['base'], request.steps,
                          switch, models.refiner is not None, strength)
        clock = ProgressClock(plan.total, request.num_images, started)
        control_files, units = self._control_units(request)
        result = GenerationResult()
        init_latents = None
        if prepared is not None:
            init_latents = encode_image(models.base.vae, prepared.init, self._dtype)
        for index in range(request.num_images):
            image_seed = seed + index
            state = _StepState(self, request, plan, clock, index, on_progress, cancel,
                               preview_every)
            generator = torch.Generator('cpu').manual_seed(image_seed)
            latents = self._denoise(request, plan, generator, state, switch,
                                    (init_latents, prepared), text, emphasis, units)
            state.check_cancel()
            state.report('decoding', plan.total)
            decode_start = time.monotonic()
            image = (self._accel.decode(latents) if self._accel is not None
                     else decode_latents(models.base.vae, latents))[0]
            if prepared is not None:
                image = prepared.composite(image)
            clock.decode_finished(time.monotonic() - decode_start)
            result.images.append(image)
            result.seeds.append(image_seed)
            result.infotexts.append(format_infotext(
                request, image_seed, models.base_name,
                models.refiner_name if plan.uses_refiner else '', lora_hashes=lora_hashes,
                emphasis=emphasis, control_hashes=[f.short_hash for f in control_files]))
        result.elapsed_sec = clock.elapsed()
        return result

    def _control_units(self, request):
        """Return (ControlNetFiles, PreparedUnits) of the request's ControlNet units."""
        if not request.control:
            self._controlnets.use([])  # kept while goals use them
            return [], []
        files = request_controlnets(request, self.config.controlnet_dir, self.config.model_dir,
                                    self._lora_target.cross_attention_dim)
        unet = self._models.base.unet
        cfg = request.guidance_scale > 1 and unet.config.time_cond_proj_dim is None
        units = self._controlnets.prepare(request, files, request.width, request.height, cfg)
        if units and self._accel is not None and self._accel.enabled:
            LOG.info('ControlNet goal: its controlled base steps run eagerly (the fast '
                     "path's CUDA graphs take no ControlNet residuals)")
        return files, units

    def _denoise(self, request, plan, generator, state, switch, init, text, emphasis,
                 units=()):
        """
        Run base (and refiner) to latents; stops early when cancelled.

        `init` is (init latents, PreparedInit) for img2img/inpainting, else (None, None);
        `switch` is where the base hands over, as a fraction of the whole schedule; `text`
        is the prompt without its LoRA tags, read with `emphasis`; `units` are the
        ControlNet units (conditioning.controlnet.PreparedUnit) the base pass runs with.
        """
        models = self._models
        init_latents, prepared = init
        kind = 'text' if prepared is None else ('img2img' if prepared.mask is None
                                                else 'inpaint')
        common = {'num_inference_steps': request.steps,
                  'guidance_scale': request.guidance_scale, 'generator': generator,
                  'output_type': 'latent', 'callback_on_step_end': state.on_step_end,
                  'callback_on_step_end_tensor_inputs': ['latents']}
        if kind == 'inpaint':
            common.update(mask_image=prepared.mask, width=request.width,
                          height=request.height)
        state.check_cancel()
        state.stage = 'base'
        self._enter_stage('base')
        base = self._pipeline(kind, 'base')
        base.scheduler = make_scheduler(request.scheduler, self._scheduler_configs['base'])
        base_embeds = encode_base(models.base, text, request.negative_prompt,
                                  request.guidance_scale, self._device, emphasis)
        if kind == 'text':
            inputs = {'width': request.width, 'height': request.height}
        else:
            inputs = {'image': init_latents, 'strength': request.denoising_strength}
        with controlled(base.unet, units, lambda: state.step / plan.total):
            latents = base(denoising_end=switch if plan.uses_refiner else None,
                           **inputs, **base_embeds.as_kwargs(), **common).images
        if not plan.uses_refiner:
            return latents
        state.check_cancel()
        state.stage = 'refiner'
        self._enter_stage('refiner')
        refiner = self._pipeline(kind, 'refiner')
        refiner.scheduler = make_scheduler(request.scheduler,
                                           self._scheduler_configs['refiner'])
        refiner_embeds = encode_refiner(models.base, models.refiner, base_embeds,
                                        text, request.negative_prompt,
                                        request.guidance_scale, self._device, emphasis)
        return refiner(image=latents, denoising_start=switch,
                       **refiner_embeds.as_kwargs(), **common).images


class _StepState:
    """Per-image step bookkeeping shared by the base and refiner callbacks."""

    def __init__(self, engine, request, plan, clock, index, on_progress, cancel, preview_every):
        """Bind the callback targets of one image."""
        self.engine = engine
        self.request = request
        self.total = plan.total
        self.clock = clock
        self.index = index
        self.on_progress = on_progress
        self.cancel = cancel
        self.preview_every = preview_every
        self.stage = 'base'
        self.step = 0

    def check_cancel(self):
        """Raise _Cancelled if the caller set the cancel flag."""
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled()

    def report(self, stage, step, preview=None):
        """Send one Progress event to the caller's callback, if any."""
        if self.on_progress is None:
            return
        self.on_progress(Progress(
            stage=stage, step=step, total_steps=max(self.total, step),
            image_index=self.index, num_images=self.request.num_images,
            elapsed_sec=self.clock.elapsed(), eta_sec=self.clock.eta(self.index),
            preview=preview))

    def on_step_end(self, pipe, _i, _t, callback_kwargs):
        """Handle diffusers' per-step hook: count, fault-inject, preview, report, cancel."""
        self.step += 1
        self.clock.step_finished()
        fault = self.engine.config.fault_oom_at_step
        if fault and self.step == fault:
            raise torch.OutOfMemoryError(
                'CUDA out of memory. Tried to allocate 2.00 GiB (injected by '
                'fault_oom_at_step)')
        preview = None
        if self.preview_every and self.step % self.preview_every == 0:
            preview = latents_to_rgb(callback_kwargs['latents'][0])
        self.report(self.stage, self.step, preview)
        if self.cancel is not None and self.cancel.is_set():
            # Skip the remaining steps at once; output_type='latent' means no decode follows.
            pipe._interrupt = True
        return callback_kwargs
