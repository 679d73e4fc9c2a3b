# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The node's engines, one per device (node parameter `devices`), and which of them failed.

Without `devices` the node has one engine on its `device`, exactly as before. With it, each
device gets an EngineSlot with that device in its configuration; the lifecycle loads and frees
them all, the scheduler hands each goal to the next free one (goal_scheduler.py), and a device
that fails during a goal is taken out of rotation here, with the reason /diagnostics shows,
until the node is activated again. No torch here: device checks are the engine's
(engine/devices.py).
"""

from dataclasses import replace

from sdxl_ros.engine.devices import device_problems, engine_device, weight_bytes
from sdxl_ros.engine.engine_slot import EngineSlot
from sdxl_ros.engine.errors import ModelLoadError


class DeviceFleet:
    """EngineSlots by device name, the names in order, and why a device left the rotation."""

    def __init__(self, names, several, log, scheduler, slot_class=EngineSlot):
        """One slot per name; `several`: names come from `devices` (else one `device`)."""
        self.names = list(names)
        self.several = several
        self.slots = [slot_class(log) for _ in self.names]
        self.failures = [''] * len(self.names)
        self._log = log
        self._scheduler = scheduler

    def check(self, params):
        """Return why the configured devices cannot serve (none checked without `devices`)."""
        if not self.several:
            return []
        config = params.engine_config()
        try:
            return device_problems(self.names, lambda size: weight_bytes(config, size),
                                   params.dtype)
        except ModelLoadError as error:  # reported by the model check as well
            return [str(error)]

    def configure(self, config):
        """Want the models of `config` on every device."""
        if not self.several:
            self.names[0] = config.device  # the device parameter may change at run time
        for name, slot in zip(self.names, self.slots):
            slot.configure(replace(config, device=engine_device(name)) if self.several
                           else config)

    @property
    def configured(self):
        """Whether a configuration was given (and not cleared)."""
        return self.slots[0].configured

    def load(self):
        """Load the models on every device; '' or why one cannot (then none holds models)."""
        for name, slot in zip(self.names, self.slots):
            problem = slot.load()
            if problem:
                if self.several:
                    self.unload()
                    return f'{name}: {problem}'
                return problem
        self.failures = [''] * len(self.names)
        self._scheduler.restore()
        return ''

    def unload(self):
        """Free the models on every device; return whether any were loaded."""
        unloaded = [slot.unload() for slot in self.slots]  # every one, not up to the first
        return any(unloaded)

    def clear(self):
        """Free the models and forget the configuration; return whether any were loaded."""
        cleared = [slot.clear() for slot in self.slots]
        return any(cleared)

    @property
    def lora_target(self):
        """Return the LoRA widths of the loaded base (the same models on every device)."""
        return next((slot.lora_target for slot in self.slots if slot.is_loaded), None)

    def device_failed(self, index, message):
        """Record that device `index` failed during a goal (the scheduler takes it out)."""
        self.failures[index] = message
        self._log.error(f'{message}: {self.names[index]} is out of rotation until the node '
                        'is activated again')

    def retry(self, goal_handle):
        """Wait for another engine for a goal whose device failed; its index, or None."""
        return self._scheduler.retry(goal_handle)
