# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""sdxl_node refuses bad sampler/schedule goals with reasons and keeps serving (real process)."""

import pytest

from ros_harness import assert_refused

pytestmark = pytest.mark.ros

BAD_GOALS = [
    ({'schedule_type': 'Warp'}, ["unknown schedule_type 'Warp'", 'Karras', 'SGM Uniform']),
    ({'scheduler': 'Restart'}, ["'Restart'", 'no diffusers scheduler', 'LCM']),
    ({'scheduler': 'Nope'}, ["unknown scheduler 'Nope'", 'Euler a']),
    ({'scheduler': 'DDIM', 'schedule_type': 'Karras'},
     ['sampler DDIM cannot use schedule type Karras', 'SGM Uniform']),
    ({'scheduler': 'Euler', 'schedule_type': 'DDIM', 'steps': 7},
     ['DDIM gives 8 steps, not 7', '8, 9, 10']),
    ({'schedule_type': 'Align Your Steps', 'steps': 1}, ['Align Your Steps at 1 step']),
    ({'guidance_scale': -1.0}, ['guidance_scale -1', '0..30']),
]


def test_bad_schedule_goals_are_refused_and_the_node_keeps_serving(ros_client, shared_node):
    from action_msgs.msg import GoalStatus
    action = shared_node.name_of('generate')
    for fields, words in BAD_GOALS:
        run = ros_client.send_goal(action, **dict({'prompt': 'a robot'}, **fields))
        assert_refused(run.result(30), *words)
    assert shared_node.alive
    # A few-step goal right after: LCM, 2 steps, CFG off; the infotext names both choices.
    run, response = ros_client.generate(action, prompt='still here', scheduler='lcm',
                                        schedule_type='sgm_uniform', steps=2,
                                        guidance_scale=1.0, refiner_switch=1.0, seed=4)
    assert response.status == GoalStatus.STATUS_SUCCEEDED, response.result.message
    assert 'Sampler: LCM, Schedule type: SGM Uniform, CFG scale: 1' in \
        response.result.parameters
    assert max(fb.total_steps for _, fb in run.feedback) == 2
