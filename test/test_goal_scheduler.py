# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""GoalScheduler: admission at hand-over, one goal at a time, cancel and stop (no ROS process)."""

import threading

from goal_handles import GoalHandle
from sdxl_ros.ros.goal_runner import Admission
from sdxl_ros.ros.goal_scheduler import GoalScheduler


def _admit(goal):
    """Admit as the node does, reduced to the outcome: 'bad' prompts are refused."""
    if goal.prompt == 'bad':
        return Admission(refusal='refused: a bad prompt')
    return Admission(request=goal)


def _accepted(scheduler, *prompts):
    """Hand over one goal per prompt, in order; return their handles."""
    handles = [GoalHandle(prompt=prompt) for prompt in prompts]
    for handle in handles:
        scheduler.accept(handle, _admit)
    return handles


def _positions(handle):
    """Return the queue positions the goal was told, in order."""
    return [fb.queue_position for fb in handle.feedback if fb.stage == 'queued']


def test_goals_run_one_at_a_time_in_order_of_hand_over():
    scheduler = GoalScheduler(max_waiting=2)
    first, second, third = _accepted(scheduler, 'a', 'b', 'c')
    assert first.executed.is_set() and not second.executed.is_set()
    assert _positions(second)[-1] == 1 and _positions(third)[-1] == 2
    assert scheduler.queue_length() == 3 and scheduler.busy()
    scheduler.finished(first)
    assert second.executed.is_set() and not third.executed.is_set()
    assert _positions(third)[-1] == 1
    scheduler.finished(second)
    scheduler.finished(third)
    assert not scheduler.busy() and scheduler.queue_length() == 0


def test_each_goal_gets_its_own_admission_whatever_the_callback_order():
    # rclpy may run goal and accepted callbacks of several goals interleaved, on any thread:
    # the admission is made from the handed-over goal itself and kept by its goal id.
    scheduler = GoalScheduler(max_waiting=4)
    handles = [GoalHandle(prompt=f'goal {i}') for i in range(4)]
    threads = [threading.Thread(target=scheduler.accept, args=(handle, _admit))
               for handle in reversed(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    for handle in handles:
        assert scheduler.admission(handle).request.prompt == handle.request.prompt
        assert scheduler.admission(handle).goal_handle is handle
    assert sum(handle.executed.is_set() for handle in handles) == 1


def test_a_goal_never_handed_over_holds_no_place():
    # A goal whose response never reached its client (it vanished) is accepted by the goal
    # callback but never handed over. Admission happens at hand-over, so it reserved nothing:
    # the next goal runs at once, without waiting for any timer.
    scheduler = GoalScheduler(max_waiting=0)
    GoalHandle(prompt='lost')  # goal callback ran; no accept() follows
    (next_goal,) = _accepted(scheduler, 'next')
    assert next_goal.executed.is_set()
    assert scheduler.admission(next_goal).refusal == ''


def test_refusals_and_a_full_queue_end_at_once_without_taking_a_place():
    scheduler = GoalScheduler(max_waiting=1)
    running, bad, waiting, beyond = _accepted(scheduler, 'a', 'bad', 'b', 'c')
    assert bad.executed.is_set()
    assert scheduler.admission(bad).refusal == 'refused: a bad prompt'
    assert not waiting.executed.is_set()
    assert beyond.executed.is_set()
    assert scheduler.admission(beyond).refusal == (
        'refused: queue is full: one goal is running and 1 waiting (max_queue 1); '
        'try again later')
    assert scheduler.queue_length() == 2
    for handle in (bad, beyond):
        scheduler.finished(handle)
    assert scheduler.queue_length() == 2 and not waiting.executed.is_set()
    scheduler.finished(running)
    assert waiting.executed.is_set()


def test_a_cancelled_waiting_goal_leaves_the_queue_and_ends_at_the_next_tick():
    scheduler = GoalScheduler(max_waiting=2)
    running, cancelled, last = _accepted(scheduler, 'a', 'b', 'c')
    scheduler.cancel(cancelled)  # the cancel callback: out of the queue at once
    assert scheduler.queue_length() == 2 and _positions(last)[-1] == 1
    assert not cancelled.executed.is_set()  # the request is not visible on the goal yet
    cancelled.is_cancel_requested = True  # rclpy marks it after the cancel callback returns
    scheduler.tick()
    assert cancelled.executed.is_set() and not last.executed.is_set()


def test_a_cancel_request_seen_only_by_the_tick_takes_the_goal_out():
    scheduler = GoalScheduler(max_waiting=2)
    running, waiting = _accepted(scheduler, 'a', 'b')
    waiting.is_cancel_requested = True
    scheduler.tick()
    assert waiting.executed.is_set() and scheduler.queue_length() == 1
    scheduler.finished(waiting)
    scheduler.finished(running)
    assert not scheduler.busy()


def test_stop_all_stops_the_running_goal_and_ends_the_waiting_ones():
    scheduler = GoalScheduler(max_waiting=2)
    running, first, second = _accepted(scheduler, 'a', 'b', 'c')
    scheduler.stop_all('node deactivated')
    assert scheduler.admission(running).cancel.is_set()
    for handle in (running, first, second):
        assert scheduler.admission(handle).stop_reason == 'node deactivated'
    assert first.executed.is_set() and second.executed.is_set()
    assert scheduler.queue_length() == 1  # the running one, until its execute callback ends
    for handle in (first, second, running):
        scheduler.finished(handle)
    assert not scheduler.busy() and scheduler.queue_length() == 0
