# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Model loading (torch side): presets, single-file checkpoints, diffusers folders, tokenizers."""
