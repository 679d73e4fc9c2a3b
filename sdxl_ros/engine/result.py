# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""What one generation returns: the images with their seeds and infotexts."""

from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class GenerationResult:
    """Images (uint8 HxWx3 RGB), the seed and infotext of each, the total time, warnings."""

    images: List[np.ndarray] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)
    infotexts: List[str] = field(default_factory=list)
    elapsed_sec: float = 0.0
    #: What the request asked for that was not applied (e.g. an unsupported `<hypernet:...>`
    #: tag), one sentence each; the node appends them to the result message.
    warnings: List[str] = field(default_factory=list)
