# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
img2img and inpainting through the real sdxl_node: init_image, init_image_topic, bad input.

The node runs in its own process (tiny preset, CPU); the test process is a real rclpy client
that also publishes the camera frames. Every refusal is followed by a served goal.
"""

import itertools
import os
import threading

import numpy as np
from PIL import Image as PilImage, ImageFilter
import pytest

from reliability_report import module_node
from ros_harness import assert_refused, assert_served, other_type_topic, wait_for

pytestmark = pytest.mark.ros

NODE = {'default_steps': 4, 'init_image_timeout_sec': 2.0, 'max_queue': 2}
_topics = itertools.count(1)


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory):
    """One node for the module."""
    yield from module_node(ros_client, tmp_path_factory, NODE)


def picture(seed=0, height=64, width=64):
    """Make a smooth random RGB test image, uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return np.asarray(PilImage.fromarray(small).resize((width, height), PilImage.BILINEAR))


def rgb_msg(array):
    from sdxl_ros.ros.image_conversion import numpy_to_image_msg
    return numpy_to_image_msg(array)


def mono_msg(array):
    from sdxl_ros.ros.image_conversion import numpy_to_mono_msg
    return numpy_to_mono_msg(array)


def raw_msg(**fields):
    from sensor_msgs.msg import Image
    return Image(**fields)


def pixels(msg):
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy
    return image_msg_to_numpy(msg)


def topic_name():
    return f'/cam{os.getpid()}_{next(_topics)}/image_raw'


def test_init_image_goal_is_served_with_its_size_and_strength(ros_client, node):
    """width/height 0 take the init image's size; default strength 0.75: A1111's 8*0.75+1 = 7."""
    run, response = ros_client.generate(node.name_of('generate'), prompt='a robot', seed=3,
                                        steps=8, init_image=rgb_msg(picture(1, 72, 80)))
    assert_served(response)
    image = response.result.images[0]
    assert (image.width, image.height, image.encoding) == (80, 72, 'rgb8')
    text = response.result.parameters
    assert 'Denoising strength: 0.75, Resize mode: Just resize' in text
    assert 'Size: 80x72' in text
    denoising = [fb for _, fb in run.feedback if fb.stage in ('base', 'refiner')]
    assert [fb.step for fb in denoising][-1] == 7
    assert {fb.total_steps for fb in denoising} == {7}


def test_inpainting_keeps_the_unmasked_pixels(ros_client, node):
    """A bgr8 init image and a mono8 mask: outside the blurred mask the pixels are the input's."""
    init = picture(2)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 16:40] = 255
    bgr = raw_msg(height=64, width=64, encoding='bgr8', step=192,
                  data=np.ascontiguousarray(init[:, :, ::-1]).tobytes())
    _, response = ros_client.generate(
        node.name_of('generate'), prompt='a robot', steps=4, denoising_strength=1.0,
        init_image=bgr, mask_image=mono_msg(mask), mask_blur=3, width=64, height=64)
    assert_served(response)
    result = pixels(response.result.images[0])
    outside = np.asarray(PilImage.fromarray(mask).filter(ImageFilter.GaussianBlur(3))) == 0
    assert np.array_equal(result[outside], init[outside])
    assert not np.array_equal(result[mask == 255], init[mask == 255])
    assert 'Mask blur: 3' in response.result.parameters


def test_init_image_topic_takes_the_next_frame_after_the_goal_starts(ros_client, node):
    """A frame published before the goal is not used; the one after it is (its size shows)."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    topic = topic_name()
    publisher = ros_client.node.create_publisher(Image, topic, qos_profile_sensor_data)
    before, after = rgb_msg(picture(3, 64, 64)), rgb_msg(picture(4, 80, 96))
    publisher.publish(before)
    stop = threading.Event()
    try:
        run = ros_client.send_goal(node.name_of('generate'), prompt='a robot', steps=4,
                                   init_image_topic=topic)
        assert run.wait_feedback(lambda fb: fb.stage == 'init_image', 30), run.stages()

        def publish():
            while not stop.is_set():
                publisher.publish(after)
                stop.wait(0.1)
        threading.Thread(target=publish, daemon=True).start()
        response = run.result(120)
    finally:
        stop.set()
    assert_served(response)
    image = response.result.images[0]
    assert (image.width, image.height) == (96, 80)
    # The subscription was for this goal only: the node no longer subscribes to the topic.
    assert wait_for(lambda: ros_client.node.count_subscribers(topic) == 0, 10)
    ros_client.node.destroy_publisher(publisher)


def test_cancel_while_waiting_for_the_frame(ros_client, node):
    run = ros_client.send_goal(node.name_of('generate'), prompt='a robot',
                               init_image_topic=topic_name())
    assert run.wait_feedback(lambda fb: fb.stage == 'init_image', 30)
    run.cancel()
    response = run.result(30)
    from action_msgs.msg import GoalStatus
    assert response.status == GoalStatus.STATUS_CANCELED
    assert 'waiting for the init image' in response.result.message


MASK_32 = np.full((32, 64), 255, np.uint8)

# (id, goal fields over {'prompt': 'a robot'}, words the refusal names)
BAD = [
    ('encoding-16UC1', {'init_image': lambda: raw_msg(height=2, width=2, encoding='16UC1',
                                                      step=4, data=b'\0' * 8)},
     ['init_image', "unsupported encoding '16UC1'", 'mono8']),
    ('zero-size', {'init_image': lambda: raw_msg(height=0, width=0, encoding='rgb8', step=0)},
     ['init_image', 'image is 0x0']),
    ('step-too-small', {'init_image': lambda: raw_msg(height=4, width=4, encoding='rgb8',
                                                      step=8, data=b'\0' * 32)},
     ['init_image', 'step 8 is less than width 4 x 3']),
    ('data-too-short', {'init_image': lambda: raw_msg(height=4, width=4, encoding='rgba8',
                                                      step=16, data=b'\0' * 60)},
     ['init_image', 'too short', '60 bytes', '= 64']),
    ('mask-not-mono8', {'init_image': lambda: rgb_msg(picture()),
                        'mask_image': lambda: rgb_msg(picture())},
     ['mask_image', "'rgb8' is not mono8"]),
    ('mask-other-size', {'init_image': lambda: rgb_msg(picture()),
                         'mask_image': lambda: mono_msg(MASK_32)},
     ['mask_image is 64x32', 'init image is 64x64']),
    ('strength-above-1', {'init_image': lambda: rgb_msg(picture()), 'denoising_strength': 1.5},
     ['denoising_strength 1.5', '(0, 1]']),
    ('strength-negative', {'init_image': lambda: rgb_msg(picture()),
                           'denoising_strength': -0.5},
     ['denoising_strength -0.5', '(0, 1]']),
    ('both-image-and-topic', {'init_image': lambda: rgb_msg(picture()),
                              'init_image_topic': '/camera/image_raw'},
     ['init_image or init_image_topic, not both']),
    ('topic-silent', {'init_image_topic': topic_name}, ['no frame arrived', 'within 2 s']),
    ('topic-other-type', {'init_image_topic': 'OTHER'},
     ['init_image_topic', 'carries std_msgs/msg/String', 'not sensor_msgs/msg/Image']),
]


@pytest.mark.parametrize('fields, words', [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_input_is_refused_and_the_node_keeps_serving(ros_client, node, fields, words):
    values = {'prompt': 'a robot'}
    publisher = None
    for key, value in fields.items():
        if value == 'OTHER':
            value, publisher = other_type_topic(ros_client, topic_name())
        values[key] = value() if callable(value) else value
    try:
        run = ros_client.send_goal(node.name_of('generate'), **values)
        response = run.result(60)
    finally:
        if publisher is not None:
            ros_client.node.destroy_publisher(publisher)
    assert_refused(response, *words)
    _, after = ros_client.generate(node.name_of('generate'), prompt='the next goal', steps=1)
    assert_served(after)
    assert node.alive
