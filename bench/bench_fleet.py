# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Goals per minute and queue wait of one sdxl_node with 1, 2, ... engines (`devices`).

For each engine count it starts the real sdxl_node with `devices` set to that many devices
(`cpu:0, cpu:1, ...` as stand-ins on a CPU; `cuda:0, cuda:1, ...` on GPUs), warms every engine
with one goal each, then sends a burst of goals at once through a real rclpy action client and
reports:

- goals per minute = goals / (last result received - first goal sent);
- queue wait per goal = goal sent -> its first feedback that is not 'queued' (it got an engine);
- generation per goal (`result.elapsed_sec`), and which devices served the goals;
- the host's load average before and after (other processes share the CPU: say so).

`--engine-only` measures the same without ROS (for a machine without the ROS wheels, such as
the GPU machines): the node's own pieces, one EngineSlot per device and its GoalQueue, one
thread per engine taking the next goal, as the node's execute callbacks do.

Run it only confined (network namespace + loopback-only Fast DDS profile):
  scripts/confined.sh python bench/bench_fleet.py --engines 1,2 --goals 12 --out /tmp/f.json
On two GPUs (full-size random SDXL, 1024x1024, 25 steps; bench/README.md has the commands):
  python bench/bench_fleet.py --engine-only --kind cuda --engines 1,2 --preset sdxl-random \
      --size 1024 --steps 25 --goals 8 --out bench/results/h200x2_<date>_fleet.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, 'test')):  # ros_harness (the tests' node starter)
    if _path not in sys.path:
        sys.path.append(_path)


def _seconds(values):
    """Median, min, max of seconds."""
    values = sorted(values)
    return {'median_s': round(statistics.median(values), 3), 'min_s': round(values[0], 3),
            'max_s': round(values[-1], 3), 'n': len(values)}


def _load():
    """Return the 1, 5 and 15 minute load averages and the CPU count."""
    return {'loadavg': [round(x, 2) for x in os.getloadavg()], 'cpus': os.cpu_count()}


def _parameters(args, engines):
    """Return the node's parameters for `engines` engines."""
    devices = [f'{args.kind}:{index}' for index in range(engines)]
    return {'base_model': args.preset, 'refiner_model': args.preset, 'devices': devices,
            'default_width': args.size, 'default_height': args.size,
            'default_steps': args.steps, 'min_side': min(args.size, 64),
            'max_queue': args.goals + engines, 'preview_every_n_steps': 0,
            'compressed_format': 'none', 'fast_path': args.fast_path}


def measure(args, engines, client, workdir):
    """Run one engine count; return its figures."""
    from ros_harness import NodeProcess
    node = NodeProcess(os.path.join(workdir, f'e{engines}'), _parameters(args, engines))
    node.start()
    try:
        client.wait_active(node.fqn, node, timeout=args.start_timeout)
        action = node.name_of('generate')
        warm = [client.send_goal(action, prompt='warm-up', seed=index, omit_result_images=True)
                for index in range(engines)]
        for run in warm:
            run.result(args.goal_timeout)
        before = _load()
        arrived = {}
        runs = []
        for index in range(args.goals):
            run = client.send_goal(action, prompt=f'robot {index}', seed=index,
                                   omit_result_images=True)
            run._result_future.add_done_callback(
                lambda _future, key=index: arrived.setdefault(key, time.monotonic()))
            runs.append(run)
        responses = [run.result(args.goal_timeout) for run in runs]
        after = _load()
    finally:
        node.stop()
    failed = [r.result.message for r in responses if r.result.message]
    waits = []
    for run in runs:
        started = next((at for at, fb in run.feedback if fb.stage != 'queued'), None)
        if started is not None:
            waits.append(started - run.sent_at)
    span = max(arrived.values()) - runs[0].sent_at
    devices = sorted({fb.device for run in runs for _, fb in run.feedback if fb.device})
    return {'engines': engines, 'goals': args.goals, 'failed': failed,
            'goals_per_minute': round(args.goals * 60.0 / span, 2),
            'span_s': round(span, 2), 'queue_wait': _seconds(waits),
            'generation': _seconds([r.result.elapsed_sec for r in responses]),
            'devices_used': devices, 'load_before': before, 'load_after': after}


def measure_engines(args, engines):
    """Run one engine count without ROS: slots, the node's queue, one thread per engine."""
    from dataclasses import replace
    from sdxl_ros.engine.config import AccelerationConfig, EngineConfig
    from sdxl_ros.engine.devices import engine_device
    from sdxl_ros.engine.engine_slot import EngineSlot
    from sdxl_ros.engine.request import GenerationRequest, Limits
    from sdxl_ros.ros.goal_queue import GoalQueue
    # The fast path is prepared here, in each engine's thread, before anything is timed (the
    # node prepares it in a background thread while it serves).
    config = EngineConfig(base_model=args.preset, refiner_model=args.preset,
                          fast_path=args.fast_path,
                          acceleration=AccelerationConfig(background_prepare=False,
                                                          prepare_sizes=()),
                          limits=Limits(min_side=min(args.size, 64), max_side=max(args.size, 64)))
    devices = [f'{args.kind}:{index}' for index in range(engines)]
    slots = [EngineSlot() for _ in devices]
    for device, slot in zip(devices, slots):
        slot.configure(replace(config, device=engine_device(device)))
        problem = slot.load()
        if problem:
            raise SystemExit(f'bench_fleet: {device}: {problem}')

    def request(seed):
        return GenerationRequest(prompt=f'robot {seed}', width=args.size, height=args.size,
                                 steps=args.steps, seed=seed)

    prepared = []
    for slot in slots:  # fast path (if asked) and warm-up, one goal each (not counted)
        with slot.engine() as engine:
            prepared.append(round(engine.prepare_fast_path([(args.size, args.size)]), 1))
            engine.generate(request(0))
    before = _load()
    queue, lock = GoalQueue(max_waiting=args.goals, engines=engines), threading.Lock()
    sent, started, ended, elapsed, used = {}, {}, {}, {}, set()
    wake = [threading.Event() for _ in slots]

    def run(key):
        index = queue.engine_of(key)
        started[key] = time.monotonic()
        with slots[index].engine() as engine:
            elapsed[key] = engine.generate(request(key)).elapsed_sec
        ended[key] = time.monotonic()
        with lock:
            used.add(devices[index])
        following = queue.finish(key)
        if following is not None:
            threading.Thread(target=run, args=(following,)).start()
        if len(ended) == args.goals:
            for event in wake:
                event.set()

    for key in range(args.goals):
        sent[key] = time.monotonic()
        starts = queue.add(key)
        if starts is not None:
            threading.Thread(target=run, args=(starts,)).start()
    wake[0].wait()
    after = _load()
    for slot in slots:
        slot.clear()
    span = max(ended.values()) - sent[0]
    return {'engines': engines, 'goals': args.goals, 'failed': [], 'mode': 'engine-only',
            'goals_per_minute': round(args.goals * 60.0 / span, 2), 'span_s': round(span, 2),
            'queue_wait': _seconds([started[k] - sent[k] for k in sent]),
            'generation': _seconds(list(elapsed.values())), 'devices_used': sorted(used),
            'fast_path_prepare_s': prepared, 'load_before': before, 'load_after': after}


def parse_args(argv=None):
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--engines', default='1,2', help='engine counts to measure')
    parser.add_argument('--kind', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--steps', type=int, default=8)
    parser.add_argument('--goals', type=int, default=12)
    parser.add_argument('--fast-path', action='store_true',
                        help='on CUDA: the fast path (compiles first; default: plain diffusers)')
    parser.add_argument('--engine-only', action='store_true',
                        help='without ROS: engine slots and the node queue in this process')
    parser.add_argument('--start-timeout', type=float, default=300.0)
    parser.add_argument('--goal-timeout', type=float, default=600.0)
    parser.add_argument('--out', default='')
    return parser.parse_args(argv)


def main(argv=None):
    """Measure each engine count and print (and save) the JSON."""
    args = parse_args(argv)
    results = {'settings': {k: v for k, v in vars(args).items() if k != 'out'},
               'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'runs': []}
    counts = [int(item) for item in args.engines.split(',')]

    def record(run):
        results['runs'].append(run)
        print(json.dumps(run), flush=True)
        if args.out:
            with open(args.out, 'w') as out:
                json.dump(results, out, indent=1)

    if args.engine_only:
        for engines in counts:
            record(measure_engines(args, engines))
    else:
        from ros_harness import confinement_problem, RosClient
        problem = confinement_problem()
        if problem:
            sys.exit(f'bench_fleet: {problem}')
        client = RosClient('bench_fleet')
        try:
            with tempfile.TemporaryDirectory() as workdir:
                for engines in counts:
                    record(measure(args, engines, client, workdir))
        finally:
            client.close()
    first = results['runs'][0]['goals_per_minute']
    for run in results['runs']:
        run['speedup'] = round(run['goals_per_minute'] / first, 2)
    if args.out:
        with open(args.out, 'w') as out:
            json.dump(results, out, indent=1)
    print(json.dumps({r['engines']: r['speedup'] for r in results['runs']}))


if __name__ == '__main__':
    main()
