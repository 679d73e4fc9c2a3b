# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
EngineSlot: the one SdxlEngine of a server, built, loaded, reloaded and freed in one place.

A server (the ROS node) changes its wishes from several threads: a lifecycle transition says
"load" or "free", a parameter change says "these models now", a goal says "I need the engine".
The slot keeps the wishes (the wanted configuration, and whether models may be held at all)
under a short lock, so a parameter change never waits for a generation, and the engine under
a long one (held while loading, generating or swapping engines). Models are held only between
`load()` and `unload()`/`clear()`: a goal that reaches `engine()` after an unload is refused
instead of loading them again. Freeing happens outside both locks. No ROS here, so it is
tested without a node; docs/threads.md has the lock order.
"""

from contextlib import contextmanager, nullcontext
from dataclasses import replace
import threading
import time

from sdxl_ros.engine.config import needs_reload
from sdxl_ros.engine.errors import ModelLoadError
from sdxl_ros.engine.model_files import (pick_single_file_config, read_checkpoint_shapes,
                                         resolve_source)

#: Why `engine()` refuses between `unload()` and the next `load()`.
NOT_SERVING = 'the models are unloaded (the node is not active)'


def check_model_files(config):
    """
    Return why the configured models cannot be loaded, without loading weights ('' if none).

    Finds each model and reads the header of single-file checkpoints (shapes only), so a
    missing, truncated, damaged or wrong-architecture file is reported in milliseconds.
    """
    for role, name in (('base', config.base_model), ('refiner', config.refiner_model)):
        if not name:
            continue
        try:
            source = resolve_source(name, config.model_dir, role)
            if source.kind == 'single_file':
                pick_single_file_config(read_checkpoint_shapes(source.location), role,
                                        source.location)
        except ModelLoadError as error:
            return str(error)
    return ''


def _sdxl_engine_class():
    """
    Return SdxlEngine, importing the torch side on first use.

    The one door from the torch-free top level to the torch rooms: the node imports this
    module and builds its slot without torch; torch loads with the first model load.
    """
    from sdxl_ros.engine.torch_features import check_libraries
    check_libraries()   # a lock that does not suit this torch: one line, not a traceback
    from sdxl_ros.engine.generation.engine import SdxlEngine
    return SdxlEngine


class EngineSlot:
    """Holds at most one SdxlEngine; thread-safe; `log` has info() and error() (or is None)."""

    def __init__(self, log=None, engine_class=None):
        """Start empty: nothing configured, nothing loaded (engine_class: SdxlEngine)."""
        self._log = log
        self._engine_class = engine_class
        self._wanted_lock = threading.Lock()
        self._wanted = None
        self._serving = False  # between load() and unload()/clear(): models may be held
        self._engine_lock = threading.Lock()
        self._engine = None

    def configure(self, config):
        """Want the models `config` names; a loaded engine with other models reloads on use."""
        with self._wanted_lock:
            self._wanted = config

    @property
    def configured(self):
        """Whether a configuration was given (and not cleared)."""
        with self._wanted_lock:
            return self._wanted is not None

    @property
    def is_loaded(self):
        """Whether an engine with loaded models is held (it may still be due a reload)."""
        engine = self._engine
        return engine is not None and engine.is_loaded

    @property
    def lora_target(self):
        """Return the loaded base's LoRA widths (lora_files.LoraTarget), or None."""
        engine = self._engine
        return engine.lora_target if engine is not None else None

    def memory_report(self, width, height):
        """Return the held engine's MemoryReport (engine.memory_report), or None; never waits."""
        engine = self._engine
        return engine.memory_report(width, height) if engine is not None else None

    def load(self, on_loading=None):
        """
        Start serving: load the wanted models unless loaded; return '' or why they cannot load.

        After a failed load the slot still serves: the next `engine()` tries again.
        """
        with self._wanted_lock:
            self._serving = True
        with self._engine_lock, self._on_device():
            return self._load_if_needed(on_loading)

    @contextmanager
    def engine(self, on_loading=None):
        """
        Hold the loaded engine for one generation; load or reload it first when needed.

        `on_loading()` is called before a load starts. Raises ModelLoadError with the reason
        when the models cannot be loaded (the next use tries again), or when the slot does
        not serve (`unload()` came after the last `load()`): that never loads them.
        """
        with self._engine_lock, self._on_device():
            problem = self._load_if_needed(on_loading)
            if problem:
                raise ModelLoadError(problem)
            yield self._engine

    def _on_device(self):
        """Make the wanted GPU this thread's current CUDA device (cuda:N of several GPUs)."""
        with self._wanted_lock:
            device = self._wanted.device if self._wanted is not None else ''
        if not device.startswith('cuda:'):
            return nullcontext()
        import torch  # only here: a CUDA index was configured
        return torch.cuda.device(int(device.split(':')[1]))

    def unload(self):
        """
        Stop serving and free the models; return whether any were loaded.

        Waits for a running generation (it holds the engine), not for the engine's freeing
        under the lock: `SdxlEngine.unload` may wait for its background preparer.
        """
        with self._wanted_lock:
            self._serving = False
        with self._engine_lock:
            engine, self._engine = self._engine, None
        return self._free(engine)

    def clear(self):
        """Free the models and forget the configuration; return whether any were loaded."""
        with self._wanted_lock:
            self._wanted = None
        return self.unload()

    @staticmethod
    def _free(engine):
        """Free an engine no longer held by the slot (no lock held); whether it was loaded."""
        if engine is None or not engine.is_loaded:
            return False
        engine.unload()
        return True

    def _load_if_needed(self, on_loading):
        """Make the held engine match the wanted configuration (engine lock held)."""
        with self._wanted_lock:
            config, serving = self._wanted, self._serving
        if config is None:
            return 'the node is not configured'
        if not serving:
            return NOT_SERVING
        engine = self._engine
        if engine is not None and engine.is_loaded and not needs_reload(engine.config, config):
            engine.config.limits = config.limits
            engine.config.emphasis, engine.config.lora_dir = config.emphasis, config.lora_dir
            engine.config.embeddings_dir = config.embeddings_dir
            return ''
        if on_loading is not None:
            on_loading()
        # The goal that asked waits for the old models to go before the new ones load.
        self._engine = None
        self._free(engine)
        return self._load(config)

    def _load(self, config):
        """Build and load an engine for `config` (engine lock held); '' or the reason."""
        names = f'base {config.base_model!r}, refiner {config.refiner_model!r}'
        self._info(f'loading models: {names}')
        started = time.monotonic()
        try:
            engine = (self._engine_class or _sdxl_engine_class())(replace(config))
            engine.load()
        except ModelLoadError as error:
            reason = f'cannot load models ({names}): {error}'
            if self._log is not None:
                self._log.error(reason)
            return reason
        self._engine = engine
        self._info(f'models loaded in {time.monotonic() - started:.1f} s')
        return ''

    def _info(self, message):
        """Log `message` at info level, if there is a log."""
        if self._log is not None:
            self._log.info(message)
