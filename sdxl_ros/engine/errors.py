# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Exceptions the engine raises; the node maps each to a goal result message."""


class EngineError(RuntimeError):
    """Generation or loading failed; the message says why and, where possible, what to do."""


class ModelLoadError(EngineError):
    """A model could not be loaded (missing/truncated file, wrong architecture, no tokenizer)."""


class GenerationCancelled(EngineError):
    """The cancel flag was set; generation stopped and nothing was decoded."""


class OutOfMemory(EngineError):
    """The device ran out of memory; caches were freed so the next request can run."""
