# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
How a schedule is cut between base and refiner, predicted before the pipelines run.

The node reports progress as step i of a known total, so the split must be known up front and
match the cut the diffusers pipelines make from `denoising_end` / `denoising_start`.
"""

from dataclasses import dataclass

from sdxl_ros.engine.schedulers import make_scheduler


@dataclass(frozen=True)
class StepPlan:
    """How many denoising-loop iterations base and refiner run for one image."""

    base_steps: int
    refiner_steps: int

    @property
    def total(self):
        """Return the iterations of base and refiner together (what progress counts)."""
        return self.base_steps + self.refiner_steps

    @property
    def uses_refiner(self):
        """Whether the refiner runs at all."""
        return self.refiner_steps > 0


def img2img_switch(strength, switch):
    """
    Return the denoising_end/denoising_start that gives the refiner 1 - switch of an img2img run.

    diffusers reads both as fractions of the whole schedule, while img2img runs only its last
    `strength` part; A1111's "Refiner switch at" is a fraction of the steps actually run. So
    the base stops at noise level strength * (1 - switch), i.e. 1 - strength * (1 - switch)
    of the schedule (= switch for text-to-image, strength 1).
    """
    if strength >= 1.0:
        return switch
    return 1.0 - strength * (1.0 - switch)


def img2img_strength(strength, steps, a1111_count=True):
    """
    Return the strength to hand diffusers so that img2img runs A1111's number of steps.

    diffusers runs the last int(steps * strength) steps of a `steps`-step schedule; A1111's
    k-diffusion samplers run the last int(min(strength, 0.999) * steps) + 1 of the same
    schedule (one more, so at least one). The strength returned makes diffusers cut that
    many; `a1111_count` False keeps diffusers' count (`strength` unchanged). Full strength
    (text-to-image) stays 1.0.
    """
    if strength >= 1.0 or not a1111_count:
        return strength
    count = int(min(strength, 0.999) * steps) + 1
    return min(1.0, (count + 0.5) / steps)


def plan_steps(scheduler_name, scheduler_config, steps, switch, has_refiner, strength=1.0):
    """
    Predict the base/refiner split exactly as diffusers will cut the schedule.

    The base keeps timesteps >= the cutoff, the refiner those below it (second-order samplers
    count each model evaluation, as the pipelines' loops do). If either side would get no
    step, the base runs the whole schedule alone. With `strength` < 1 (img2img) the base
    starts where diffusers' img2img does, int(steps * strength) steps before the end, and
    `switch` must already be `img2img_switch(strength, ...)`.
    """
    base = make_scheduler(scheduler_name, scheduler_config)
    base.set_timesteps(steps)
    timesteps = [int(t) for t in base.timesteps]
    if strength < 1.0:
        # As diffusers' StableDiffusionXLImg2ImgPipeline.get_timesteps.
        t_start = max(steps - min(int(steps * strength), steps), 0)
        timesteps = timesteps[t_start * base.order:]
    if not has_refiner or switch >= 1.0:
        return StepPlan(len(timesteps), 0)
    train_steps = base.config.num_train_timesteps
    cutoff = int(round(train_steps - switch * train_steps))
    base_steps = sum(1 for t in timesteps if t >= cutoff)
    refiner = make_scheduler(scheduler_name, scheduler_config)
    refiner.set_timesteps(steps)
    refiner_steps = int(sum(1 for t in refiner.timesteps if int(t) < cutoff))
    if refiner.order == 2 and refiner_steps % 2 == 0:
        refiner_steps += 1
    if base_steps == 0 or refiner_steps == 0:
        return StepPlan(len(timesteps), 0)
    return StepPlan(base_steps, refiner_steps)
