# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A stand-in for rclpy's ServerGoalHandle, for tests of the rclpy-free scheduler and runner.

It has what GoalScheduler and GoalRunner use of a goal handle (goal_id, request,
is_cancel_requested, execute, publish_feedback and the terminal calls) and records the calls.
The real handle is exercised by the node tests (test_node.py and the reliability tests).
"""

import itertools
import threading

from sdxl_ros.action import GenerateImage
from unique_identifier_msgs.msg import UUID

_ids = itertools.count(1)


class GoalHandle:
    """One goal as the action server would hand it over; records what happens to it."""

    def __init__(self, **goal_fields):
        """Build the goal message from `goal_fields` and give it a fresh goal id."""
        self.goal_id = UUID(uuid=list(next(_ids).to_bytes(16, 'big')))
        self.request = GenerateImage.Goal(**goal_fields)
        self.is_cancel_requested = False
        self.executed = threading.Event()
        self.feedback = []
        self.status = None

    def execute(self):
        """Record that the execute callback was asked to run."""
        self.executed.set()

    def publish_feedback(self, feedback):
        """Keep the feedback."""
        self.feedback.append(feedback)

    def stages(self):
        """Return the stages of the feedback, in order."""
        return [feedback.stage for feedback in self.feedback]

    def succeed(self):
        """End succeeded."""
        self.status = 'succeeded'

    def abort(self):
        """End aborted."""
        self.status = 'aborted'

    def canceled(self):
        """End cancelled."""
        self.status = 'canceled'
