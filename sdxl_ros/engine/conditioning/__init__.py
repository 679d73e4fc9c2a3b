# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Image conditioning (torch side): ControlNet units on the base pass."""
