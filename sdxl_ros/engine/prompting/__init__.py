# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Prompt conditioning (torch side): chunking, emphasis-weighted encoding, LoRA application."""
