# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""GoalQueue: bounded FIFO with a running head, used from several threads (no ROS)."""

import threading
import time

import pytest

from sdxl_ros.ros.goal_queue import GoalQueue, QueueFull


def test_positions_are_fifo():
    queue = GoalQueue(max_waiting=3)
    assert [queue.push(key) for key in 'abc'] == [0, 1, 2]
    assert [queue.position(key) for key in 'abc'] == [0, 1, 2]
    queue.remove('a')
    assert [queue.position(key) for key in 'bc'] == [0, 1]
    assert queue.position('a') is None
    assert queue.keys() == ['b', 'c'] and len(queue) == 2 and 'b' in queue


def test_full_queue_refuses_with_a_reason():
    queue = GoalQueue(max_waiting=1)
    queue.push('running')
    queue.push('waiting')
    with pytest.raises(QueueFull, match='max_queue 1'):
        queue.push('third')
    queue.remove('running')
    assert queue.push('third') == 1


def test_zero_waiting_allows_only_the_running_goal():
    queue = GoalQueue(max_waiting=0)
    assert queue.push('a') == 0
    with pytest.raises(QueueFull):
        queue.push('b')


def test_removing_a_waiting_goal_moves_the_later_ones_up():
    queue = GoalQueue(max_waiting=3)
    for key in 'abcd':
        queue.push(key)
    queue.remove('b')
    assert queue.position('d') == 2
    queue.remove('missing')  # no error


def test_duplicate_and_negative_are_errors():
    queue = GoalQueue(max_waiting=2)
    queue.push('a')
    with pytest.raises(ValueError):
        queue.push('a')
    with pytest.raises(ValueError):
        GoalQueue(max_waiting=-1)


def test_wait_for_change_wakes_when_the_head_leaves():
    queue = GoalQueue(max_waiting=2)
    queue.push('a')
    queue.push('b')
    timer = threading.Timer(0.05, queue.remove, args=('a',))
    timer.start()
    started = time.monotonic()
    assert queue.wait_for_change('b', 1, timeout=5.0) == 0
    assert time.monotonic() - started < 2.0
    timer.join()


def test_wait_for_change_times_out_and_returns_the_position():
    queue = GoalQueue(max_waiting=2)
    queue.push('a')
    queue.push('b')
    started = time.monotonic()
    assert queue.wait_for_change('b', 1, timeout=0.05) == 1
    assert time.monotonic() - started >= 0.04
    assert queue.wait_for_change('b', 0, timeout=5.0) == 1  # already different: no wait


def test_wake_releases_waiters():
    queue = GoalQueue(max_waiting=2)
    queue.push('a')
    queue.push('b')
    threading.Timer(0.05, queue.wake).start()
    started = time.monotonic()
    assert queue.wait_for_change('b', 1, timeout=5.0) == 1
    assert time.monotonic() - started < 2.0


def test_threads_run_one_at_a_time_in_arrival_order():
    queue = GoalQueue(max_waiting=8)
    order, running = [], []
    keys = [f'g{i}' for i in range(6)]
    for key in keys:
        queue.push(key)

    def worker(key):
        position = queue.position(key)
        while position:
            position = queue.wait_for_change(key, position, 1.0)
        running.append(key)
        assert len(running) == 1
        order.append(key)
        time.sleep(0.005)
        running.remove(key)
        queue.remove(key)

    threads = [threading.Thread(target=worker, args=(key,)) for key in reversed(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == keys
