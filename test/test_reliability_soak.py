# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Reliability: soak. N goals in a row with the node's resident memory (RSS) sampled.

After a warm-up the RSS may grow by less than 5%. CI runs 40 goals; the long variant:

    SDXL_ROS_SOAK_GOALS=200 scripts/test.sh -m reliability -k soak
"""

import os
import statistics

import pytest

from reliability_report import FIGURES, finish, module_node, rss_bytes
from ros_harness import assert_refused, assert_served

pytestmark = [pytest.mark.ros, pytest.mark.reliability]

GOALS = int(os.environ.get('SDXL_ROS_SOAK_GOALS', '40'))
WARM_UP = max(10, GOALS // 10)
#: Samples averaged (median) at each end of the measured stretch, against noise.
WINDOW = 5
MAX_GROWTH = 0.05
NODE = {'default_steps': 2, 'max_queue': 2}


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory):
    """Start a fresh node, so its memory reflects only this test."""
    yield from module_node(ros_client, tmp_path_factory, NODE)


def test_soak_rss_growth(ros_client, node):
    """GOALS goals (every tenth refused, sizes and samplers varied): RSS grows < 5%."""
    assert GOALS >= WARM_UP + 2 * WINDOW, 'SDXL_ROS_SOAK_GOALS is too small to measure'
    action = node.name_of('generate')
    schedulers = ['Euler a', 'DPM++ 2M Karras', 'DDIM', 'UniPC']
    samples = []
    for index in range(GOALS):
        if index % 10 == 5:
            response = finish(ros_client.send_goal(action, prompt='bad', width=7), 30)
            assert_refused(response, 'width')
        else:
            side = 64 if index % 3 else 128
            response = finish(ros_client.send_goal(
                action, prompt=f'soak {index}', seed=index, width=side, height=side,
                scheduler=schedulers[index % len(schedulers)]), 60)
            assert_served(response)
        samples.append(rss_bytes(node.process.pid))
    assert node.alive
    baseline = statistics.median(samples[WARM_UP:WARM_UP + WINDOW])
    final = statistics.median(samples[-WINDOW:])
    growth = (final - baseline) / baseline
    mib = 1024 * 1024
    FIGURES.measured('soak RSS growth after warm-up (%)', round(100 * growth, 2))
    FIGURES.measured('soak', {'goals': GOALS, 'warm-up': WARM_UP,
                              'RSS MiB after warm-up': round(baseline / mib, 1),
                              'RSS MiB at end': round(final / mib, 1),
                              'RSS MiB peak': round(max(samples) / mib, 1)})
    assert growth < MAX_GROWTH, (
        f'RSS grew {100 * growth:.1f}% over {GOALS - WARM_UP} goals after warm-up '
        f'({baseline / mib:.0f} -> {final / mib:.0f} MiB)')
