# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""sdxl_generate: pure helpers, then the real CLI in its own process against a real node."""

import signal
import subprocess
import sys

import numpy as np
import pytest

from ros_harness import client_executable, over_the_wire, wait_for
from sdxl_ros.action import GenerateImage
from sdxl_ros.client.goal_from_args import build_goal
from sdxl_ros.client.sdxl_generate import (action_name, build_parser, format_progress,
                                           infotext_for_seed)
from sdxl_ros.engine.png_io import output_paths, read_png_parameters, save_png
from sdxl_ros.engine.request import RequestError

INFOTEXT = ('a robot\nNegative prompt: blurry\nSteps: 6, Sampler: Euler, CFG scale: 5, '
            'Seed: 7, Size: 64x72, Model: tiny, Refiner: tiny, Refiner switch at: 0.75')


def _args(*argv):
    return build_parser().parse_args(list(argv))


#: A float32 goal field carries the nearest float32, about 1e-7 relative from the flag's value.
FLOAT32 = 1e-7


def _goal():
    return GenerateImage.Goal()


def test_output_paths():
    assert output_paths('out.png', 3) == ['out.png', 'out-1.png', 'out-2.png']
    assert output_paths('dir/pic', 1) == ['dir/pic.png']


def test_infotext_for_seed_changes_only_the_seed():
    text = infotext_for_seed(INFOTEXT, 8)
    assert 'Seed: 8,' in text and text.replace('Seed: 8', 'Seed: 7') == INFOTEXT


def test_action_name():
    assert action_name(_args('p')) == '/sdxl/generate'
    assert action_name(_args('p', '--namespace', '/robot1/')) == '/robot1/sdxl/generate'
    assert action_name(_args('p', '--node-name', 'art')) == '/art/generate'
    assert action_name(_args('p', '--action', '/x/y')) == '/x/y'


def test_flags_fill_the_goal():
    goal = build_goal(_args('a cat', '--seed', '7', '--steps', '30', '--width', '512',
                            '--guidance-scale', '6.5', '--scheduler', 'Euler a',
                            '--num-images', '2', '--refiner-switch', '0.9',
                            '--negative-prompt', 'dog', '--height', '768'), _goal())
    assert (goal.prompt, goal.seed, goal.steps, goal.width, goal.height, goal.guidance_scale,
            goal.scheduler, goal.num_images, goal.refiner_switch, goal.negative_prompt) == (
        'a cat', 7, 30, 512, 768, 6.5, 'Euler a', 2, 0.9, 'dog')
    sent = over_the_wire(goal).refiner_switch  # what the float32 field carries
    assert sent != 0.9 and sent == pytest.approx(0.9, rel=FLOAT32)


def test_unset_flags_leave_node_defaults():
    goal = build_goal(_args('a cat'), _goal())
    assert (goal.width, goal.steps, goal.seed, goal.scheduler) == (0, 0, -1, '')


def test_from_png_reads_the_infotext_and_flags_override(tmp_path):
    path = tmp_path / 'old.png'
    save_png(path, np.zeros((8, 8, 3), np.uint8), INFOTEXT)
    goal = build_goal(_args('--from-png', str(path), '--steps', '9'), _goal())
    assert (goal.prompt, goal.negative_prompt, goal.seed, goal.width, goal.height,
            goal.scheduler, goal.guidance_scale, goal.refiner_switch, goal.steps) == (
        'a robot', 'blurry', 7, 64, 72, 'Euler', 5.0, 0.75, 9)


def test_schedule_type_flag_and_a1111_png_with_a_schedule_type(tmp_path):
    goal = build_goal(_args('a cat', '--scheduler', 'LCM', '--schedule-type', 'SGM Uniform'),
                      _goal())
    assert (goal.scheduler, goal.schedule_type) == ('LCM', 'SGM Uniform')
    path = tmp_path / 'a1111.png'
    save_png(path, np.zeros((8, 8, 3), np.uint8),
             'a fox\nSteps: 4, Sampler: Euler, Schedule type: SGM Uniform, CFG scale: 1, '
             'Seed: 3, Size: 1024x1024')
    goal = build_goal(_args('--from-png', str(path)), _goal())
    assert (goal.scheduler, goal.schedule_type, goal.steps, goal.guidance_scale) == (
        'Euler', 'SGM Uniform', 4, 1.0)
    old = tmp_path / 'old_a1111.png'
    save_png(old, np.zeros((8, 8, 3), np.uint8),
             'a fox\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3, '
             'Size: 1024x1024')
    goal = build_goal(_args('--from-png', str(old)), _goal())
    assert (goal.scheduler, goal.schedule_type) == ('DPM++ 2M', 'Karras')


def test_missing_prompt_or_infotext_is_a_usage_error(tmp_path):
    with pytest.raises(RequestError, match='prompt'):
        build_goal(_args(), _goal())
    plain = tmp_path / 'plain.png'
    save_png(plain, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RequestError, match='no "parameters"'):
        build_goal(_args('--from-png', str(plain)), _goal())


def test_format_progress():
    line = format_progress(GenerateImage.Feedback(stage='base', step=5, total_steps=10,
                                                  image_index=0, elapsed_sec=1.0, eta_sec=2.5),
                           width=10)
    assert 'base' in line and '[#####-----]' in line and '5/10' in line and 'ETA' in line
    queued = format_progress(GenerateImage.Feedback(stage='queued', queue_position=2))
    assert queued == 'queued: 2 goal(s) ahead'


def _cli(node, *argv, timeout=120):
    command = [sys.executable, str(client_executable()), '--action',
               node.name_of('generate'), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.ros
def test_cli_writes_png_with_infotext_and_from_png_reproduces_it(shared_node, tmp_path):
    from PIL import Image
    out = tmp_path / 'out.png'
    done = _cli(shared_node, 'a robot in a garden', '--seed', '7', '--steps', '5',
                '--num-images', '2', '--output', str(out))
    assert done.returncode == 0, done.stderr
    assert f'seed 7 -> {out}' in done.stdout
    assert f'seed 8 -> {tmp_path / "out-1.png"}' in done.stdout
    assert 'decoding' in done.stderr  # progress lines (stderr is not a terminal)
    text = read_png_parameters(out)
    assert text.startswith('a robot in a garden\n') and 'Seed: 7,' in text
    assert 'Seed: 8,' in read_png_parameters(tmp_path / 'out-1.png')
    again = tmp_path / 'again.png'
    done = _cli(shared_node, '--from-png', str(tmp_path / 'out-1.png'), '--output',
                str(again), '--quiet')
    assert done.returncode == 0, done.stderr
    assert 'seed 8 ->' in done.stdout and done.stderr == ''
    assert np.array_equal(np.asarray(Image.open(again)),
                          np.asarray(Image.open(tmp_path / 'out-1.png')))
    assert read_png_parameters(again) == read_png_parameters(tmp_path / 'out-1.png')


@pytest.mark.ros
def test_cli_refused_goal_exits_non_zero_with_the_message(shared_node, tmp_path):
    done = _cli(shared_node, 'a robot', '--width', '100', '--output', str(tmp_path / 'x.png'))
    assert done.returncode == 1
    assert 'refused: width 100 is not a multiple of 8' in done.stderr
    assert not (tmp_path / 'x.png').exists()


@pytest.mark.ros
def test_cli_without_server_says_so(ros_confined, tmp_path):
    command = [sys.executable, str(client_executable()), 'a robot', '--action', '/nobody/here',
               '--timeout', '1']
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert 'no action server at /nobody/here' in done.stderr


@pytest.mark.ros
def test_cli_ctrl_c_cancels_the_goal(shared_node, tmp_path):
    # 8 images of 150 steps: far longer than a cancel takes to arrive, even on a busy machine.
    command = [sys.executable, str(client_executable()), 'slow', '--steps', '150',
               '--num-images', '8', '--action', shared_node.name_of('generate'), '--output',
               str(tmp_path / 'never.png')]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stderr.readline()
        assert 'base' in line, line
        before = shared_node.log().count('cancelled while running')
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert 'cancelled' in stderr
    assert not (tmp_path / 'never.png').exists()
    assert wait_for(lambda: shared_node.log().count('cancelled while running') > before, 10)


IMG2IMG_INFOTEXT = INFOTEXT + ', Denoising strength: 0.6, Resize mode: Just resize'


def _goal_msg():
    action = pytest.importorskip('sdxl_ros.action', reason='interfaces not built')
    return action.GenerateImage.Goal()


def _write_inputs(tmp_path):
    """Write an RGB photo and a mask (white box) as PNGs; return (photo, mask, arrays)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    photo = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                       .resize((64, 64), Image.BILINEAR))
    mask = np.zeros((64, 64), np.uint8)
    mask[24:40, 24:40] = 255
    Image.fromarray(photo).save(tmp_path / 'photo.png')
    Image.fromarray(mask).save(tmp_path / 'mask.png')
    return tmp_path / 'photo.png', tmp_path / 'mask.png', photo, mask


def test_img2img_flags_fill_the_goal(tmp_path):
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy, mask_msg_to_numpy
    photo, mask_path, pixels, mask = _write_inputs(tmp_path)
    goal = build_goal(_args('a door', '--init-image', str(photo), '--mask', str(mask_path),
                            '--strength', '0.6', '--resize-mode', 'crop and resize',
                            '--mask-blur', '0', '--inpaint-full-res', '--inpaint-padding',
                            '8'), _goal_msg())
    assert np.array_equal(image_msg_to_numpy(goal.init_image), pixels)
    assert np.array_equal(mask_msg_to_numpy(goal.mask_image), mask)
    assert (round(goal.denoising_strength, 6), goal.resize_mode, goal.mask_blur,
            goal.inpaint_full_res, goal.inpaint_full_res_padding) == (
        0.6, 'crop and resize', 0, True, 8)
    topic = build_goal(_args('a door', '--init-topic', '/camera/image_raw'), _goal_msg())
    assert topic.init_image_topic == '/camera/image_raw' and topic.init_image.width == 0
    assert build_goal(_args('a door'), _goal_msg()).mask_blur == 4


def test_from_png_of_img2img_asks_for_the_init_image(tmp_path):
    path = tmp_path / 'img2img.png'
    save_png(path, np.zeros((8, 8, 3), np.uint8), IMG2IMG_INFOTEXT)
    with pytest.raises(RequestError, match='pass --init-image FILE or --init-topic TOPIC'):
        build_goal(_args('--from-png', str(path)), _goal_msg())
    inpainted = tmp_path / 'inpainted.png'
    save_png(inpainted, np.zeros((8, 8, 3), np.uint8), IMG2IMG_INFOTEXT + ', Mask blur: 4')
    with pytest.raises(RequestError, match='--mask FILE'):
        build_goal(_args('--from-png', str(inpainted), '--init-topic', '/cam'), _goal_msg())
    goal = build_goal(_args('--from-png', str(path), '--init-topic', '/cam'), _goal_msg())
    assert round(goal.denoising_strength, 6) == 0.6 and goal.init_image_topic == '/cam'
    with pytest.raises(RequestError, match='cannot read'):
        build_goal(_args('p', '--init-image', str(tmp_path / 'missing.png')), _goal_msg())


@pytest.mark.ros
def test_cli_inpaints_a_photo_and_keeps_the_unmasked_pixels(shared_node, tmp_path):
    from PIL import Image, ImageFilter
    photo, mask_path, pixels, mask = _write_inputs(tmp_path)
    out = tmp_path / 'door.png'
    done = _cli(shared_node, 'a red door', '--init-image', str(photo), '--mask',
                str(mask_path), '--strength', '0.6', '--steps', '5', '--seed', '3',
                '--output', str(out))
    assert done.returncode == 0, done.stderr
    result = np.asarray(Image.open(out))
    outside = np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(4))) == 0
    assert np.array_equal(result[outside], pixels[outside])
    assert 'Denoising strength: 0.6, Resize mode: Just resize, Mask blur: 4' in \
        read_png_parameters(out)
