# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Drop, precisely, third-party log lines that tell a user of this package nothing.

Called once from the package's __init__ (torch-free: a filter on a logger name imports
nothing), so it is in place before diffusers is first imported.
"""

import logging

# transformers 5 warns once per image-processor class that diffusers' SDXL pipelines import
# (for IP-Adapter, unused here) when torchvision is absent: two lines at every node start.
_TORCHVISION_LOGGER = 'transformers.utils.import_utils'
_TORCHVISION_FALLBACK = 'requires torchvision (not installed); falling back to'


def _not_torchvision_fallback(record):
    """Keep a record unless it is transformers' "requires torchvision ... falling back"."""
    return _TORCHVISION_FALLBACK not in record.getMessage()


def quiet_library_logs():
    """Install the filters (idempotent)."""
    logger = logging.getLogger(_TORCHVISION_LOGGER)
    if _not_torchvision_fallback not in logger.filters:
        logger.addFilter(_not_torchvision_fallback)
