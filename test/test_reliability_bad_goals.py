# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Reliability: bad goals. Every kind is refused or served as action/GenerateImage.action says.

Each case sends one goal to a real sdxl_node (tiny preset, 64x64 default, 2 steps) and checks
its terminal state and `message`; after every refusal the node must serve the next goal.
"""

import pytest

from reliability_report import finish, module_node, record
from ros_harness import assert_refused, assert_served, status_names

pytestmark = [pytest.mark.ros, pytest.mark.reliability]

INT64_MAX = 2 ** 63 - 1
UINT32_MAX = 2 ** 32 - 1
NAN = float('nan')
INF = float('inf')
MIXED_SCRIPTS = 'ロボット robot робот 机器人 روبوت ρομπότ 🤖 café'

#: Node parameters of this module: small defaults so served cases are quick.
NODE = {'default_steps': 2, 'max_images': 4, 'max_queue': 2}


def refused(*words):
    """Expect a refusal whose message names `words`."""
    return ('refused', words)


def served(**expect):
    """Expect success; `expect` may give size=(w, h), images, seeds, infotext=[...], ..."""
    return ('served', expect)


# (id, goal fields over {'prompt': 'a robot'}, expectation)
CASES = [
    # An empty prompt generates, as in A1111.
    ('empty-prompt', {'prompt': ''}, served(size=(64, 64))),
    ('whitespace-prompt', {'prompt': ' \t\n\r  '}, served(size=(64, 64))),
    ('unicode-space-prompt', {'prompt': '\u3000\u00a0\u2003'}, served(size=(64, 64))),
    ('control-chars-only-prompt', {'prompt': '\x01\x02\x1b\x7f\x9f'},
     served(size=(64, 64))),
    ('prompt-beyond-tokenizer', {'prompt': 'a red robot in a garden, ' * 150},
     served(size=(64, 64))),
    ('prompt-over-limit', {'prompt': 'x' * 4001}, refused('prompt', '4001', '4000')),
    ('prompt-100k', {'prompt': 'robot ' * 20000}, refused('prompt', '4000')),
    ('negative-prompt-over-limit', {'negative_prompt': 'y' * 5000},
     refused('negative_prompt', '4000')),
    ('control-chars-in-prompt', {'prompt': 'a\x07 robot\x1b[31m red\x00'},
     served(infotext=['a robot[31m red'], not_infotext=['\x07', '\x1b'])),
    ('mixed-scripts', {'prompt': MIXED_SCRIPTS, 'negative_prompt': 'размытый 模糊'},
     served(infotext=[MIXED_SCRIPTS, 'Negative prompt: размытый 模糊'])),
    ('size-0-is-default', {'width': 0, 'height': 0}, served(size=(64, 64))),
    ('width-7', {'width': 7}, refused('width 7', 'out of range', '64..2048')),
    ('height-7', {'height': 7}, refused('height 7', 'out of range')),
    ('width-1001', {'width': 1001}, refused('width 1001', 'multiple of 8', '1000 or 1008')),
    ('height-100000', {'height': 100000}, refused('height 100000', 'out of range')),
    ('width-uint32-max', {'width': UINT32_MAX}, refused('width', 'out of range')),
    ('size-non-square', {'width': 72, 'height': 80}, served(size=(72, 80))),
    ('steps-0-is-default', {'steps': 0}, served(infotext=['Steps: 2,'])),
    ('steps-151', {'steps': 151}, refused('steps 151', '1..150')),
    ('steps-uint32-max', {'steps': UINT32_MAX}, refused('steps', '1..150')),
    ('steps-1', {'steps': 1}, served(infotext=['Steps: 1,'])),
    ('cfg-nan', {'guidance_scale': NAN}, refused('guidance_scale', 'finite')),
    ('cfg-inf', {'guidance_scale': INF}, refused('guidance_scale', 'finite')),
    ('cfg-minus-inf', {'guidance_scale': -INF}, refused('guidance_scale', 'finite')),
    ('cfg-negative', {'guidance_scale': -7.0}, refused('guidance_scale -7', '1..30')),
    ('cfg-below-1', {'guidance_scale': 0.5}, refused('guidance_scale 0.5', '1..30')),
    ('cfg-above-30', {'guidance_scale': 30.5}, refused('guidance_scale 30.5', '1..30')),
    ('cfg-float32-max', {'guidance_scale': 3.4e38}, refused('guidance_scale', '1..30')),
    ('cfg-1-disables-guidance', {'guidance_scale': 1.0}, served(infotext=['CFG scale: 1,'])),
    ('switch-negative', {'refiner_switch': -0.1}, refused('refiner_switch', '(0, 1]')),
    ('switch-above-1', {'refiner_switch': 1.5}, refused('refiner_switch 1.5', '(0, 1]')),
    ('switch-nan', {'refiner_switch': NAN}, refused('refiner_switch', 'finite')),
    ('switch-inf', {'refiner_switch': INF}, refused('refiner_switch', 'finite')),
    ('switch-1-base-only', {'refiner_switch': 1.0}, served(not_infotext=['Refiner:'])),
    ('switch-tiny', {'refiner_switch': 1e-6}, served(size=(64, 64))),
    ('seed-minus-1-random', {'seed': -1}, served(seed_range=(0, 2 ** 32))),
    ('seed-minus-2', {'seed': -2}, refused('seed -2', 'out of range')),
    ('seed-2-pow-32', {'seed': 2 ** 32}, refused('seed 4294967296', 'out of range')),
    ('seed-uint32-max', {'seed': UINT32_MAX}, served(seeds=[UINT32_MAX])),
    ('seed-int64-max', {'seed': INT64_MAX}, refused('seed', 'out of range')),
    ('seed-int64-min', {'seed': -INT64_MAX - 1}, refused('seed', 'out of range')),
    ('seed-runs-past-limit', {'seed': UINT32_MAX, 'num_images': 2},
     refused('seed', 'runs past')),
    ('scheduler-unknown', {'scheduler': 'Warp Drive'}, refused("'Warp Drive'", 'Euler a')),
    ('scheduler-path', {'scheduler': '../../etc/passwd'}, refused('unknown scheduler')),
    ('scheduler-sloppy-spelling', {'scheduler': '  euler   A '},
     served(infotext=['Sampler: Euler a,'])),
    ('num-images-0-is-1', {'num_images': 0}, served(images=1)),
    ('num-images-2', {'num_images': 2, 'seed': 40}, served(images=2, seeds=[40, 41])),
    ('num-images-too-many', {'num_images': 5}, refused('num_images 5', '1..4')),
    ('num-images-uint32-max', {'num_images': UINT32_MAX}, refused('num_images', '1..4')),
    ('combo-all-bad', {'prompt': '', 'width': 7, 'guidance_scale': NAN, 'seed': -2,
                       'scheduler': '?', 'num_images': 99}, refused('width 7')),
    ('combo-valid-size-bad-cfg', {'width': 128, 'height': 64, 'guidance_scale': -INF},
     refused('guidance_scale')),
    ('combo-all-defaults', {'width': 0, 'height': 0, 'steps': 0, 'guidance_scale': 0.0,
                            'refiner_switch': 0.0, 'seed': -1, 'scheduler': '',
                            'num_images': 0, 'negative_prompt': ''},
     served(size=(64, 64), images=1, infotext=['Steps: 2,', 'Sampler: DPM++ 2M Karras'])),
    ('combo-edges-served', {'width': 64, 'height': 2048, 'steps': 1, 'guidance_scale': 30.0,
                            'refiner_switch': 0.5, 'seed': 0, 'scheduler': 'DDIM'},
     served(size=(64, 2048), seeds=[0])),
]


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory):
    """One node for the module."""
    yield from module_node(ros_client, tmp_path_factory, NODE)


def _check_served(response, expect):
    assert_served(response)
    result = response.result
    width, height = expect.get('size', (None, None))
    for image in result.images:
        assert image.encoding == 'rgb8' and image.step == 3 * image.width
        if width:
            assert (image.width, image.height) == (width, height)
    if 'images' in expect:
        assert len(result.images) == expect['images']
    assert len(result.seeds) == len(result.images)
    if 'seeds' in expect:
        assert list(result.seeds) == expect['seeds']
    low, high = expect.get('seed_range', (0, 2 ** 32))
    assert all(low <= seed < high for seed in result.seeds)
    for text in expect.get('infotext', ()):
        assert text in result.parameters, result.parameters
    for text in expect.get('not_infotext', ()):
        assert text not in result.parameters, result.parameters


@pytest.mark.parametrize('fields, expect', [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_goal(ros_client, node, fields, expect):
    """The goal is refused with a reason or served per the contract; the next goal is served."""
    action = node.name_of('generate')
    run = ros_client.send_goal(action, **dict({'prompt': 'a robot'}, **fields))
    response = finish(run, 60)
    kind, detail = expect
    if kind == 'refused':
        assert_refused(response, *detail)
        assert run.feedback == [], 'a refused goal must not get feedback'
        _, after = ros_client.generate(action, prompt='the next goal', steps=1)
        assert record(after).status == status_names().STATUS_SUCCEEDED
    else:
        _check_served(response, detail)
    assert node.alive
