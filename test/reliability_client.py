# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
A GenerateImage client in a process of its own, for the load and fault tests.

    python reliability_client.py ACTION SPEC.json OUT.json

SPEC: {"goals": [{goal fields}, ...], "gap_sec": 0.3, "hold": false}. The client prints
READY once the action server is discovered and waits for a line on stdin; then it sends the
goals one after another (each after the previous one's goal response), `gap_sec` apart, and
writes, for every goal: seed, sent/answered/started/ended times (time.monotonic, which all
processes of a host share), status, message and image count, to OUT. With "hold" it prints
RUNNING once its first goal is denoising and then waits to be killed (a client that vanishes
mid-goal). Run it only through scripts/test.sh (it starts rclpy).
"""

import json
import sys
import time

from ros_harness import confinement_problem, RosClient, wait_for


def _first(run, stages):
    """Time of the first feedback in one of `stages`, or None."""
    return next((t for t, fb in list(run.feedback) if fb.stage in stages), None)


def _record(goal, run, response, ended_at):
    """One goal's figures as a JSON-able dict."""
    return {
        'seed': goal.get('seed', -1), 'sent_at': run.sent_at,
        'answered_at': run.answered_at, 'started_at': _first(run, ('loading', 'base')),
        'ended_at': ended_at,
        'status': None if response is None else response.status,
        'message': None if response is None else response.result.message,
        'images': 0 if response is None else len(response.result.images),
        'queue_positions': [fb.queue_position for _, fb in list(run.feedback)
                            if fb.stage == 'queued'],
    }


def main(argv):
    """Run the client described by argv (see the module docstring); return the exit code."""
    action, spec_path, out_path = argv
    problem = confinement_problem()
    if problem:
        print(f'refusing to start ROS: {problem}', file=sys.stderr)
        return 2
    with open(spec_path) as spec_file:
        spec = json.load(spec_file)
    client = RosClient('reliability_client')
    try:
        from sdxl_ros.action import GenerateImage
        from ros_harness import GoalRun
        action_client = client.action_client(action)
        feedback_topic = f'{action}/_action/feedback'
        if not action_client.wait_for_server(timeout_sec=60) or not wait_for(
                lambda: client.node.count_publishers(feedback_topic), 60):
            print(f'no action server {action}', file=sys.stderr)
            return 3
        print('READY', flush=True)
        sys.stdin.readline()
        runs = []
        for index, goal in enumerate(spec['goals']):
            if index:
                time.sleep(spec.get('gap_sec', 0.0))
            run = GoalRun(action_client, GenerateImage.Goal(**goal))
            run.accepted(60)
            run.answered_at = time.monotonic()
            run.ended_at = None
            if run.handle.accepted:
                run._result_future.add_done_callback(
                    lambda _, run=run: setattr(run, 'ended_at', time.monotonic()))
            runs.append(run)
        if spec.get('hold'):
            wait_for(lambda: _first(runs[0], ('base',)), 60)
            print('RUNNING', flush=True)
            time.sleep(3600)
            return 0
        records = []
        for goal, run in zip(spec['goals'], runs):
            try:
                response = run.result(spec.get('timeout_sec', 180))
            except TimeoutError:
                response = None
            records.append(_record(goal, run, response, run.ended_at))
        with open(out_path, 'w') as out:
            json.dump(records, out)
        return 0
    finally:
        client.close()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
