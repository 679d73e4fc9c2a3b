# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Generation (torch side): SdxlEngine, the numbered stages of a goal, decoding, memory."""
