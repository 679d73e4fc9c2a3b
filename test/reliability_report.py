# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Figures of the reliability suite, helpers its tests share, and the summary at the end.

Tests record every goal whose end they observe (`FIGURES.ended`, `finish`), goals that never
reached a terminal state (`lost`) and measured values (`measured`: RSS growth, shutdown
times, load counts). The pytest hooks at the bottom (imported by conftest.py) count the
reliability cases, print a summary table at the end of the session and write it to
`log/reliability.json`.
"""

from collections import Counter
import json
from pathlib import Path
import re
import time

#: Where the figures of the last run are written (relative to the repository root).
JSON_PATH = Path('log') / 'reliability.json'

_NUMBER = re.compile(r'(?<![\w.])[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)(?![\w.])', re.I)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_key(message):
    """Group a result message by its reason: numbers and quoted values become placeholders."""
    text = message[len('refused: '):] if message.startswith('refused: ') else message
    text = re.split(r'[:;(]', text, maxsplit=1)[0]
    text = _NUMBER.sub('N', _QUOTED.sub('X', text))
    return ' '.join(text.split())[:60] or '(no message)'


class Figures:
    """Counters and values of one test session."""

    def __init__(self):
        """Start with nothing counted."""
        self.outcomes = Counter()
        self.refusals = Counter()
        self.aborts = Counter()
        self.lost_goals = 0
        self.values = {}
        self.cases = Counter()
        self.failed_cases = []

    def ended(self, status, message):
        """Count one goal that reached the terminal `status` (action_msgs GoalStatus)."""
        from action_msgs.msg import GoalStatus
        if status == GoalStatus.STATUS_SUCCEEDED:
            self.outcomes['served'] += 1
        elif status == GoalStatus.STATUS_CANCELED:
            self.outcomes['cancelled'] += 1
        elif status == GoalStatus.STATUS_ABORTED and message.startswith('refused: '):
            self.outcomes['refused'] += 1
            self.refusals[reason_key(message)] += 1
        elif status == GoalStatus.STATUS_ABORTED:
            self.outcomes['aborted'] += 1
            self.aborts[reason_key(message)] += 1
        else:
            self.outcomes[f'status {status}'] += 1

    def lost(self, count=1):
        """Count goals that never reached a terminal state."""
        self.lost_goals += count

    def measured(self, name, value):
        """Record a measured value (a number, or a small dict of numbers)."""
        self.values[name] = value

    def as_dict(self):
        """Everything recorded, for log/reliability.json."""
        return {
            'cases': {'tried': self.cases['tried'], 'passed': self.cases['passed'],
                      'failed': self.failed_cases},
            'goals': {'served': self.outcomes['served'], 'lost': self.lost_goals,
                      'refused': self.outcomes['refused'],
                      'cancelled': self.outcomes['cancelled'],
                      'aborted': self.outcomes['aborted'],
                      **{k: v for k, v in self.outcomes.items() if k.startswith('status')}},
            'refusal_reasons': dict(self.refusals.most_common()),
            'abort_reasons': dict(self.aborts.most_common()),
            'values': self.values,
        }


FIGURES = Figures()


# ------------------------------------------------------------------ test helpers


def finish(run, timeout=120.0):
    """Wait for the end of a GoalRun; record it (or record it lost and fail)."""
    try:
        response = run.result(timeout)
    except TimeoutError:
        FIGURES.lost()
        raise AssertionError(f'goal lost: no terminal state within {timeout} s') from None
    FIGURES.ended(response.status, response.result.message)
    return response


def record(response):
    """Record a GetResult response obtained without `finish`; return it."""
    FIGURES.ended(response.status, response.result.message)
    return response


def module_node(ros_client, tmp_path_factory, parameters):
    """Start an sdxl_node for a module fixture, yield it, then stop it and print its log."""
    from ros_harness import NodeProcess
    node = NodeProcess(tmp_path_factory.mktemp('node'), parameters).start()
    try:
        ros_client.wait_active(node.fqn, node)
        yield node
    finally:
        node.stop()
        print(f'----- log of {node.fqn} (exit {node.returncode}) -----\n{node.log()}')


def image_qos():
    """Return a QoS that receives every image published from now on (reliable, volatile, deep)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def settle(received, quiet=0.5, timeout=10.0):
    """Wait until no message was appended to `received` for `quiet` seconds; return its size."""
    deadline = time.monotonic() + timeout
    count = len(received)
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if len(received) != count:
            count, last_change = len(received), time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            break
    return len(received)


def rss_bytes(pid):
    """Resident set size of process `pid` in bytes (from /proc/<pid>/status)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f'no VmRSS for process {pid}')


# ------------------------------------------------------------------ pytest hooks
def pytest_runtest_logreport(report):
    """Count the reliability cases: each test once, failed in any phase or passed."""
    if 'reliability' not in report.keywords:
        return
    if report.when == 'call' or (report.when == 'setup' and report.failed):
        FIGURES.cases['tried'] += 1
        FIGURES.cases['passed'] += int(report.passed)
    if report.failed and report.nodeid not in FIGURES.failed_cases:
        FIGURES.failed_cases.append(report.nodeid)


def _format_value(value):
    if isinstance(value, float):
        return f'{value:.3g}'
    if isinstance(value, dict):
        return ', '.join(f'{k} {_format_value(v)}' for k, v in value.items())
    return str(value)


def summary_lines(figures):
    """Return the summary table as lines of text."""
    data = figures.as_dict()
    goals = data['goals']
    rows = [
        ('cases tried / passed', f"{data['cases']['tried']} / {data['cases']['passed']}"),
        ('goals served', goals['served']),
        ('goals lost (no terminal state)', goals['lost']),
        ('goals refused', goals['refused']),
        ('goals cancelled', goals['cancelled']),
        ('goals aborted (faults, shutdown)', goals['aborted']),
    ]
    rows += [(k, v) for k, v in goals.items() if k.startswith('status')]
    rows += [(name, _format_value(value)) for name, value in sorted(data['values'].items())]
    width = max(len(name) for name, _ in rows)
    lines = [f'{name:<{width}}  {value}' for name, value in rows]
    for title, reasons in (('refusal reasons', data['refusal_reasons']),
                           ('abort reasons', data['abort_reasons'])):
        if reasons:
            lines.append(f'{title}:')
            lines += [f'  {count:>4} x {reason}' for reason, count in reasons.items()]
    lines += [f'FAILED: {nodeid}' for nodeid in data['cases']['failed']]
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the reliability summary and write log/reliability.json (if any case ran)."""
    if not FIGURES.cases['tried'] and not FIGURES.failed_cases:
        return
    terminalreporter.section('sdxl_ros reliability summary')
    for line in summary_lines(FIGURES):
        terminalreporter.write_line(line)
    path = Path(config.rootpath) / JSON_PATH
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(FIGURES.as_dict(), indent=2) + '\n')
        terminalreporter.write_line(f'figures written to {path}')
    except OSError as error:
        terminalreporter.write_line(f'cannot write {path}: {error}')
