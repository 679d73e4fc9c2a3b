# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""What one generation returns: the images with their seeds and infotexts."""

from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class GenerationResult:
    """Images (uint8 HxWx3 RGB), the seed and infotext of each, and the total time."""

    images: List[np.ndarray] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)
    infotexts: List[str] = field(default_factory=list)
    elapsed_sec: float = 0.0
