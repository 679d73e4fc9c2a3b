# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Choosing one of several sdxl_node servers for a goal: the least busy one seen on /diagnostics.

Several servers must not share one action name (README, "Several servers"): each runs in a
namespace of its own (`/gpu1/sdxl/generate`, `/gpu2/sdxl/generate`, ...) and the client picks
one per goal. Every server publishes, once a second on /diagnostics, a status per device with
its node name, lifecycle state, 'queue length' (goals running or waiting) and 'devices in
rotation' (ros/diagnostics.py). `server_loads` reads those into ServerLoads; `rank_servers`
orders the usable ones by goals per device, fewest first (ties in random order, so clients that
choose at the same moment spread out); a server whose statuses stopped (gone, or cut off) is
left out after `STALE_SEC`. `ServerWatch` is the rclpy side: a /diagnostics subscription that
keeps the newest loads. The CLI (`sdxl_generate --servers auto`) sends the goal to the first
server that answers and falls back to the next when one does not, or goes away mid-goal.
"""

from dataclasses import dataclass
import random
import time

#: Seconds after its last /diagnostics status that a server is taken for gone (3 periods).
STALE_SEC = 3.5
#: Seconds to listen to /diagnostics before choosing (every server publishes once a second);
#: the CLI listens longer while it has heard no usable server.
LISTEN_SEC = 2.5
#: diagnostic_msgs/DiagnosticStatus.ERROR: a device in this state serves no goal.
ERROR = 2


@dataclass(frozen=True)
class ServerLoad:
    """What one server last said about itself; `seen` is a time.monotonic() reading."""

    node: str
    queue_length: int
    devices: int
    usable: bool
    seen: float

    @property
    def action(self):
        """Return the server's action name."""
        return f'{self.node}/generate'

    @property
    def goals_per_device(self):
        """Goals running or waiting for each device in rotation (the wait, in goals)."""
        return self.queue_length / max(self.devices, 1)


def _level(status):
    """Return a DiagnosticStatus level as an int (rclpy gives a `byte` field as bytes)."""
    level = status.level
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


def _int(values, key, default):
    """Return values[key] as an int, or `default` when missing or not a number."""
    try:
        return int(values.get(key, default))
    except ValueError:
        return default


def server_loads(statuses, seen, loads=None):
    """
    Update `loads` ({node: ServerLoad}) from the DiagnosticStatus messages of one array.

    Only sdxl_node statuses count (named '<name>: generation...', with a 'queue length'). A
    server is usable when it is active and one of its devices is not in ERROR with its models
    loaded.
    """
    loads = {} if loads is None else loads
    by_node = {}
    for status in statuses:
        values = {kv.key: kv.value for kv in status.values}
        if ': generation' not in status.name or 'queue length' not in values:
            continue
        by_node.setdefault(values.get('node', ''), []).append((status, values))
    for node, reports in by_node.items():
        if not node:
            continue
        first = reports[0][1]
        usable = first.get('lifecycle state') == 'active' and any(
            _level(status) < ERROR and values.get('models loaded') == 'true'
            for status, values in reports)
        loads[node] = ServerLoad(node=node, queue_length=_int(first, 'queue length', 0),
                                 devices=_int(first, 'devices in rotation', 1),
                                 usable=usable and _int(first, 'devices in rotation', 1) > 0,
                                 seen=seen)
    return loads


def rank_servers(loads, now, only=(), stale_sec=STALE_SEC, rng=random.random):
    """
    Return the action names of the usable, recently seen servers, least busy first.

    `only`: fully qualified node names to choose among (empty: every sdxl_node seen).
    """
    fresh = [load for load in loads.values()
             if load.usable and now - load.seen <= stale_sec and (not only or load.node in only)]
    fresh.sort(key=lambda load: (load.goals_per_device, rng()))
    return [load.action for load in fresh]


class ServerWatch:
    """Keeps the newest ServerLoad of each server from /diagnostics (rclpy subscription)."""

    def __init__(self, node):
        """Subscribe `node` to /diagnostics (needs diagnostic_msgs)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        self.loads = {}
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self._subscription = node.create_subscription(DiagnosticArray, '/diagnostics',
                                                      self._on_array, qos)

    def _on_array(self, array):
        """Fold one DiagnosticArray into the loads."""
        server_loads(array.status, time.monotonic(), self.loads)

    def ranked(self, only=()):
        """Return the action names of the usable servers, least busy first."""
        return rank_servers(self.loads, time.monotonic(), only)
