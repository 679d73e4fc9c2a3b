# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Reliability: goals can never choose file paths; the node's output_dir writes stay inside it.

No goal field names a file. Prompts that look like paths are just text: with output_dir set,
the node writes only PNGs it names itself (<date>-<time>-<ms>-<index>-<seed>.png) directly in
output_dir, whatever the goal says.
"""

import re

import pytest

from reliability_report import finish, module_node
from ros_harness import assert_refused, assert_served, status_names

pytestmark = [pytest.mark.ros, pytest.mark.reliability]

#: The goal's fields; a new one must be reviewed here: none may name a file or folder.
GOAL_FIELDS = {'prompt', 'negative_prompt', 'width', 'height', 'steps', 'guidance_scale',
               'refiner_switch', 'seed', 'scheduler', 'num_images',
               # img2img/inpainting: pictures travel in the message; init_image_topic names a
               # ROS topic the node subscribes to for one frame, never a file.
               'init_image', 'init_image_topic', 'denoising_strength', 'resize_mode',
               'mask_image', 'mask_blur', 'inpaint_full_res', 'inpaint_full_res_padding',
               'omit_result_images',
               # a name looked up in a fixed table (schedule_types.SCHEDULE_TYPES), never a file
               'schedule_type',
               # ControlNet units: pictures in the message or a topic name; `model` is a plain
               # name inside controlnet_dir/model_dir ('..' and absolute paths are refused by
               # controlnet_files.find_controlnet, tested in test_control_units)
               'control'}
NODE_FILE_NAME = re.compile(r'^\d{8}-\d{6}-\d{3}-\d+-\d+\.png$')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Return a folder holding output_dir and a sibling folder a goal might try to reach."""
    folder = tmp_path_factory.mktemp('sandbox')
    (folder / 'out').mkdir()
    (folder / 'sibling').mkdir()
    return folder


@pytest.fixture(scope='module')
def node(ros_client, tmp_path_factory, root):
    """Start a node saving its results to root/out."""
    yield from module_node(ros_client, tmp_path_factory,
                           {'default_steps': 2, 'output_dir': str(root / 'out')})


def _files(folder):
    return set(folder.rglob('*'))


def test_no_goal_field_names_a_file():
    """The goal has exactly the reviewed fields (none is a path, file or folder name)."""
    from sdxl_ros.action import GenerateImage
    fields = set(GenerateImage.Goal.get_fields_and_field_types())
    assert fields == GOAL_FIELDS
    assert not [f for f in fields if re.search('path|file|dir|name|url', f)]


def test_path_like_prompts_write_only_inside_output_dir(ros_client, node, root):
    """Prompts like '../../etc/x' are only text: every file lands in output_dir, node-named."""
    action = node.name_of('generate')
    before = _files(root) | _files(node.workdir)
    evil = root / 'sibling' / 'evil.png'
    prompts = ['../../etc/x', '../sibling/evil.png', str(evil), '/etc/passwd',
               'out/../../x.png', 'C:\\Windows\\x.png', '~/.bashrc', 'a\nb/../../c',
               'file:///tmp/x.png', '%2e%2e%2fescape']
    served = 0
    for index, prompt in enumerate(prompts):
        response = finish(ros_client.send_goal(
            action, prompt=prompt, negative_prompt=prompt, seed=index, num_images=1 + index % 2),
            60)
        assert_served(response)
        served += len(response.result.images)
    response = finish(ros_client.send_goal(action, prompt='x', scheduler='../../etc/passwd'))
    assert_refused(response, 'unknown scheduler')
    response = finish(ros_client.send_goal(action, prompt='x',
                                           schedule_type='../../etc/passwd'))
    assert_refused(response, 'unknown schedule_type')
    new = (_files(root) | _files(node.workdir)) - before
    written = [p for p in new if p.parent == root / 'out']
    assert sorted(new) == sorted(written), f'files outside output_dir: {new - set(written)}'
    assert len(written) == served
    assert all(NODE_FILE_NAME.match(p.name) for p in written), written
    assert not evil.exists() and not (root / 'x.png').exists()
    assert not list((root / 'sibling').iterdir())


def test_unwritable_output_dir_still_serves(ros_client, node, root):
    """output_dir under a plain file: the goal succeeds, the node logs why nothing was saved."""
    blocker = root / 'blocker'
    blocker.write_text('a file, not a folder')
    results = ros_client.set_parameters(node.fqn, output_dir=str(blocker / 'out'))
    assert results[0].successful
    try:
        response = finish(ros_client.send_goal(node.name_of('generate'), prompt='a robot'))
        assert response.status == status_names().STATUS_SUCCEEDED
        assert 'cannot save to output_dir' in node.log()
    finally:
        ros_client.set_parameters(node.fqn, output_dir=str(root / 'out'))
    assert node.alive
