# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The `sdxl_generate` command-line client: a plain ROS 2 action client of ~/generate."""
