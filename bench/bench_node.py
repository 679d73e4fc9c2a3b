# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
What the ROS layer costs per goal: goal overhead, ~/image latency, and where the time goes.

Starts the real sdxl_node (tiny preset on the CPU by default: this measures transport, not
generation) and a subscriber in a process of its own, then sends goals through a real rclpy
action client and reports, per goal:

- overhead = goal sent -> result received, minus the engine's time (`result.elapsed_sec`);
- ~/image latency = receive time in the subscriber process minus the header stamp (the node
  stamps the message before converting the numpy image, so conversion is included).

Then it times the pieces in this process, on a 1024x1024 image: numpy -> Image message,
(de)serialising the Image and the action result, and message -> numpy.

Run it only confined (network namespace + loopback-only Fast DDS profile):
  scripts/confined.sh python bench/bench_node.py --goals 10 --out /tmp/node.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, 'test')):  # ros_harness (the tests' node starter)
    if _path not in sys.path:
        sys.path.append(_path)


def _ms(values):
    """Median, min, max of seconds, as milliseconds."""
    values = sorted(values)
    return {'median_ms': round(statistics.median(values) * 1e3, 2),
            'min_ms': round(values[0] * 1e3, 2), 'max_ms': round(values[-1] * 1e3, 2),
            'n': len(values)}


def _image_qos():
    """Return the node's ~/image QoS (reliable, transient local, depth 1)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def run_subscriber(topic, count, ready_path):
    """Run the subscriber process: print the latency of the first `count` images as JSON."""
    import rclpy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node(f'bench_image_sub_{os.getpid()}')
    latencies, sizes = [], []
    done = threading.Event()

    def on_image(msg):
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append(now - stamp)
        sizes.append(len(msg.data))
        if len(latencies) >= count:
            done.set()

    node.create_subscription(Image, topic, on_image, _image_qos())
    open(ready_path, 'w').close()
    deadline = time.monotonic() + 600
    while not done.is_set() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    # The first message may be a transient-local copy of an image published before; the
    # parent drops it by count.
    print(json.dumps({'latency_sec': latencies, 'bytes': sizes}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def measure_goals(args, workdir):
    """Start the node and a subscriber; send goals; return the per-goal figures."""
    from ros_harness import NodeProcess, RosClient
    from sdxl_ros.action import GenerateImage
    node = NodeProcess(workdir, {
        'default_width': args.size, 'default_height': args.size, 'max_side': 2048,
        'default_steps': args.steps, 'preview_every_n_steps': 0, 'max_queue': 1,
        'base_model': args.preset, 'refiner_model': args.preset,
        'device': args.device, 'compressed_format': args.compressed_format}).start()
    client = RosClient('bench_node')
    sub = None
    try:
        client.wait_active(node.fqn, node)
        action = node.name_of('generate')
        ready = os.path.join(workdir, 'sub_ready')
        sub = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--subscriber',
                                node.name_of('image'), '--goals', str(args.goals + 1),
                                '--ready', ready], stdout=subprocess.PIPE, text=True)
        while not os.path.exists(ready):
            time.sleep(0.05)
        action_client = client.connect(action)
        time.sleep(1.0)  # let the subscriber's discovery finish before the first image
        rows = []
        for index in range(args.goals + 1):  # the first goal warms the node: not counted
            goal = GenerateImage.Goal(prompt='a robot', width=args.size, height=args.size,
                                      steps=args.steps, seed=index + 1, num_images=1,
                                      omit_result_images=args.omit_result_images)
            received = threading.Event()
            stamps = {}
            sent = time.monotonic()
            goal_future = action_client.send_goal_async(goal)
            while not goal_future.done():
                time.sleep(0.0005)
            stamps['accepted'] = time.monotonic()
            handle = goal_future.result()
            result_future = handle.get_result_async()
            result_future.add_done_callback(
                lambda _f: (stamps.__setitem__('result', time.monotonic()), received.set()))
            received.wait(300)
            response = result_future.result()
            total = stamps['result'] - sent
            rows.append({'total_sec': total, 'engine_sec': response.result.elapsed_sec,
                         'overhead_sec': total - response.result.elapsed_sec,
                         'accept_sec': stamps['accepted'] - sent,
                         'image_bytes': sum(len(i.data) for i in response.result.images)})
            time.sleep(0.3)
        out, _ = sub.communicate(timeout=60)
        topic = json.loads(out.strip().splitlines()[-1])
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
        client.close()
        node.stop()
    return rows[1:], topic


def measure_transport(args, workdir):
    """
    ~/image's transport alone: a plain rclpy publisher here, the subscriber process there.

    The same message size, QoS and stamping as the node, without the node or the engine, so
    the difference to the node's figure is what the node's process adds.
    """
    import numpy as np
    import rclpy
    from sdxl_ros.ros.image_conversion import numpy_to_image_msg
    from sensor_msgs.msg import Image
    topic = f'/bench_transport_{os.getpid()}/image'
    ready = os.path.join(workdir, 'transport_ready')
    sub = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--subscriber', topic,
                            '--goals', str(args.goals), '--ready', ready],
                           stdout=subprocess.PIPE, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f'bench_transport_pub_{os.getpid()}', context=context)
    try:
        publisher = node.create_publisher(Image, topic, _image_qos())
        while not os.path.exists(ready) or not publisher.get_subscription_count():
            time.sleep(0.05)
        time.sleep(1.0)
        image = np.zeros((args.size, args.size, 3), dtype=np.uint8)
        for _ in range(args.goals):
            publisher.publish(numpy_to_image_msg(image, node.get_clock().now().to_msg()))
            time.sleep(0.3)
        out, _ = sub.communicate(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return _ms(json.loads(out.strip().splitlines()[-1])['latency_sec'])


def measure_pieces(size, repeats):
    """Time the ROS-layer pieces on one size x size image, in this process."""
    import numpy as np
    from rclpy.serialization import deserialize_message, serialize_message
    from sdxl_ros.action import GenerateImage
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy, numpy_to_image_msg
    from sensor_msgs.msg import Image
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)

    def timed(function):
        function()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return _ms(times)

    msg = numpy_to_image_msg(image)
    result = GenerateImage.Result(images=[msg], seeds=[1], parameters='x' * 300,
                                  elapsed_sec=1.0)
    result_type = type(result)
    image_bytes = serialize_message(msg)
    result_bytes = serialize_message(result)
    received = deserialize_message(image_bytes, Image)
    return {
        'numpy_to_image_msg': timed(lambda: numpy_to_image_msg(image)),
        'tobytes_only': timed(lambda: image.tobytes()),
        'serialize_image': timed(lambda: serialize_message(msg)),
        'serialize_result': timed(lambda: serialize_message(result)),
        'deserialize_image': timed(lambda: deserialize_message(image_bytes, Image)),
        'deserialize_result': timed(lambda: deserialize_message(result_bytes, result_type)),
        'image_msg_to_numpy': timed(lambda: image_msg_to_numpy(received)),
        'received_data_type': type(received.data).__name__,
    }


def parse_args(argv=None):
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--goals', type=int, default=10)
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--steps', type=int, default=2)
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--omit-result-images', action='store_true',
                        help='goals ask for results without images (the topic has them)')
    parser.add_argument('--compressed-format', default='png',
                        help="the node's compressed_format (png, jpeg, none)")
    parser.add_argument('--out', default='')
    parser.add_argument('--subscriber', default='', help=argparse.SUPPRESS)
    parser.add_argument('--ready', default='', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    """Run the goals and the piece timings; print and write the JSON."""
    args = parse_args(argv)
    if args.subscriber:
        run_subscriber(args.subscriber, args.goals, args.ready)
        return 0
    if not os.environ.get('SDXL_ROS_CONFINED'):
        sys.exit('bench_node.py starts ROS processes: run it through scripts/confined.sh')
    import platform
    with tempfile.TemporaryDirectory() as workdir:
        rows, topic = measure_goals(args, workdir)
        transport = measure_transport(args, workdir)
    # The subscriber saw the warm-up goal's image first (transient local): drop it.
    latencies = topic['latency_sec'][-len(rows):]
    results = {
        'machine': platform.node(), 'cpus': os.cpu_count(), 'python': platform.python_version(),
        'rmw': os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp (default)'),
        'fastdds_profile': os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', ''),
        'settings': vars(args),
        'goal_overhead': _ms([r['overhead_sec'] for r in rows]),
        'goal_total': _ms([r['total_sec'] for r in rows]),
        'engine': _ms([r['engine_sec'] for r in rows]),
        'goal_accept': _ms([r['accept_sec'] for r in rows]),
        'image_topic_latency': _ms(latencies),
        'image_transport_only_latency': transport,
        'image_bytes': rows[0]['image_bytes'] if rows else 0,
        'pieces': measure_pieces(args.size, args.repeats),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        with open(args.out, 'w') as stream:
            stream.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
