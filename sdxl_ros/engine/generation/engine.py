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

from sdxl_ros.engine.conditioning.controlnet import ControlNetSet
from sdxl_ros.engine.config import EngineConfig
from sdxl_ros.engine.errors import (EngineError, GenerationCancelled, ModelLoadError,
                                    OutOfMemory)
from sdxl_ros.engine.fast_path.accelerator import Yielded
from sdxl_ros.engine.fast_path.applying import accelerate_pipelines
from sdxl_ros.engine.fast_path.decision import precision_problem, probe_facts
from sdxl_ros.engine.fast_path.preparation import BackgroundPreparer, GoalGate
from sdxl_ros.engine.fast_path.switching import switch_off
from sdxl_ros.engine.generation.goal import Cancelled, Goal
from sdxl_ros.engine.generation.memory import (estimate_bytes, memory_report,
                                               release_cached_memory, usable_device_bytes)
from sdxl_ros.engine.generation.placement import enter_stage, place_models
from sdxl_ros.engine.generation.stages import run_goal
from sdxl_ros.engine.lora_files import request_loras
from sdxl_ros.engine.models.loading import load_models
from sdxl_ros.engine.progress import Progress
from sdxl_ros.engine.prompt_parser import read_prompts
from sdxl_ros.engine.prompting.embeddings import embedding_widths, EmbeddingSet, matched_names
from sdxl_ros.engine.prompting.lora import lora_target, LoraSet
from sdxl_ros.engine.request import SEED_LIMIT, validate_request
from sdxl_ros.engine.torch_features import library_problem, out_of_memory_errors

import torch

LOG = logging.getLogger(__name__)

# Message fragments by which torch reports running out of memory.
_OOM_MARKERS = ('out of memory', "can't allocate memory", 'not enough memory')


def _is_oom(error):
    """Whether an exception is torch running out of (device or host) memory."""
    if isinstance(error, out_of_memory_errors()):
        return True
    return isinstance(error, RuntimeError) and any(
        marker in str(error).lower() for marker in _OOM_MARKERS)


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
        self._embeddings = None
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
    def models(self):
        """Return the LoadedModels (pipelines and names; None before `load`)."""
        return self._models

    @property
    def scheduler_configs(self):
        """Return {'base': ..., 'refiner': ...}: the loaded schedulers' configs (or None)."""
        return self._scheduler_configs

    @property
    def loras(self):
        """Return the LoraSet applied to the loaded models (None before `load`)."""
        return self._loras

    @property
    def controlnets(self):
        """Return the ControlNetSet of the loaded engine (None before `load`)."""
        return self._controlnets

    @property
    def lora_target(self):
        """Return the widths a LoRA must match (lora_files.LoraTarget), or None before load."""
        return self._lora_target

    def _resolve_device_dtype(self):
        """Turn 'auto' device/dtype into torch objects, refusing CUDA when there is none."""
        device = self.config.device
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        cuda = torch.device(device).type == 'cuda'  # 'cuda' or 'cuda:N'
        if cuda and not torch.cuda.is_available():
            raise ModelLoadError(f'device {device} requested but PyTorch sees no CUDA GPU; '
                                 'use device cpu (slow) or auto')
        dtype = self.config.dtype
        if dtype == 'auto' and self.config.acceleration.precision == 'fp8':
            dtype = 'bfloat16'  # what torchao's row-wise FP8 quantisation takes
        elif dtype == 'auto':
            dtype = 'float16' if cuda else 'float32'
        return torch.device(device), getattr(torch, dtype)

    def load(self, on_progress=None):
        """Load base (+ refiner) as configured; raises ModelLoadError with what to fix."""
        start = time.monotonic()
        if on_progress:
            on_progress(Progress(stage='loading'))
        self.unload()
        problem = library_problem()
        if problem:
            raise ModelLoadError(problem)
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
        place_models(models, self.config.memory_mode, self._device, self._dtype,
                     self.config.vae_tiling)
        self._scheduler_configs = {
            'base': dict(models.base.scheduler.config),
            'refiner': dict(models.refiner.scheduler.config) if models.refiner else None}
        self._models = models
        self._lora_target = lora_target(models.base, models.refiner)
        self._loras = LoraSet(models.base)
        self._embeddings = EmbeddingSet(embedding_widths(models.base))
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
        device = self._device
        self._preparer = BackgroundPreparer(
            accel, self._lock, self._gate, Yielded,
            lambda error: switch_off(accel, 'preparing failed', error),
            context=(lambda: torch.cuda.device(device)) if device.type == 'cuda' else None)
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

    def enter_stage(self, stage):
        """In model_offload mode, keep only the UNet of `stage` on the GPU."""
        enter_stage(self._models, stage, self.config.memory_mode, self._device)

    def pipeline(self, kind, role):
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
        self._embeddings = None
        self._controlnets = None
        if self._accel is not None:
            self._accel.disable('unloaded')
            self._accel = None
        release_cached_memory()

    # ------------------------------------------------------------------ memory
    def estimate_memory_bytes(self, request):
        """Rough peak device bytes to generate `request` (weights resident + activations)."""
        if self._models is None:
            raise EngineError('models are not loaded: call load() first')
        return estimate_bytes(self._models, request.width, request.height,
                              self.config.memory_mode, self._device, self._dtype,
                              self.config.vae_tiling)

    def memory_report(self, width, height):
        """Return a MemoryReport of the device; only reads, so safe while generating."""
        return memory_report(self._models, self._device, self._dtype, self.config, width,
                             height)

    def usable_memory_bytes(self):
        """Bytes a generation may use on the GPU (compare with estimate_memory_bytes)."""
        return usable_device_bytes(self._device)

    # -------------------------------------------------------------- generation
    def generate(self, request, on_progress=None, cancel=None, preview_every_n_steps=0):
        """Generate `request.num_images` images; see the package docstring for the contract."""
        started = time.monotonic()  # elapsed_sec counts all of it, scheduler setup included
        goal = self._check_inputs(request, started)                               # stage 1
        goal.on_progress, goal.cancel = on_progress, cancel
        goal.preview_every = preview_every_n_steps
        with self._gate.goal(), self._lock:
            try:
                return self._run(goal)
            except Cancelled:
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

    def _check_inputs(self, request, started):
        """Stage 1: validate the request, find its LoRA files, resolve the seed; a Goal."""
        request = validate_request(request, self.config.limits)
        if self._models is None:
            raise EngineError('models are not loaded: call load() first')
        _, loras = request_loras(request, self.config.lora_dir, self._lora_target,
                                 comments=self.config.prompt_comments)
        text, negative, warnings = read_prompts(request.prompt, request.negative_prompt,
                                                self.config.prompt_comments)
        texts = [text, negative]
        embeddings = self._embeddings.for_texts(texts, self.config.embeddings_dir)
        models = self._models
        ti_hashes = [(name, embeddings[name].file.short_hash) for name in matched_names(
            models.base.tokenizer or models.base.tokenizer_2, embeddings, texts)]
        seed = request.seed if request.seed != -1 else random.randrange(
            SEED_LIMIT - request.num_images + 1)
        return Goal(request=request, text=text, loras=loras, embeddings=embeddings,
                    ti_hashes=ti_hashes,
                    emphasis=request.emphasis or self.config.emphasis, seed=seed,
                    started=started, fault_oom_at_step=self.config.fault_oom_at_step,
                    negative=negative, warnings=warnings)

    def _run(self, goal):
        """
        Run the goal's stages (generation/stages.py), once more if the fast path fails.

        A fast-path failure inside the stages switches the fast path off and runs the goal
        again without it: logged with the seconds lost, and a 'retrying' progress event.
        """
        accel = self._accel
        if accel is None or not accel.enabled:
            return run_goal(self, goal)
        try:
            return run_goal(self, goal)
        except (Cancelled, EngineError, ValueError):
            raise
        except Exception as error:
            if _is_oom(error):
                raise
            lost = time.monotonic() - goal.started
            switch_off(accel, 'failed during a goal', error)
            LOG.warning('the goal runs again without the fast path; %.2f s of its work was '
                        'lost', lost)
            goal.retry(lost)
            return run_goal(self, goal)
