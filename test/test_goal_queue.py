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
        queue.add(key, queue.reserve())
    return queue


def test_positions_are_fifo():
    queue = GoalQueue(max_waiting=3)
    assert [queue.add(key, queue.reserve()) for key in 'abc'] == ['a', None, None]
    assert queue.running == 'a'
    assert queue.positions() == {'b': 1, 'c': 2}
    assert queue.finish('a') == 'b'
    assert queue.running == 'b' and queue.positions() == {'c': 1}
    assert 'a' not in queue.positions()
    assert len(queue) == 2


def test_full_queue_refuses_with_a_reason():
    queue = _queue(1, ['running', 'waiting'])
    with pytest.raises(QueueFull, match='max_queue 1'):
        queue.reserve()
    queue.finish('running')
    queue.add('third', queue.reserve())
    assert queue.positions() == {'third': 1}


def test_reserved_places_count_and_can_be_given_back():
    queue = _queue(1, ['running'])
    ticket = queue.reserve()
    with pytest.raises(QueueFull, match='one goal is running and 1 waiting'):
        queue.reserve()
    queue.release(ticket)
    queue.add('next', queue.reserve())
    assert queue.positions() == {'next': 1}


def test_places_never_handed_over_expire():
    queue = GoalQueue(max_waiting=1)
    queue.reserve()  # its goal is never handed over (its client vanished)
    ticket = queue.reserve()
    assert queue.add('b', ticket) is None  # waits for the earlier place
    assert queue.expire(60.0) is None  # not old yet
    assert queue.expire(0.0) == 'b'
    with pytest.raises(ValueError, match='expired'):
        queue.add('c', ticket)


def test_zero_waiting_allows_only_the_running_goal():
    queue = GoalQueue(max_waiting=0)
    assert queue.add('a', queue.reserve()) == 'a'
    with pytest.raises(QueueFull):
        queue.reserve()


def test_removing_a_waiting_goal_moves_the_later_ones_up():
    queue = _queue(3, 'abcd')
    assert queue.remove('b') is True
    assert queue.positions()['d'] == 2
    assert queue.remove('missing') is False  # no error
    assert queue.remove('a') is False  # running, not waiting


def test_goals_run_in_ticket_order_even_when_handed_over_late():
    queue = _queue(3, 'a')
    early, late = queue.reserve(), queue.reserve()
    queue.add('late', late)
    queue.add('early', early)
    assert queue.positions() == {'early': 1, 'late': 2}


def test_a_later_goal_waits_for_an_earlier_reserved_place():
    queue = GoalQueue(max_waiting=3)
    early, late = queue.reserve(), queue.reserve()
    assert queue.add('late', late) is None  # 'early' was admitted first
    assert queue.running is None and queue.positions() == {'late': 0}
    assert queue.add('early', early) == 'early'
    assert queue.positions() == {'late': 1}
    lost, last = queue.reserve(), queue.reserve()
    queue.add('last', last)
    assert queue.finish('early') == 'late'
    assert queue.finish('late') is None  # 'last' waits for the place reserved before it
    assert queue.release(lost) == 'last'


def test_clear_returns_the_waiting_goals_in_order():
    queue = _queue(3, 'abc')
    assert queue.clear() == ['b', 'c']
    assert queue.positions() == {} and queue.finish('a') is None


def test_unreserved_and_not_running_are_errors():
    queue = _queue(2, 'a')
    with pytest.raises(ValueError):
        queue.add('b', 12345)
    with pytest.raises(ValueError):
        queue.finish('b')
    with pytest.raises(ValueError):
        GoalQueue(max_waiting=-1)


def test_threads_run_one_at_a_time_in_arrival_order():
    queue = GoalQueue(max_waiting=8)
    order, running, errors = [], [], []
    keys = [f'g{i}' for i in range(6)]
    tickets = [queue.reserve() for _ in keys]
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

    def hand_over(key, ticket):
        started = queue.add(key, ticket)
        if started is not None:
            run(started)

    # Handed over from several threads in reverse order: the tickets still decide.
    threads = [threading.Thread(target=hand_over, args=pair)
               for pair in reversed(list(zip(keys, tickets)))]
    for thread in threads:
        thread.start()
    assert done.wait(10)
    assert not errors
    assert order == keys
