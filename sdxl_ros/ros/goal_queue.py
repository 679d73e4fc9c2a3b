# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A bounded FIFO of goals, shared by the threads that run them (no ROS inside).

One GPU runs one generation at a time. Every admitted goal holds a place in the queue; the
goal at the head runs, the others wait for their turn. `max_waiting` bounds how many may wait
behind the head; a goal beyond that is refused (`QueueFull`) instead of waiting for ever.
"""

import threading


class QueueFull(Exception):
    """The queue already holds as many waiting goals as allowed; the message says so."""


class GoalQueue:
    """FIFO with a running head; thread-safe; keys are any hashable goal identifiers."""

    def __init__(self, max_waiting):
        """Create an empty queue that lets at most `max_waiting` goals wait behind the head."""
        if max_waiting < 0:
            raise ValueError(f'max_waiting must be >= 0, got {max_waiting}')
        self.max_waiting = max_waiting
        self._keys = []
        self._condition = threading.Condition()

    def __len__(self):
        """Goals in the queue, the running one included."""
        with self._condition:
            return len(self._keys)

    def __contains__(self, key):
        """Whether `key` holds a place."""
        with self._condition:
            return key in self._keys

    def keys(self):
        """Return the keys in order, head first."""
        with self._condition:
            return list(self._keys)

    def push(self, key):
        """Append `key` and return its position (goals ahead of it); raise QueueFull if full."""
        with self._condition:
            if key in self._keys:
                raise ValueError(f'{key!r} is already queued')
            waiting = max(0, len(self._keys) - 1)
            if self._keys and waiting >= self.max_waiting:
                raise QueueFull(
                    f'queue is full: one goal is running and {waiting} waiting (max_queue '
                    f'{self.max_waiting}); try again later')
            self._keys.append(key)
            return len(self._keys) - 1

    def position(self, key):
        """Goals ahead of `key` (0: its turn), or None when it holds no place."""
        with self._condition:
            return self._position(key)

    def remove(self, key):
        """Give up the place of `key` (finished, cancelled or dropped); no error if absent."""
        with self._condition:
            if key in self._keys:
                self._keys.remove(key)
                self._condition.notify_all()

    def wake(self):
        """Wake every waiter, e.g. so a cancelled goal notices at once."""
        with self._condition:
            self._condition.notify_all()

    def wait_for_change(self, key, last_position, timeout):
        """
        Block until the position of `key` differs from `last_position`, a wake or a timeout.

        Returns the position then (None once `key` holds no place); callers loop on it.
        """
        with self._condition:
            if self._position(key) == last_position:
                self._condition.wait(timeout)
            return self._position(key)

    def _position(self, key):
        """Position of `key` (lock held), or None."""
        return self._keys.index(key) if key in self._keys else None
