# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The order in which admitted goals run: one per engine, a bounded FIFO waiting (no ROS inside).

One device runs one generation at a time; a node may drive several (node parameter
`devices`), each with an engine of its own. The node queues a goal once the action server
hands it over (accepted), runs it on the next free engine, and starts the next goal when one
ends: ROS 2's own queueing pattern, with no thread waiting per goal. `max_waiting` bounds the
goals behind the running ones; a goal beyond that is refused (`QueueFull`) instead of waiting
for ever. An engine whose device failed leaves the rotation (`fail`): its goal goes back to the
head of the queue, and no goal is given to that engine again until `restore`.
"""

import threading


class QueueFull(Exception):
    """The queue already holds as many waiting goals as allowed; the message says so."""


class GoalQueue:
    """Running goals (one per engine) and waiting ones in arrival order; thread-safe."""

    def __init__(self, max_waiting, engines=1):
        """Create an empty queue for `engines` engines; at most `max_waiting` goals may wait."""
        if max_waiting < 0:
            raise ValueError(f'max_waiting must be >= 0, got {max_waiting}')
        if engines < 1:
            raise ValueError(f'engines must be >= 1, got {engines}')
        self.max_waiting = max_waiting
        self.engines = engines
        self._waiting = []  # keys in arrival order
        self._running = {}  # key -> engine index, in start order
        self._free = list(range(engines))  # engines in rotation with nothing to run
        self._out = set()  # engines out of rotation (their device failed)
        self._lock = threading.Lock()

    def add(self, key):
        """Queue `key`; return the key that starts now (it, or None); raise QueueFull."""
        with self._lock:
            if len(self._out) == self.engines:
                raise QueueFull('no device is in rotation: every device failed (see '
                                '/diagnostics); reactivate the node')
            if not self._free and len(self._waiting) >= self.max_waiting:
                running = len(self._running)
                raise QueueFull(
                    f'queue is full: {"one goal is" if running == 1 else f"{running} goals are"}'
                    f' running and {len(self._waiting)} waiting (max_queue '
                    f'{self.max_waiting}); try again later')
            self._waiting.append(key)
            return self._start_locked()

    def finish(self, key):
        """End the running `key`; return the key that starts now, or None."""
        with self._lock:
            if key not in self._running:
                raise ValueError(f'{key!r} is not running')
            engine = self._running.pop(key)
            if engine not in self._out:
                self._free.append(engine)
                self._free.sort()
            return self._start_locked()

    def fail(self, key):
        """
        Take the engine of the running `key` out of rotation and queue `key` first again.

        Returns the key that starts now on another free engine (`key`, or None). When no engine
        is left in rotation, `key` is not queued again (see `in_rotation`).
        """
        with self._lock:
            if key not in self._running:
                raise ValueError(f'{key!r} is not running')
            self._out.add(self._running.pop(key))
            if len(self._out) == self.engines:
                return None
            self._waiting.insert(0, key)
            return self._start_locked()

    def restore(self):
        """Put every engine back into rotation; return the keys that start now, in order."""
        with self._lock:
            busy = set(self._running.values())
            self._out.clear()
            self._free = [e for e in range(self.engines) if e not in busy]
            started = []
            while self._free and self._waiting:
                started.append(self._start_locked())
            return started

    def _start_locked(self):
        """Start the first waiting key on the first free engine; return it, or None."""
        if not self._free or not self._waiting:
            return None
        key = self._waiting.pop(0)
        self._running[key] = self._free.pop(0)
        return key

    def engine_of(self, key):
        """Return the engine index `key` runs on, or None when it does not run."""
        with self._lock:
            return self._running.get(key)

    def in_rotation(self):
        """Return the indices of the engines in rotation (device not failed)."""
        with self._lock:
            return [e for e in range(self.engines) if e not in self._out]

    def remove(self, key):
        """Take a waiting `key` out (cancelled); return whether it was waiting."""
        with self._lock:
            if key in self._waiting:
                self._waiting.remove(key)
                return True
            return False

    def clear(self):
        """Take every waiting key out; return them in order."""
        with self._lock:
            keys, self._waiting = self._waiting, []
            return keys

    @property
    def running(self):
        """Return the running key that started first, or None."""
        with self._lock:
            return next(iter(self._running), None)

    def running_keys(self):
        """Return the running keys, in the order they started."""
        with self._lock:
            return list(self._running)

    def positions(self):
        """Return {key: goals ahead of it} for the waiting keys (running ones count)."""
        with self._lock:
            ahead = len(self._running)
            return {key: index + ahead for index, key in enumerate(self._waiting)}

    def __len__(self):
        """Goals running or waiting."""
        with self._lock:
            return len(self._running) + len(self._waiting)
