# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The fast path (torch side): decide, compile regions, CUDA graphs, prepare, switch off."""
