# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
sdxl_generate: send one GenerateImage goal and save the result as PNG with its infotext.

    sdxl_generate "a robot in a garden" --seed 7 --steps 30 --output out.png
    sdxl_generate --from-png out.png --output again.png
    sdxl_generate --init-image photo.png --mask mask.png --strength 0.6 "a red door"
    sdxl_generate --init-topic /camera/image_raw --strength 0.5 "as an oil painting"
    sdxl_generate --servers auto "a robot"   # the least busy of several servers
    sdxl_generate --control depth_metric:/camera/depth/image_raw:model=xl_depth:weight=0.8 \
        --control canny:sketch.png:model=xl_canny "a glass house"

Waits for the action server, draws a progress bar on stderr from the feedback, writes
out.png (out-1.png, out-2.png, ... for more images) with the A1111 `parameters` text chunk,
prints each seed and path, cancels the goal on Ctrl-C, and exits non-zero with the server's
message when the goal is refused or fails. Exit status: 0 done, 1 refused/failed, 2 usage or
no server, 130 cancelled by Ctrl-C.
"""

import argparse
import os
import re
import signal
import sys
import time

from sdxl_ros.client.goal_from_args import build_goal, GOAL_FLAGS
from sdxl_ros.engine.png_io import output_paths, save_png
from sdxl_ros.engine.request import RequestError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Seconds without the action server after which a pending goal is given up.
SERVER_GONE_SEC = 5.0


class ServerGone(Exception):
    """The action server disappeared while the goal was pending."""


def build_parser():
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog='sdxl_generate',
        description='Generate images with a running sdxl_node and save them as PNG.')
    parser.add_argument('prompt', nargs='?', help='what to draw')
    for flag, field, kind, text in GOAL_FLAGS:
        parser.add_argument(flag, dest=field, type=kind, default=None, help=text)
    parser.add_argument('--init-image', metavar='FILE',
                        help='img2img: start from this picture (PNG, JPEG, ...)')
    parser.add_argument('--mask', metavar='FILE',
                        help='inpainting: mask picture (size of the init image), white = '
                             'repaint')
    parser.add_argument('--inpaint-full-res', action='store_true', default=None,
                        help='inpaint only the masked region (plus padding) at full size '
                             '(A1111 "Only masked")')
    parser.add_argument('--control', metavar='MODULE:SOURCE[:KEY=VALUE...]', action='append',
                        default=[],
                        help='a ControlNet unit (repeatable): MODULE none, depth, '
                             'depth_metric or canny; SOURCE a picture file (.png, .jpg, ...) '
                             'or a topic (/...), or file=PATH / topic=NAME; keys model, '
                             'weight, start, end, mode, resize, type, low, high')
    parser.add_argument('--from-png', metavar='PNG',
                        help='re-generate from the infotext saved in a PNG; other flags '
                             'override its fields')
    parser.add_argument('-o', '--output', default='sdxl.png',
                        help='PNG to write (more images: NAME-1.png, NAME-2.png, ...)')
    parser.add_argument('--namespace', default='', help='namespace of the node')
    parser.add_argument('--node-name', default='sdxl', help='name of the node (sdxl)')
    parser.add_argument('--action', default='',
                        help='full action name; overrides --namespace/--node-name')
    parser.add_argument('--servers', default='', metavar='auto|NODE,NODE',
                        help='choose among several servers (each sdxl_node in its own '
                        'namespace) the one with the fewest goals per device on '
                        '/diagnostics: auto = every server seen, or their node names '
                        '(/gpu1/sdxl,/gpu2/sdxl); falls back to the next when one does not '
                        'answer or goes away mid-goal')
    parser.add_argument('--timeout', type=float, default=30.0,
                        help='seconds to wait for the action server (default 30)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def action_name(args):
    """Return the action to address, from --action or --namespace/--node-name."""
    if args.action:
        return args.action
    namespace = args.namespace.strip('/')
    return '/' + '/'.join(part for part in (namespace, args.node_name, 'generate') if part)


def infotext_for_seed(parameters, seed):
    """Return the infotext of the first image with its seed replaced by `seed`."""
    return re.sub(r'(^|, )Seed: -?\d+', lambda m: f'{m.group(1)}Seed: {seed}', parameters,
                  flags=re.MULTILINE)


def format_progress(feedback, width=24):
    """Return one progress line for a feedback message (stage, step bar, ETA)."""
    if feedback.stage == 'queued':
        return f'queued: {feedback.queue_position} goal(s) ahead'
    if feedback.stage == 'loading':
        return 'loading models...'
    if feedback.stage == 'init_image':
        return 'waiting for a frame on the init image topic...'
    if feedback.stage == 'control_image':
        return 'waiting for a frame on a ControlNet image topic...'
    total = max(1, feedback.total_steps)
    done = min(feedback.step, total)
    filled = round(width * done / total)
    bar = '#' * filled + '-' * (width - filled)
    return (f'image {feedback.image_index + 1} {feedback.stage:<8} [{bar}] '
            f'{done}/{feedback.total_steps} {feedback.elapsed_sec:5.1f}s ETA '
            f'{feedback.eta_sec:4.1f}s')


class ProgressPrinter:
    """Draw feedback on stderr: one rewritten line on a terminal, a line per stage otherwise."""

    def __init__(self, stream=sys.stderr, enabled=True):
        """Write to `stream` unless disabled."""
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last_stage = None
        self.count = 0

    def __call__(self, feedback):
        """Show one feedback message."""
        self.count += 1
        if not self.enabled:
            return
        line = format_progress(feedback)
        if self.tty:
            self.stream.write('\r' + line.ljust(79))
        elif (feedback.stage, feedback.image_index) != self.last_stage:
            self.stream.write(line + '\n')
        self.last_stage = (feedback.stage, feedback.image_index)
        self.stream.flush()

    def finish(self):
        """End the progress line."""
        if self.enabled and self.tty and self.count:
            self.stream.write('\n')
            self.stream.flush()


def fail(message, code=EXIT_FAILED):
    """Print `message` on stderr and return `code`."""
    print(f'sdxl_generate: {message}', file=sys.stderr)
    return code


def save_result(result, output):
    """Write the result images as PNGs; print and return the paths."""
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy
    paths = output_paths(output, len(result.images))
    for path, image, seed in zip(paths, result.images, result.seeds):
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        save_png(path, image_msg_to_numpy(image), infotext_for_seed(result.parameters, seed))
        print(f'seed {seed} -> {path}')
    return paths


class GoalRunner:
    """Send one goal and wait for its result, cancelling it on Ctrl-C."""

    def __init__(self, node, name, progress):
        """Create the action client of `node` for action `name`."""
        from rclpy.action import ActionClient
        from sdxl_ros.action import GenerateImage
        self.node = node
        self.name = name
        self.client = ActionClient(node, GenerateImage, name)
        self.progress = progress
        self.goal_handle = None

    def spin_until(self, future, timeout=None):
        """
        Spin until `future` is done or `timeout` seconds passed; return whether done.

        Raises ServerGone when the action server has been away for SERVER_GONE_SEC.
        """
        import rclpy
        deadline = None if timeout is None else time.monotonic() + timeout
        last_seen = time.monotonic()
        while not future.done():
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return False
            if self.client.server_is_ready():
                last_seen = now
            elif now - last_seen > SERVER_GONE_SEC:
                raise ServerGone(f'the action server went away (no {self.name} for '
                                 f'{SERVER_GONE_SEC:g} s)')
            rclpy.spin_once(self.node, timeout_sec=0.1)
        return True

    def run(self, goal):
        """Send `goal`; return the GetResult response (status + result) or None if rejected."""
        sent = self.client.send_goal_async(goal, feedback_callback=self._on_feedback)
        self.spin_until(sent)
        self.goal_handle = sent.result()
        if not self.goal_handle.accepted:
            return None
        response = self.goal_handle.get_result_async()
        self.spin_until(response)
        return response.result()

    def cancel(self, timeout=10.0):
        """Cancel the goal and wait for its result (None if it did not end in time)."""
        if self.goal_handle is None or not self.goal_handle.accepted:
            return None
        response = self.goal_handle.get_result_async()
        self.spin_until(self.goal_handle.cancel_goal_async(), timeout)
        return response.result() if self.spin_until(response, timeout) else None

    def _on_feedback(self, message):
        """Feed the progress printer."""
        self.progress(message.feedback)


def choose_servers(node, args):
    """Return the action names of the servers --servers allows, least busy first."""
    import rclpy
    from sdxl_ros.client.server_choice import LISTEN_SEC, ServerWatch
    watch = ServerWatch(node)
    only = () if args.servers == 'auto' else tuple(
        '/' + name.strip().strip('/') for name in args.servers.split(',') if name.strip())
    # Listen long enough to hear every server once; longer (up to --timeout) until one is
    # heard: discovery of /diagnostics alone can take seconds on a busy host.
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        if waited >= args.timeout or (waited >= LISTEN_SEC and watch.ranked(only)):
            return watch.ranked(only)
        rclpy.spin_once(node, timeout_sec=0.1)


def generate(args, goal):
    """Run the goal against the server (or the first of --servers that answers); exit status."""
    import rclpy
    node = rclpy.create_node(f'sdxl_generate_{os.getpid()}')
    progress = ProgressPrinter(enabled=not args.quiet)
    try:
        names = choose_servers(node, args) if args.servers else [action_name(args)]
        if not names:
            return fail('no usable sdxl_node server on /diagnostics (active, models loaded'
                        + ('' if args.servers == 'auto' else f', one of {args.servers}')
                        + '; is diagnostic_msgs installed where they run?)', EXIT_USAGE)
        for index, name in enumerate(names):
            last = index == len(names) - 1
            if args.servers:
                print(f'sdxl_generate: sending the goal to {name}', file=sys.stderr)
            code = _generate_on(node, name, goal, progress, args, last)
            if code is not None:
                return code
        return EXIT_FAILED  # not reached: the last server's outcome is returned
    finally:
        node.destroy_node()


def _generate_on(node, name, goal, progress, args, last):
    """Run the goal on action `name`; exit status, or None to try the next server."""
    from action_msgs.msg import GoalStatus
    runner = GoalRunner(node, name, progress)
    try:
        if not runner.client.wait_for_server(timeout_sec=args.timeout if last else 2.0):
            if not last:
                print(f'sdxl_generate: {name} does not answer; trying the next server',
                      file=sys.stderr)
                return None
            return fail(f'no action server at {name} after {args.timeout:g} s '
                        '(is sdxl_node running, in this ROS_DOMAIN_ID?)', EXIT_USAGE)
        try:
            response = runner.run(goal)
        except ServerGone as error:
            progress.finish()
            if not last:
                print(f'sdxl_generate: {error}; sending the goal to the next server',
                      file=sys.stderr)
                return None
            return fail(str(error))
        except KeyboardInterrupt:
            progress.finish()
            print('sdxl_generate: cancelling...', file=sys.stderr)
            try:
                response = runner.cancel()
            except ServerGone:
                response = None
            if response is not None and response.status == GoalStatus.STATUS_SUCCEEDED:
                # The goal ended before the cancel reached the server: say so, not 'cancelled'.
                return fail('interrupted after the goal had already succeeded; its images were '
                            'not saved here', EXIT_INTERRUPTED)
            return fail('cancelled' + (f': {response.result.message}' if response else ''),
                        EXIT_INTERRUPTED)
        progress.finish()
        if response is None:
            return fail('the server rejected the goal')
        if response.status != GoalStatus.STATUS_SUCCEEDED:
            return fail(response.result.message or f'goal ended with status {response.status}')
        save_result(response.result, args.output)
        return EXIT_OK
    finally:
        runner.client.destroy()


def main(argv=None):
    """Entry point of sdxl_generate; returns the exit status."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args
    from sdxl_ros.action import GenerateImage
    argv = sys.argv if argv is None else ['sdxl_generate'] + list(argv)
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    try:
        goal = build_goal(args, GenerateImage.Goal())
    except RequestError as error:
        return fail(str(error), EXIT_USAGE)
    # Ctrl-C must reach us as KeyboardInterrupt so the goal can be cancelled first (also when
    # a shell started us with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        return generate(args, goal)
    except KeyboardInterrupt:
        return fail('interrupted', EXIT_INTERRUPTED)
    finally:
        rclpy.try_shutdown()
