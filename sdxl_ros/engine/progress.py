# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Progress reports and the elapsed/ETA bookkeeping behind them."""

from dataclasses import dataclass
import time
from typing import Optional

import numpy as np

# 'retrying': the fast path failed inside the goal, which runs again without it.
STAGES = ('loading', 'base', 'refiner', 'decoding', 'retrying')


@dataclass
class Progress:
    """One progress event; `step` is 1-based over base + refiner of the current image."""

    stage: str
    step: int = 0
    total_steps: int = 0
    image_index: int = 0
    num_images: int = 1
    elapsed_sec: float = 0.0
    eta_sec: float = 0.0
    preview: Optional[np.ndarray] = None


class ProgressClock:
    """
    Estimates time left for a whole request from the pace of the steps done so far.

    Each image costs its denoising steps plus one decode, counted as one step's worth until
    a real decode has been timed.
    """

    def __init__(self, steps_per_image, num_images, start=None):
        """Start the clock (at monotonic `start`, default now) for a request's images."""
        self.start = time.monotonic() if start is None else start
        self.steps_per_image = max(1, steps_per_image)
        self.num_images = num_images
        self.steps_done = 0
        self.step_time = 0.0
        self.decode_time = None

    def elapsed(self):
        """Seconds since the request started."""
        return time.monotonic() - self.start

    def step_finished(self):
        """Record one finished denoising step."""
        self.steps_done += 1

    def decode_finished(self, seconds):
        """Record how long a VAE decode took."""
        self.decode_time = seconds

    def eta(self, image_index, decoded=False):
        """Estimated seconds left for the whole request."""
        if self.steps_done == 0:
            return 0.0
        decode_total = (self.decode_time or 0.0) * (image_index + (1 if decoded else 0))
        per_step = max(0.0, self.elapsed() - decode_total) / self.steps_done
        decode = self.decode_time if self.decode_time is not None else per_step
        total_steps = self.steps_per_image * self.num_images
        images_left = self.num_images - image_index - (1 if decoded else 0)
        return max(0.0, (total_steps - self.steps_done) * per_step + images_left * decode)
