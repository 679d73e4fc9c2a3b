# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
ControlNet through the real sdxl_node: depth topics, multi-unit goals, infotext, bad input.

The node runs in its own process (tiny preset, CPU, the `tiny` ControlNet); the test process
is a real rclpy client that also publishes the depth frames. Every refusal is followed by a
served goal.
"""

import itertools
import json
import os
import threading

import numpy as np
import pytest

from reliability_report import module_node
from ros_harness import assert_refused, assert_served, other_type_topic, wait_for

pytestmark = pytest.mark.ros

NODE = {'default_steps': 4, 'init_image_timeout_sec': 2.0, 'max_control_units': 2}
_topics = itertools.count(1)


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory):
    """One node for the module, with a controlnet_dir holding two foreign ControlNets."""
    folder = tmp_path_factory.mktemp('controlnets')
    for name, width in (('sd15_depth', 768), ('refiner_depth', 1280)):
        (folder / name).mkdir()
        (folder / name / 'config.json').write_text(json.dumps(
            {'_class_name': 'ControlNetModel', 'cross_attention_dim': width}))
    yield from module_node(ros_client, tmp_path_factory,
                           dict(NODE, controlnet_dir=str(folder)))


def topic_name():
    return f'/depth{os.getpid()}_{next(_topics)}/image_raw'


def raw_msg(**fields):
    from sensor_msgs.msg import Image
    return Image(**fields)


def depth_msg(height=48, width=64):
    """Return a 16UC1 frame: a near box (0.8 m) before a far wall (3 m), with a row of holes."""
    depth = np.full((height, width), 3000, '<u2')
    depth[10:30, 16:40] = 800
    depth[0, :] = 0
    return raw_msg(height=height, width=width, encoding='16UC1', step=2 * width,
                   data=depth.tobytes())


def rgb_msg(height=64, width=64):
    from sdxl_ros.ros.image_conversion import numpy_to_image_msg
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:, width // 2:] = 255
    return numpy_to_image_msg(picture)


def unit(**fields):
    from sdxl_ros.msg import ControlUnit
    values = {'model': 'tiny', 'module': 'depth_metric'}
    values.update(fields)
    for key, value in list(values.items()):
        values[key] = value() if callable(value) else value
    return ControlUnit(**values)


GOAL = {'prompt': 'a room', 'seed': 5, 'width': 64, 'height': 64}


def test_list_models_names_the_controlnets(ros_client, node):
    from sdxl_ros.srv import ListModels
    response = ros_client.call(ListModels, node.name_of('list_models'))
    assert list(response.controlnets) == ['refiner_depth', 'sd15_depth', 'tiny', 'tiny-union']


def test_depth_topic_goal_takes_the_next_frame_and_writes_the_unit(ros_client, node):
    """A depth camera publishing 16UC1 on a topic steers the picture; infotext names the unit."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    _, plain = ros_client.generate(node.name_of('generate'), **GOAL)
    assert_served(plain)
    topic = topic_name()
    publisher = ros_client.node.create_publisher(Image, topic, qos_profile_sensor_data)
    stop = threading.Event()
    try:
        run = ros_client.send_goal(node.name_of('generate'), **GOAL, control=[
            unit(image_topic=topic, weight=0.8)])
        assert run.wait_feedback(lambda fb: fb.stage == 'control_image', 30), run.stages()

        def publish():
            while not stop.is_set():
                publisher.publish(depth_msg())
                stop.wait(0.1)
        threading.Thread(target=publish, daemon=True).start()
        response = run.result(120)
    finally:
        stop.set()
    assert_served(response)
    assert ('ControlNet 0: "Module: depth_metric, Model: tiny, Weight: 0.8, Resize Mode: Crop '
            'and Resize, ') in response.result.parameters
    assert bytes(response.result.images[0].data) != bytes(plain.result.images[0].data)
    assert wait_for(lambda: ros_client.node.count_subscribers(topic) == 0, 10)
    ros_client.node.destroy_publisher(publisher)


def test_two_units_and_weight_zero(ros_client, node):
    """Two units are served; weight 0 on both gives exactly the picture without control."""
    _, plain = ros_client.generate(node.name_of('generate'), **GOAL)
    _, both = ros_client.generate(node.name_of('generate'), **GOAL, control=[
        unit(image=depth_msg), unit(image=rgb_msg, module='none',
                                    control_mode='My prompt is more important')])
    _, zero = ros_client.generate(node.name_of('generate'), **GOAL, control=[
        unit(image=depth_msg, weight=0.0), unit(image=rgb_msg, module='none', weight=0.0)])
    for response in (plain, both, zero):
        assert_served(response)
    assert 'ControlNet 1: "Module: none' in both.result.parameters
    assert bytes(both.result.images[0].data) != bytes(plain.result.images[0].data)
    assert bytes(zero.result.images[0].data) == bytes(plain.result.images[0].data)


def test_cancel_while_waiting_for_a_control_frame(ros_client, node):
    from action_msgs.msg import GoalStatus
    run = ros_client.send_goal(node.name_of('generate'), **GOAL,
                               control=[unit(image_topic=topic_name())])
    assert run.wait_feedback(lambda fb: fb.stage == 'control_image', 30), run.stages()
    run.cancel()
    response = run.result(30)
    assert response.status == GoalStatus.STATUS_CANCELED
    assert 'waiting for the control image of unit 0' in response.result.message


FLOAT_FRAME = {'height': 2, 'width': 2, 'encoding': '32FC1', 'step': 8, 'data': b'\0' * 16}

# (id, units, words the refusal names)
BAD = [
    ('unknown-model', [{'model': 'nope', 'image': depth_msg}],
     ["unknown ControlNet 'nope'", 'tiny']),
    ('sd15-model', [{'model': 'sd15_depth', 'image': depth_msg}],
     ['SD 1.x', 'width 768', 'SDXL ControlNet']),
    ('refiner-model', [{'model': 'refiner_depth', 'image': depth_msg}],
     ['the SDXL refiner', 'width 1280']),
    ('unknown-module', [{'module': 'sobel', 'image': rgb_msg}], ['sobel', 'unknown']),
    ('depth-metric-on-rgb8', [{'image': rgb_msg}],
     ['control[0].image', 'needs a depth frame', "'rgb8'"]),
    ('canny-on-32FC1', [{'module': 'canny', 'image': lambda: raw_msg(**FLOAT_FRAME)}],
     ['control[0].image', 'canny needs an 8-bit picture', "'32FC1'"]),
    ('zero-size', [{'image': lambda: raw_msg(height=0, width=0, encoding='16UC1')}],
     ['control[0].image', '0x0']),
    ('step-too-small', [{'image': lambda: raw_msg(height=2, width=2, encoding='16UC1', step=3,
                                                  data=b'\0' * 6)}],
     ['step 3 is less than width 2 x 2']),
    ('no-image', [{}], ['control[0] has no image']),
    ('image-and-topic', [{'image': depth_msg, 'image_topic': '/depth'}],
     ['either image or image_topic']),
    ('weight-above-2', [{'image': depth_msg, 'weight': 2.5}], ['weight 2.5', '0..2']),
    ('start-not-below-end', [{'image': depth_msg, 'guidance_start': 0.5,
                              'guidance_end': 0.5}], ['0 <= start < end <= 1']),
    ('end-above-1', [{'image': depth_msg, 'guidance_end': 1.5}], ['guidance_end 1.5']),
    ('union-type-on-plain', [{'image': depth_msg, 'control_type': 'Depth'}],
     ['union ControlNets', "'tiny' is a plain one"]),
    ('too-many-units', [{'image': depth_msg}] * 3, ['3 ControlNet units', 'at most 2']),
    ('topic-silent', [{'image_topic': topic_name}],
     ['control[0].image_topic', 'no frame arrived', 'within 2 s']),
    ('topic-other-type', [{'image_topic': 'OTHER'}],
     ['control[0].image_topic', 'carries std_msgs/msg/String']),
]


@pytest.mark.parametrize('units, words', [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_units_are_refused_and_the_node_keeps_serving(ros_client, node, units, words):
    publisher = None
    control = []
    for fields in units:
        fields = dict(fields)
        if fields.get('image_topic') == 'OTHER':
            fields['image_topic'], publisher = other_type_topic(ros_client, topic_name())
        control.append(unit(**fields))
    try:
        run = ros_client.send_goal(node.name_of('generate'), **GOAL, control=control)
        response = run.result(60)
    finally:
        if publisher is not None:
            ros_client.node.destroy_publisher(publisher)
    assert_refused(response, *words)
    _, after = ros_client.generate(node.name_of('generate'), prompt='the next goal', steps=1)
    assert_served(after)
    assert node.alive


def _cli(node, *argv, timeout=120):
    import subprocess
    import sys
    from ros_harness import client_executable
    command = [sys.executable, str(client_executable()), '--action',
               node.name_of('generate'), '--quiet', *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_cli_control_and_from_png_reproduce_the_picture(node, tmp_path):
    """--control with a 16-bit depth PNG; --from-png asks for it again and gets the same image."""
    from PIL import Image as PilImage
    from sdxl_ros.engine.png_io import read_png_parameters
    depth = np.full((48, 64), 3000, np.uint16)
    depth[10:30, 16:40] = 800
    PilImage.fromarray(depth).save(tmp_path / 'depth.png')
    out, again = tmp_path / 'out.png', tmp_path / 'again.png'
    done = _cli(node, 'a room', '--seed', '3', '--width', '64', '--height', '64', '--output',
                str(out), '--control',
                f'depth_metric:{tmp_path / "depth.png"}:model=tiny:weight=0.7:end=0.8')
    assert done.returncode == 0, done.stderr
    text = read_png_parameters(out)
    assert 'ControlNet 0: "Module: depth_metric, Model: tiny, Weight: 0.7, ' in text
    assert 'Guidance End: 0.8, ' in text
    missing = _cli(node, '--from-png', str(out), '--output', str(again))
    assert missing.returncode == 2
    assert 'used 1 ControlNet unit(s) (0: depth_metric with tiny)' in missing.stderr
    done = _cli(node, '--from-png', str(out), '--output', str(again), '--control',
                f':{tmp_path / "depth.png"}')
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(PilImage.open(again)), np.asarray(PilImage.open(out)))
    assert read_png_parameters(again) == text
