# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The order in which admitted goals run: one running, a bounded FIFO waiting (no ROS inside).

One GPU runs one generation at a time. The node admits a goal by reserving a place (its
ticket fixes its turn), queues it once the action server hands it over, runs it when nothing
else runs, and starts the next when it ends: ROS 2's own queueing pattern, with no thread
waiting per goal. `max_waiting` bounds the goals behind the running one; a goal beyond that
is refused (`QueueFull`) instead of waiting for ever.
"""

import bisect
import itertools
import threading
import time


class QueueFull(Exception):
    """The queue already holds as many waiting goals as allowed; the message says so."""


class GoalQueue:
    """One running goal and the waiting ones in ticket order; thread-safe; keys are hashable."""

    def __init__(self, max_waiting):
        """Create an empty queue; at most `max_waiting` goals may wait behind the running one."""
        if max_waiting < 0:
            raise ValueError(f'max_waiting must be >= 0, got {max_waiting}')
        self.max_waiting = max_waiting
        self._tickets = itertools.count()
        self._reserved = {}  # ticket -> time.monotonic() of the reservation
        self._waiting = []  # (ticket, key), sorted by ticket
        self._running = None
        self._lock = threading.Lock()

    def reserve(self):
        """Take a place and return its ticket (earlier tickets run first); raise QueueFull."""
        with self._lock:
            taken = (self._running is not None) + len(self._waiting) + len(self._reserved)
            if taken > self.max_waiting:
                waiting = taken - 1
                raise QueueFull(
                    f'queue is full: one goal is running and {waiting} waiting (max_queue '
                    f'{self.max_waiting}); try again later')
            ticket = next(self._tickets)
            self._reserved[ticket] = time.monotonic()
            return ticket

    def release(self, ticket):
        """Give back a reserved place never queued; return the key that starts now, or None."""
        with self._lock:
            self._reserved.pop(ticket, None)
            return self._start_locked()

    def expire(self, max_age):
        """Give back places reserved more than `max_age` s ago; return the key that starts."""
        with self._lock:
            oldest = time.monotonic() - max_age
            for ticket in [t for t, at in self._reserved.items() if at < oldest]:
                del self._reserved[ticket]
            return self._start_locked()

    def add(self, key, ticket):
        """Queue `key` on its reserved place; return the key that starts now, or None."""
        with self._lock:
            if ticket not in self._reserved:
                raise ValueError(f'ticket {ticket!r} is not reserved (or expired)')
            del self._reserved[ticket]
            bisect.insort(self._waiting, (ticket, key))
            return self._start_locked()

    def finish(self, key):
        """End the running `key`; return the key that starts now, or None."""
        with self._lock:
            if self._running != key:
                raise ValueError(f'{key!r} is not running')
            self._running = None
            return self._start_locked()

    def _start_locked(self):
        """Start the first waiting key if nothing runs and no earlier place is still reserved."""
        if self._running is not None or not self._waiting:
            return None
        ticket, key = self._waiting[0]
        if self._reserved and min(self._reserved) < ticket:
            return None
        del self._waiting[0]
        self._running = key
        return key

    def remove(self, key):
        """Take a waiting `key` out (cancelled); return whether it was waiting."""
        with self._lock:
            for index, (_, waiting) in enumerate(self._waiting):
                if waiting == key:
                    del self._waiting[index]
                    return True
            return False

    def clear(self):
        """Take every waiting key out; return them in order."""
        with self._lock:
            keys = [key for _, key in self._waiting]
            self._waiting = []
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
            return {key: index + ahead for index, (_, key) in enumerate(self._waiting)}

    def __len__(self):
        """Goals running or waiting (reserved places not yet queued excluded)."""
        with self._lock:
            return (self._running is not None) + len(self._waiting)
