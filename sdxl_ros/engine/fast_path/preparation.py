# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Background preparation: compile and capture between goals, never in front of one.

A goal announces itself (`GoalGate.goal`) before it takes the engine's lock; the preparer
thread does one unit of work at a time under that lock, only while no goal waits, and its
work checks `GoalGate.waiting` at every UNet stage so that a goal arriving mid-unit waits for
one stage at most (the unit resumes later: what was compiled stays compiled). No torch here:
the work source (the Accelerator) is given, so the scheduling is tested with a fake one.
"""

import contextlib
import logging
import threading

LOG = logging.getLogger(__name__)


class GoalGate:
    """Counts goals that want the engine; preparation yields while any does."""

    def __init__(self):
        """Start with no goal waiting."""
        self._count = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def goal(self):
        """Mark a goal as waiting or running for the duration of the block."""
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def waiting(self):
        """Whether a goal waits for, or holds, the engine."""
        return self._count > 0

    def wait_until_idle(self, stop, timeout=0.5):
        """Block while goals are waiting (up to `timeout` per check); False if `stop` is set."""
        with self._changed:
            while self._count > 0 and not stop.is_set():
                self._changed.wait(timeout)
        return not stop.is_set()


class BackgroundPreparer:
    """
    A daemon thread that drains `source`'s pending work between goals.

    `source` has `has_work()`, `prepare_next(should_yield)` (raises `yielded` to give way)
    and is switched off by `on_failure(error)` when a unit fails for any other reason.
    """

    def __init__(self, source, lock, gate, yielded, on_failure, idle_sec=1.0, context=None):
        """
        Bind the work source, the engine's lock and its goal gate.

        `context` (a callable returning a context manager) is entered by the thread for its
        whole life: the engine passes its CUDA device, since a new thread starts on device 0
        and an engine on cuda:1 would otherwise capture its graphs on the wrong GPU.
        """
        self.source = source
        self.context = context
        self.lock = lock
        self.gate = gate
        self.yielded = yielded
        self.on_failure = on_failure
        self.idle_sec = idle_sec
        self.units_done = 0
        self.yields = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None

    def start(self):
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name='sdxl-prepare',
                                            daemon=True)
            self._thread.start()
        return self

    def wake(self):
        """Tell the thread new work is queued."""
        self._wake.set()

    def stop(self, timeout=None):
        """Stop after the current stage; wait up to `timeout` seconds for the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self):
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _should_yield(self):
        """Give way to a goal, or to stop()."""
        return self.gate.waiting() or self._stop.is_set()

    def _loop(self):
        """Run `_drain` inside the engine's device context."""
        with (self.context() if self.context is not None else contextlib.nullcontext()):
            self._drain()

    def _drain(self):
        """Prepare while there is work and no goal; sleep otherwise."""
        while not self._stop.is_set():
            if not self.source.has_work():
                self._wake.wait(self.idle_sec)
                self._wake.clear()
                continue
            if not self.gate.wait_until_idle(self._stop):
                break
            with self.lock:
                if self._should_yield():
                    continue
                try:
                    self.source.prepare_next(self._should_yield)
                    self.units_done += 1
                except self.yielded:
                    self.yields += 1
                except Exception as error:  # noqa: BLE001 - the fast path degrades instead
                    self.on_failure(error)
                    return
