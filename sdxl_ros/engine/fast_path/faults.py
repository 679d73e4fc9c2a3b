# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Injected faults for the tests of the fast path's degrading (AccelerationConfig.fault_at).

The production code asks one object at three points ('apply', 'prepare', 'goal'); with no
fault configured each check is a no-op and the goal hook is None (no call at all).
"""


class InjectedFault(RuntimeError):
    """Raised where the configured `fault_at` point is reached."""


class Faults:
    """The one configured fault point ('' = none)."""

    def __init__(self, point=''):
        """Remember where to fail."""
        self.point = point

    def check(self, point):
        """Raise InjectedFault when `point` is the configured one."""
        if point and point == self.point:
            raise InjectedFault(f'fault_at {point} (test hook)')

    def hook(self, point):
        """Return a no-argument callable that runs `check(point)`, or None when not configured."""
        return (lambda: self.check(point)) if point == self.point else None
