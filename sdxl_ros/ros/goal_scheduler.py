# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Which accepted goal runs when, the way ROS 2's own examples queue goals (server_queue_goals.py).

The goal callback accepts every goal; `handle_accepted_callback` hands the goal handle to `accept`,
which admits the goal (a queue place, or a refusal) and keeps the Admission by goal id. A goal
whose turn it is gets an engine and `goal_handle.execute()`, and when its execute callback ends
(`finished`) the next one is executed on the engine it freed. Nothing is held between the goal
callback and the accepted callback, so the hand-over does not depend on rclpy calling them back to
back, and a goal whose response never reached its client (never handed over) holds no place. No
thread waits per goal: one timer (`tick`) republishes the positions of the waiting goals and ends
the waiting goals that were cancelled or stopped. A goal whose device failed (`retry`) is the one
exception: its execute callback is already running, so it waits in that thread until another engine
takes it.
"""

import threading
import time

from sdxl_ros.action import GenerateImage
from sdxl_ros.ros.goal_conversion import queued_feedback
from sdxl_ros.ros.goal_queue import GoalQueue, QueueFull

#: Waiting goals repeat their 'queued' feedback this often (seconds), for late listeners.
QUEUED_FEEDBACK_SEC = 1.0
#: Period of the scheduler's timer (seconds). A cancel request becomes visible on its goal
#: only after the cancel callback returns, so a cancelled waiting goal ends at the next tick.
TICK_SEC = 0.2


def goal_key(goal_handle):
    """Return the key of a goal: its UUID as bytes."""
    return bytes(goal_handle.goal_id.uuid)


class GoalScheduler:
    """Accepted goals from hand-over to the end of their execute callback; thread-safe."""

    def __init__(self, max_waiting, engines=1):
        """Let one goal run per engine and at most `max_waiting` wait."""
        self._queue = GoalQueue(max_waiting, engines)
        self._lock = threading.Lock()
        self._goals = {}  # goal key -> Admission, from accept() to finished()
        self._dropped = []
        self._published = ({}, 0.0)

    def accept(self, goal_handle, admit):
        """
        Admit an accepted goal (`admit(goal)` returns its Admission) and queue it.

        A refused goal (invalid, node not active, queue full) is executed at once, so its
        execute callback ends it with the reason.
        """
        admission = admit(goal_handle.request)
        admission.goal_handle = goal_handle
        key = goal_key(goal_handle)
        with self._lock:
            self._goals[key] = admission
        starts = None
        if not admission.refusal:
            try:
                starts = self._queue.add(key)
            except QueueFull as error:
                admission.refusal = f'refused: {error}'
        if admission.refusal:
            goal_handle.execute()
            return
        self._start(starts)
        self.publish_positions(force=True)

    def cancel(self, goal_handle):
        """Take a waiting goal out of the queue at once when its cancel request comes."""
        if self._queue.remove(goal_key(goal_handle)):
            self._drop([goal_key(goal_handle)])
            self.publish_positions(force=True)

    def admission(self, goal_handle):
        """Return the Admission of an accepted goal."""
        with self._lock:
            return self._goals[goal_key(goal_handle)]

    def finished(self, goal_handle):
        """Forget a goal whose execute callback ended; if it was running, start the next."""
        key = goal_key(goal_handle)
        with self._lock:
            self._goals.pop(key, None)
        if self._queue.engine_of(key) is not None:
            self._start(self._queue.finish(key))
            self.publish_positions(force=True)

    def retry(self, goal_handle):
        """
        Take the failed engine of a running goal out of rotation; wait for another to take it.

        Called from the goal's own execute callback, which it blocks. Returns the Admission's
        new engine index, or None: no engine left in rotation (the waiting goals are then
        ended too), or the goal was cancelled or stopped while it waited.
        """
        key = goal_key(goal_handle)
        with self._lock:
            admission = self._goals[key]
        admission.engine = None
        admission.resumed.clear()
        starts = self._queue.fail(key)
        if not self._queue.in_rotation():
            self._end_waiting('every device has failed (see /diagnostics)')
            return None
        self._start(starts)
        self.publish_positions(force=True)
        while not admission.resumed.wait(TICK_SEC):
            if (goal_handle.is_cancel_requested or admission.stop_reason) \
                    and self._queue.remove(key):
                return None
        return admission.engine

    def in_rotation(self):
        """Return the indices of the engines in rotation."""
        return self._queue.in_rotation()

    def restore(self):
        """Put every engine back into rotation (the models were loaded again)."""
        for key in self._queue.restore():
            self._start(key)

    def tick(self):
        """Timer: end the dropped goals whose cancel took effect; republish the positions."""
        with self._lock:
            cancelled = [key for key in self._queue.positions()
                         if self._goals[key].goal_handle.is_cancel_requested]
        self._drop([key for key in cancelled if self._queue.remove(key)])
        with self._lock:
            ready = [a for a in self._dropped
                     if a.stop_reason or a.goal_handle.is_cancel_requested]
            self._dropped = [a for a in self._dropped if a not in ready]
        for admission in ready:
            admission.goal_handle.execute()
        self.publish_positions()

    def stop_all(self, reason):
        """End every goal with `reason`: waiting ones now, running ones at their next step."""
        with self._lock:
            running = [self._goals[key] for key in self._queue.running_keys()
                       if key in self._goals]
        for admission in running:
            admission.stop(reason)
        self._end_waiting(reason)

    def _end_waiting(self, reason):
        """End every waiting goal with `reason`."""
        waiting = self._queue.clear()
        with self._lock:
            for key in waiting:
                self._goals[key].stop(reason)
        self._drop(waiting)
        self.tick()

    def busy(self):
        """Whether any accepted goal has not ended yet."""
        with self._lock:
            return bool(self._goals)

    def queue_length(self):
        """Goals running or waiting in the queue, for /diagnostics."""
        return len(self._queue)

    def running_on(self, engine):
        """Whether a goal runs on engine `engine` now (for /diagnostics)."""
        return any(self._queue.engine_of(key) == engine for key in self._queue.running_keys())

    def publish_positions(self, force=False):
        """Send 'queued' feedback to waiting goals when positions changed or a second passed."""
        positions = self._queue.positions()
        now = time.monotonic()
        with self._lock:
            last, at = self._published
            if not force and positions == last and now - at < QUEUED_FEEDBACK_SEC:
                return
            self._published = (positions, now)
            handles = [(self._goals[key].goal_handle, position)
                       for key, position in positions.items() if key in self._goals]
        for handle, position in handles:
            handle.publish_feedback(queued_feedback(position, GenerateImage.Feedback()))

    def _drop(self, keys):
        """Remember goals taken out of the queue until they can be ended."""
        with self._lock:
            dropped = [self._goals[key] for key in keys]
            self._dropped.extend(a for a in dropped if not a.executing)
        for admission in dropped:
            if admission.executing:  # waiting in retry(): it ends itself
                admission.resumed.set()

    def _start(self, key):
        """Execute the goal whose turn it is on its engine (None: nobody's)."""
        if key is None:
            return
        with self._lock:
            admission = self._goals[key]
        admission.engine = self._queue.engine_of(key)
        if admission.executing:  # a retried goal waiting in retry()
            admission.resumed.set()
            return
        admission.executing = True
        admission.goal_handle.execute()
