#!/usr/bin/env python3
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The client "host" of test_two_hosts.py: `two_host_client.py SPEC.json OUT.json`.

A plain rclpy process: sends the goals of SPEC one after another to SPEC['action'], listens to
`<node>/image` and `<node>/image/compressed`, and writes per goal its status, the goal time
(send to result), and for each image the delivery time of the raw and the compressed message
(receive time minus header stamp: both "hosts" share this machine's clock), their sizes and
whether the pixels agree (result = raw = decoded PNG).
"""

import json
import sys
import threading
import time


def _stamp(header_or_time):
    stamp = getattr(header_or_time, 'stamp', header_or_time)
    return stamp.sec + stamp.nanosec * 1e-9, (stamp.sec, stamp.nanosec)


def main(spec_path, out_path):
    """Run the goals of the spec; write the measurements as JSON."""
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sdxl_ros.action import GenerateImage
    from sdxl_ros.ros.compressed_image import compressed_msg_to_numpy
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy
    from sensor_msgs.msg import CompressedImage, Image

    spec = json.loads(open(spec_path).read())
    rclpy.init()
    node = rclpy.create_node('two_host_client')
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    received = {'raw': {}, 'compressed': {}}
    lock = threading.Lock()

    def keep(kind):
        def callback(msg):
            now = time.time()
            with lock:
                received[kind][_stamp(msg.header)[1]] = (now, msg)
        return callback

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    node.create_subscription(Image, spec['image_topic'], keep('raw'), qos)
    node.create_subscription(CompressedImage, spec['image_topic'] + '/compressed',
                             keep('compressed'), qos)
    client = ActionClient(node, GenerateImage, spec['action'])
    report = {'goals': [], 'discovery_sec': None}
    started = time.monotonic()
    if not client.wait_for_server(timeout_sec=spec['timeout']):
        report['error'] = 'no action server'
        return _write(out_path, report, node)
    deadline = time.monotonic() + spec['timeout']
    while (node.count_publishers(spec['image_topic']) < 1
           or node.count_publishers(spec['image_topic'] + '/compressed') < 1):
        if time.monotonic() > deadline:
            report['error'] = 'image publishers not discovered'
            return _write(out_path, report, node)
        time.sleep(0.1)
    report['discovery_sec'] = round(time.monotonic() - started, 2)
    time.sleep(1.0)   # let the subscriptions match the writers before the first image
    for fields in spec['goals']:
        report['goals'].append(_run_goal(client, GenerateImage.Goal(**fields), spec, received,
                                         lock, image_msg_to_numpy, compressed_msg_to_numpy))
    return _write(out_path, report, node)


def _run_goal(client, goal, spec, received, lock, to_numpy, decompress):
    """Send one goal, wait for its result and its images on both topics; measure."""
    sent = time.time()
    handle_future = client.send_goal_async(goal)
    entry = {'status': None, 'message': 'no answer', 'images': []}
    if not _wait(handle_future.done, spec['timeout']) or not handle_future.result().accepted:
        return entry
    result_future = handle_future.result().get_result_async()
    if not _wait(result_future.done, spec['timeout']):
        entry['message'] = f'no result within {spec["timeout"]} s'
        return entry
    response = result_future.result()
    entry.update(status=int(response.status), message=response.result.message,
                 goal_sec=round(time.time() - sent, 3),
                 elapsed_sec=round(float(response.result.elapsed_sec), 3),
                 result_bytes=sum(len(image.data) for image in response.result.images))
    keys = [_stamp(t)[1] for t in response.result.image_stamps]
    _wait(lambda: all(k in received['raw'] and k in received['compressed'] for k in keys),
          spec['timeout'])
    with lock:
        raw, compressed = dict(received['raw']), dict(received['compressed'])
    for index, key in enumerate(keys):
        stamp = key[0] + key[1] * 1e-9
        image = {'stamp': list(key)}
        if key in raw:
            at, msg = raw[key]
            image.update(raw_sec=round(at - stamp, 3), raw_bytes=len(msg.data))
            if index < len(response.result.images):
                image['result_equals_raw'] = \
                    bytes(response.result.images[index].data) == bytes(msg.data)
        if key in compressed:
            at, msg = compressed[key]
            image.update(compressed_sec=round(at - stamp, 3), compressed_bytes=len(msg.data),
                         format=msg.format)
            if key in raw:
                image['compressed_equals_raw'] = bool(
                    (decompress(msg) == to_numpy(raw[key][1])).all())
        entry['images'].append(image)
    return entry


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _write(out_path, report, node):
    with open(out_path, 'w') as out:
        json.dump(report, out, indent=1)
    node.destroy_node()
    import rclpy
    rclpy.try_shutdown()
    return 0 if 'error' not in report else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2]))
