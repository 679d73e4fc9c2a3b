# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""EngineSlot and check_model_files on the tiny preset, without ROS."""

from dataclasses import replace
import threading

from engine_fixtures import TINY_LIMITS, tiny_request
import pytest
from sdxl_ros.engine import EngineConfig, ModelLoadError
from sdxl_ros.engine.engine_slot import check_model_files, EngineSlot, NOT_SERVING
from sdxl_ros.engine.generation.engine import SdxlEngine
from sdxl_ros.engine.request import Limits

TINY = EngineConfig(base_model='tiny', refiner_model='tiny', device='cpu', limits=TINY_LIMITS)


class _Log:
    """Collects what the slot logs."""

    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(('info', message))

    def error(self, message):
        self.lines.append(('error', message))

    def count(self, text):
        return sum(text in message for _, message in self.lines)


def test_unconfigured_slot_says_so():
    slot = EngineSlot()
    assert not slot.configured and not slot.is_loaded
    assert slot.load() == 'the node is not configured'
    with pytest.raises(ModelLoadError, match='not configured'):
        with slot.engine():
            pass
    assert slot.unload() is False


def test_load_use_reload_and_free():
    log = _Log()
    slot = EngineSlot(log)
    slot.configure(TINY)
    assert slot.load() == '' and slot.is_loaded
    assert slot.load() == ''  # already loaded: nothing happens
    assert log.count('loading models') == 1
    loads = []
    # Other limits: the same models serve, with the new limits.
    slot.configure(replace(TINY, limits=Limits(min_side=64, max_steps=3)))
    with slot.engine(lambda: loads.append('load')) as engine:
        assert engine.config.limits.max_steps == 3
        assert engine.model_names == ('tiny', 'tiny')
    assert loads == []
    # Other models: reloaded before the next use, with the on_loading call first.
    slot.configure(replace(TINY, refiner_model=''))
    with slot.engine(lambda: loads.append('load')) as engine:
        assert engine.model_names == ('tiny', '')
        assert len(engine.generate(tiny_request(steps=2)).images) == 1
    assert loads == ['load'] and log.count('loading models') == 2
    assert slot.unload() is True and not slot.is_loaded
    assert slot.unload() is False  # said once
    assert slot.configured
    assert slot.clear() is False and not slot.configured


def test_a_failed_load_reports_why_and_the_next_use_tries_again(tmp_path):
    log = _Log()
    slot = EngineSlot(log)
    slot.configure(replace(TINY, base_model=str(tmp_path / 'gone.safetensors')))
    reason = slot.load()
    assert reason.startswith('cannot load models (base ') and 'not found' in reason
    assert log.count('cannot load models') == 1 and not slot.is_loaded
    with pytest.raises(ModelLoadError, match='not found'):
        with slot.engine():
            pass
    slot.configure(TINY)
    with slot.engine() as engine:
        assert engine.is_loaded


def test_configure_does_not_wait_for_a_running_generation():
    slot = EngineSlot()
    slot.configure(TINY)
    assert slot.load() == ''
    changed = threading.Event()
    with slot.engine():
        thread = threading.Thread(
            target=lambda: (slot.configure(replace(TINY, refiner_model='')), changed.set()))
        thread.start()
        assert changed.wait(5), 'configure waited for the engine'
    thread.join(5)


def test_after_unload_a_goal_never_loads_the_models_again():
    # A goal checked that the node is active, then a deactivate unloaded the slot before the
    # goal asked for the engine: the slot refuses instead of loading ~13 GB for an inactive
    # node. load() (activate) serves again.
    log = _Log()
    slot = EngineSlot(log)
    slot.configure(TINY)
    assert slot.load() == ''
    checked, unloaded, outcome = threading.Event(), threading.Event(), []

    def goal():
        checked.set()
        assert unloaded.wait(10)
        try:
            with slot.engine():
                outcome.append('engine')
        except ModelLoadError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=goal)
    thread.start()
    assert checked.wait(10)
    assert slot.unload() is True
    unloaded.set()
    thread.join(30)
    assert outcome == [NOT_SERVING] and not slot.is_loaded
    assert log.count('loading models') == 1
    slot.configure(replace(TINY, refiner_model=''))  # a parameter change does not load either
    with pytest.raises(ModelLoadError, match='unloaded'):
        with slot.engine():
            pass
    assert slot.load() == '' and slot.is_loaded
    with slot.engine() as engine:
        assert engine.model_names == ('tiny', '')


def test_unload_waits_for_the_running_generation_then_frees_outside_the_lock():
    freeing, release = threading.Event(), threading.Event()

    class SlowToFree(SdxlEngine):
        """An engine whose freeing blocks, as waiting for its background preparer does."""

        def unload(self):
            if self.is_loaded:
                freeing.set()
                assert release.wait(10)
            super().unload()

    slot = EngineSlot(engine_class=SlowToFree)
    slot.configure(TINY)
    assert slot.load() == ''
    results = []
    unloader = threading.Thread(target=lambda: results.append(slot.unload()))
    with slot.engine():
        unloader.start()
        assert not freeing.wait(0.2), 'freed under a running generation'
    assert freeing.wait(10)  # the generation ended: the engine is being freed
    # Meanwhile the slot answers at once, and says why it will not serve a goal.
    slot.configure(replace(TINY, refiner_model=''))
    assert not slot.is_loaded
    with pytest.raises(ModelLoadError, match='unloaded'):
        with slot.engine():
            pass
    release.set()
    unloader.join(10)
    assert results == [True]


def test_check_model_files_reads_only_headers(tmp_path):
    assert check_model_files(TINY) == ''
    assert check_model_files(replace(TINY, refiner_model='')) == ''
    missing = check_model_files(replace(TINY, base_model='nothing.safetensors',
                                        model_dir=str(tmp_path)))
    assert 'not found' in missing
    (tmp_path / 'garbage.safetensors').write_bytes(b'\x07' * 64)
    garbage = check_model_files(replace(TINY, refiner_model='garbage.safetensors',
                                        model_dir=str(tmp_path)))
    assert 'damaged or truncated' in garbage
