# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The node's health on /diagnostics (diagnostic_msgs/DiagnosticArray), once a second.

As diagnostic_updater does it (that C++/Python package is not on every install we target and its
Updater wants to own the timer and the node's parameters, so the few lines are written here): one
DiagnosticStatus named '<node name>: generation' (one per device, named '<node name>: generation
<device>', when the node runs several), hardware_id the device, values as key/value strings. 'queue
length' and 'devices in rotation' are what a client needs to pick the least busy of several servers
(client/server_choice.py). `GoalCounters` keeps the goal figures the node reports into it;
`health_status` turns a `Health` snapshot into the status message (pure, tested without ROS
processes); `DiagnosticsTimer` owns the publisher and the 1 Hz timer.
"""

from dataclasses import dataclass, field
import threading
from typing import Optional

try:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
except ImportError:  # not installed: the node runs without /diagnostics and says so
    DiagnosticArray = DiagnosticStatus = KeyValue = None
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

#: diagnostic_updater publishes on the absolute /diagnostics (reliable, volatile).
DIAGNOSTICS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
#: diagnostic_updater's default period.
PERIOD_SEC = 1.0
_MIB = 1024 * 1024


def diagnostics_problem():
    """Return why /diagnostics cannot be published here, or ''."""
    if DiagnosticArray is None:
        return ('diagnostic_msgs is not installed, so there is no /diagnostics: install '
                'ros-<distro>-diagnostic-msgs (PyPI: ros-diagnostic-msgs for Kilted, '
                'ros-jazzy-diagnostic-msgs for Jazzy)')
    return ''


class GoalCounters:
    """Goal outcomes counted by the node (thread-safe): served, refused, failed, cancelled."""

    def __init__(self):
        """Start at zero, with no goal failed and no image published."""
        self._lock = threading.Lock()
        self.counts = {'served': 0, 'refused': 0, 'failed': 0, 'cancelled': 0}
        self.last_failure = ''

    def record(self, outcome, message=''):
        """Count one goal ending `outcome`; a failure is remembered until the next success."""
        with self._lock:
            self.counts[outcome] += 1
            if outcome == 'failed':
                self.last_failure = message
            elif outcome == 'served':
                self.last_failure = ''

    def snapshot(self):
        """Return (counts, last failure message) at one instant."""
        with self._lock:
            return dict(self.counts), self.last_failure


@dataclass
class Health:
    """What the node knows about itself at one instant (see health_status)."""

    node_name: str
    node_fqn: str
    lifecycle_state: str
    base_model: str
    refiner_model: str
    models_loaded: bool
    error: str = ''    # why the models are not loaded ('models failed to load: ...'), or ''
    memory: Optional[object] = None   # sdxl_ros.engine.generation.memory.MemoryReport
    device: str = ''   # the configured device, reported until the engine knows its own
    queue_length: int = 0
    counts: dict = field(default_factory=dict)
    last_failure: str = ''
    last_image_stamp: Optional[object] = None   # builtin_interfaces/Time
    label: str = ''    # the device's name when the node runs several (in the status name)
    devices_in_rotation: int = 1   # the node's devices not taken out by a failure
    goal_running: Optional[bool] = None   # whether this device runs a goal (several devices)


def _mib(value):
    return 'unknown' if value is None else f'{value / _MIB:.0f} MiB'


def _stamp_text(stamp):
    if stamp is None:
        return 'none yet'
    return f'{stamp.sec}.{stamp.nanosec:09d}'


def health_status(health):
    """Return the DiagnosticStatus of `health`: ERROR no models, WARN memory short/failure."""
    # Checked in rising order of severity: the last match sets level and message.
    memory = health.memory
    level, message = DiagnosticStatus.OK, f'{health.lifecycle_state}, models loaded'
    if not health.models_loaded:
        message = f'{health.lifecycle_state}, models not loaded'
    if memory is not None and memory.short:
        level, message = DiagnosticStatus.WARN, (
            f'memory short: one default-size image needs about {_mib(memory.needed_bytes)}, '
            f'{_mib(memory.usable_bytes)} usable')
    if health.last_failure:
        level, message = DiagnosticStatus.WARN, f'last goal failed: {health.last_failure}'
    if health.error:
        level, message = DiagnosticStatus.ERROR, health.error
    device = memory.device if memory is not None else (health.device or 'unknown')
    if health.label:
        device = health.label
    values = [
        ('node', health.node_fqn),
        ('lifecycle state', health.lifecycle_state),
        ('base model', health.base_model),
        ('refiner model', health.refiner_model or '(none)'),
        ('models loaded', 'true' if health.models_loaded else 'false'),
        ('device', device),
        ('memory used', _mib(memory.used_bytes if memory else None)),
        ('memory free', _mib(memory.free_bytes if memory else None)),
        ('memory total', _mib(memory.total_bytes if memory else None)),
        ('queue length', str(health.queue_length)),
        ('devices in rotation', str(health.devices_in_rotation)),
    ]
    if health.goal_running is not None:
        values.append(('goal running', 'true' if health.goal_running else 'false'))
    values += [(f'goals {name}', str(count)) for name, count in health.counts.items()]
    values += [('last image stamp', _stamp_text(health.last_image_stamp)),
               ('last failure', health.last_failure or '(none)'),
               ('error', health.error or '(none)')]
    name = f'{health.node_name}: generation' + (f' {health.label}' if health.label else '')
    return DiagnosticStatus(
        level=level, name=name, message=message,
        hardware_id=device, values=[KeyValue(key=k, value=v) for k, v in values])


class DiagnosticsTimer:
    """Publishes health_status of each of `snapshot()` on /diagnostics every PERIOD_SEC."""

    def __init__(self, node, snapshot, callback_group=None):
        """Create the publisher and the timer; `snapshot` returns a list of Health."""
        self._node = node
        self._snapshot = snapshot
        self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics',
                                                DIAGNOSTICS_QOS)
        self._timer = node.create_timer(PERIOD_SEC, self.publish, callback_group=callback_group)

    def publish(self):
        """Publish the current status once."""
        try:
            statuses = [health_status(health) for health in self._snapshot()]
        except Exception as error:  # a report must never take the node down
            statuses = [DiagnosticStatus(level=DiagnosticStatus.ERROR,
                                         name=f'{self._node.get_name()}: generation',
                                         message=f'cannot report health: {error}')]
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)
