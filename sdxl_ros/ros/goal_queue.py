# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The order in which admitted goals run: one running, a bounded FIFO waiting (no ROS inside).

One GPU runs one generation at a time. The node queues a goal once the action server hands
it over (accepted), runs it when nothing else runs, and starts the next when it ends: ROS 2's
own queueing pattern, with no thread waiting per goal. `max_waiting` bounds the goals behind
the running one; a goal beyond that is refused (`QueueFull`) instead of waiting for ever.
"""

import threading


class QueueFull(Exception):
    """The queue already holds as many waiting goals as allowed; the message says so."""


class GoalQueue:
    """One running goal and the waiting ones in arrival order; thread-safe; keys are hashable."""

    def __init__(self, max_waiting):
        """Create an empty queue; at most `max_waiting` goals may wait behind the running one."""
        if max_waiting < 0:
            raise ValueError(f'max_waiting must be >= 0, got {max_waiting}')
        self.max_waiting = max_waiting
        self._waiting = []  # keys in arrival order
        self._running = None
        self._lock = threading.Lock()

    def add(self, key):
        """Queue `key`; return the key that starts now (it, or None); raise QueueFull."""
        with self._lock:
            taken = (self._running is not None) + len(self._waiting)
            if taken > self.max_waiting:
                raise QueueFull(
                    f'queue is full: one goal is running and {taken - 1} waiting (max_queue '
                    f'{self.max_waiting}); try again later')
            self._waiting.append(key)
            return self._start_locked()

    def finish(self, key):
        """End the running `key`; return the key that starts now, or None."""
        with self._lock:
            if self._running != key:
                raise ValueError(f'{key!r} is not running')
            self._running = None
            return self._start_locked()

    def _start_locked(self):
        """Start the first waiting key if nothing runs; return it, or None."""
        if self._running is not None or not self._waiting:
            return None
        self._running = self._waiting.pop(0)
        return self._running

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
        """Return the running key, or None."""
        with self._lock:
            return self._running

    def positions(self):
        """Return {key: goals ahead of it} for the waiting keys (the running one counts)."""
        with self._lock:
            ahead = self._running is not None
            return {key: index + ahead for index, key in enumerate(self._waiting)}

    def __len__(self):
        """Goals running or waiting."""
        with self._lock:
            return (self._running is not None) + len(self._waiting)
