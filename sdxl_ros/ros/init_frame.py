# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Take the next frame of a camera topic for one img2img goal (init_image_topic).

The subscription exists only while the goal waits: created when the goal starts running (so
an older frame is never used), destroyed once a frame came, the wait timed out or the goal
was cancelled. It uses the sensor-data QoS (best effort, volatile, depth 5): a best-effort
subscription matches both reliable and best-effort publishers, which is what camera drivers
use; a reliable one would not match a best-effort camera.
"""

import threading
import time

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

IMAGE_TYPE = 'sensor_msgs/msg/Image'
#: How often the wait looks at its stop condition (seconds).
_POLL_SEC = 0.05


def resolved_name(node, topic):
    """Return the fully qualified name of `topic` for `node` (feature-checked for Humble)."""
    if topic.startswith('/'):
        return topic
    resolve = getattr(node, 'resolve_topic_name', None)
    return resolve(topic) if resolve is not None else None


def type_problem(node, topic):
    """
    Return why `topic` cannot give an Image (it carries another type), or ''.

    The publishers' types are asked for: the topic's listed types also hold the Image type
    of this node's own subscription while it waits.
    """
    name = resolved_name(node, topic)
    if name is None:
        return ''
    publishers = getattr(node, 'get_publishers_info_by_topic', None)
    if publishers is not None:
        types = sorted({info.topic_type for info in publishers(name)})
        if types and IMAGE_TYPE not in types:
            return f'{name} carries {", ".join(types)}, not {IMAGE_TYPE}'
        return ''
    for known, types in node.get_topic_names_and_types():
        if known == name and IMAGE_TYPE not in types:
            return f'{name} carries {", ".join(types)}, not {IMAGE_TYPE}'
    return ''


def wait_for_frame(node, topic, timeout, stopped, callback_group=None):
    """
    Subscribe to `topic`, wait for its next Image and unsubscribe; return (msg, problem).

    (None, '') when `stopped()` became true first (cancel); (None, reason) when the topic
    name is invalid, carries another type or sent nothing within `timeout` seconds.
    """
    problem = type_problem(node, topic)
    if problem:
        return None, problem
    frames = []
    arrived = threading.Event()

    def on_frame(msg):
        if not frames:
            frames.append(msg)
            arrived.set()
    try:
        subscription = node.create_subscription(Image, topic, on_frame, qos_profile_sensor_data,
                                                callback_group=callback_group)
    except Exception as error:  # rclpy raises its own InvalidTopicNameException here
        return None, f'{topic!r} is not a usable topic name: {error}'
    try:
        deadline = time.monotonic() + timeout
        while not arrived.wait(_POLL_SEC):
            if stopped():
                return None, ''
            if time.monotonic() > deadline:
                problem = type_problem(node, topic)
                if problem:
                    return None, problem
                publishers = node.count_publishers(topic)
                return None, (f'no frame arrived on {topic} within {timeout:g} s '
                              f'({publishers} publisher(s) of it seen)')
        return frames[0], ''
    finally:
        node.destroy_subscription(subscription)
