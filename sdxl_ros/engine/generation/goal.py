# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The state of one goal (a generate call) as its stages fill it in, and of each of its images.

One object instead of arguments threaded through the stages (generation/stages.py), so a
stage added later (prompt editing, ControlNet) reads and writes what it needs here.
"""

from dataclasses import dataclass, field
import threading
from typing import Callable, List, Optional, Tuple

from sdxl_ros.engine.generation.preview import latents_to_rgb
from sdxl_ros.engine.progress import Progress, ProgressClock
from sdxl_ros.engine.request import GenerationRequest
from sdxl_ros.engine.torch_features import out_of_memory_error

import torch


class Cancelled(Exception):
    """Internal: raised from the step callback path when the cancel flag is seen."""


@dataclass
class Goal:
    """One generate call: what was asked, and what the stages worked out for it."""

    # Given by SdxlEngine.generate (stage 1, checked).
    request: GenerationRequest
    text: str                                  # the prompt without comments and tags
    loras: List[Tuple[object, float]]          # (lora_files.LoraFile, weight)
    emphasis: str
    seed: int                                  # of image 0; image i uses seed + i
    started: float                             # monotonic; elapsed_sec counts from here
    # Textual-inversion embeddings the prompt or negative names ({name: Embedding}) and
    # their [(name, short hash)] as infotext writes them.
    embeddings: dict = field(default_factory=dict)
    ti_hashes: List[Tuple[str, str]] = field(default_factory=list)
    on_progress: Optional[Callable[[Progress], None]] = None
    cancel: Optional[threading.Event] = None
    preview_every: int = 0
    fault_oom_at_step: int = 0                 # EngineConfig test hook (0 = off)
    negative: str = ''                         # the negative prompt, as `text`
    warnings: List[str] = field(default_factory=list)  # tags not applied, for the result
    # Worked out by stage 2 (prepare).
    kind: str = 'text'                         # 'text', 'img2img' or 'inpaint'
    prepared: Optional[object] = None          # init_image.PreparedInit
    init_latents: Optional[torch.Tensor] = None
    switch: float = 1.0                        # where the base hands over (fraction)
    strength: float = 1.0                      # img2img strength handed to diffusers
    plan: Optional[object] = None              # step_plan.StepPlan
    clock: Optional[ProgressClock] = None
    prompts: Optional[object] = None           # prompt_schedule.PromptPlan
    control_files: List[object] = field(default_factory=list)   # controlnet_files.ControlNetFile
    control_units: List[object] = field(default_factory=list)   # controlnet.PreparedUnit
    # 2 when the fast path failed inside this goal and it runs again without it.
    attempt: int = 1
    lost_sec: float = 0.0                      # the work the failed attempt threw away

    @property
    def lora_hashes(self):
        """Return [(name, short hash)] of the goal's LoRAs, as infotext writes them."""
        return [(lora.name, lora.short_hash) for lora, _ in self.loras]

    def check_cancel(self):
        """Raise Cancelled if the caller set the cancel flag."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def retry(self, lost_sec):
        """Start attempt 2 (the fast path is off now) and say so in the feedback."""
        self.attempt += 1
        self.lost_sec = lost_sec
        if self.on_progress is not None:
            self.on_progress(Progress(stage='retrying', num_images=self.request.num_images,
                                      elapsed_sec=lost_sec))


@dataclass
class ImageSteps:
    """Per-image step bookkeeping shared by the base and refiner step callbacks."""

    goal: Goal
    index: int
    stage: str = 'base'
    step: int = 0
    prompts: list = field(default_factory=list)  # stage 3's guidance.StagePrompts per stage

    def report(self, stage, step, preview=None):
        """Send one Progress event to the caller's callback, if any."""
        goal = self.goal
        if goal.on_progress is None:
            return
        goal.on_progress(Progress(
            stage=stage, step=step, total_steps=max(goal.plan.total, step),
            image_index=self.index, num_images=goal.request.num_images,
            elapsed_sec=goal.clock.elapsed(), eta_sec=goal.clock.eta(self.index),
            preview=preview))

    def on_step_end(self, pipe, _i, _t, callback_kwargs):
        """Handle diffusers' per-step hook: count, fault-inject, preview, report, cancel."""
        goal = self.goal
        self.step += 1
        goal.clock.step_finished()
        if goal.fault_oom_at_step and self.step == goal.fault_oom_at_step:
            raise out_of_memory_error()(
                'CUDA out of memory. Tried to allocate 2.00 GiB (injected by '
                'fault_oom_at_step)')
        preview = None
        if goal.preview_every and self.step % goal.preview_every == 0:
            preview = latents_to_rgb(callback_kwargs['latents'][0])
        self.report(self.stage, self.step, preview)
        if goal.cancel is not None and goal.cancel.is_set():
            # Skip the remaining steps at once; output_type='latent' means no decode follows.
            pipe._interrupt = True
        return callback_kwargs
