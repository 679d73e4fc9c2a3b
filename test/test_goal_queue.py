# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""GoalQueue: one running goal, a bounded FIFO behind it, used from several threads (no ROS)."""

import threading

import pytest

from sdxl_ros.ros.goal_queue import GoalQueue, QueueFull


def _queue(max_waiting, keys=''):
    """Return a queue holding `keys` in order (the first one running)."""
    queue = GoalQueue(max_waiting)
    for key in keys:
        queue.add(key)
    return queue


def test_positions_are_fifo():
    queue = GoalQueue(max_waiting=3)
    assert [queue.add(key) for key in 'abc'] == ['a', None, None]
    assert queue.running == 'a'
    assert queue.positions() == {'b': 1, 'c': 2}
    assert queue.finish('a') == 'b'
    assert queue.running == 'b' and queue.positions() == {'c': 1}
    assert 'a' not in queue.positions()
    assert len(queue) == 2


def test_full_queue_refuses_with_a_reason():
    queue = _queue(1, ['running', 'waiting'])
    with pytest.raises(QueueFull, match=r'one goal is running and 1 waiting \(max_queue 1\)'):
        queue.add('third')
    assert queue.positions() == {'waiting': 1}  # the refused goal left no trace
    queue.finish('running')
    queue.add('third')
    assert queue.positions() == {'third': 1}


def test_zero_waiting_allows_only_the_running_goal():
    queue = GoalQueue(max_waiting=0)
    assert queue.add('a') == 'a'
    with pytest.raises(QueueFull):
        queue.add('b')
    assert queue.finish('a') is None
    assert queue.add('b') == 'b'


def test_removing_a_waiting_goal_moves_the_later_ones_up():
    queue = _queue(3, 'abcd')
    assert queue.remove('b') is True
    assert queue.positions()['d'] == 2
    assert queue.remove('missing') is False  # no error
    assert queue.remove('a') is False  # running, not waiting


def test_clear_returns_the_waiting_goals_in_order():
    queue = _queue(3, 'abc')
    assert queue.clear() == ['b', 'c']
    assert queue.positions() == {} and queue.finish('a') is None


def test_not_running_is_an_error():
    queue = _queue(2, 'ab')
    with pytest.raises(ValueError):
        queue.finish('b')
    with pytest.raises(ValueError):
        GoalQueue(max_waiting=-1)


def test_threads_run_one_at_a_time_in_arrival_order():
    queue = GoalQueue(max_waiting=8)
    order, running, errors = [], [], []
    keys = [f'g{i}' for i in range(6)]
    done = threading.Event()

    def run(key):
        # What the node's execute callback does: run, then start the next goal.
        running.append(key)
        if len(running) != 1:
            errors.append(list(running))
        order.append(key)
        running.remove(key)
        following = queue.finish(key)
        if following is not None:
            threading.Thread(target=run, args=(following,)).start()
        if len(order) == len(keys):
            done.set()

    # The first goal starts on arrival; the others arrive on threads of their own while it
    # has not run yet, then each starts when the one before it finishes on another thread.
    first = queue.add(keys[0])
    assert first == 'g0'
    added = []
    for key in keys[1:]:
        thread = threading.Thread(target=lambda k=key: added.append(queue.add(k)))
        thread.start()
        thread.join(5)
    assert added == [None] * (len(keys) - 1)
    threading.Thread(target=run, args=(first,)).start()
    assert done.wait(10)
    assert not errors
    assert order == keys
