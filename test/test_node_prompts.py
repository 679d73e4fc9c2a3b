# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""A1111 prompt syntax through a real sdxl_node: LoRA refusals, LoRA goals, emphasis, listing."""

import pytest

from ros_harness import assert_refused, assert_served, NodeProcess, status_names

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def lora_dir(tmp_path_factory):
    """Write LoRA files built from the tiny preset's modules (what the node loads)."""
    from engine_fixtures import tiny_engine
    from lora_fixtures import refiner_lora, sd1_like_lora, sdxl_lora, write_lora
    folder = tmp_path_factory.mktemp('loras')
    maker = tiny_engine()
    write_lora(folder / 'detail.safetensors', sdxl_lora(maker.base_pipeline))
    write_lora(folder / 'sd15.safetensors', sd1_like_lora(maker.base_pipeline))
    write_lora(folder / 'refined.safetensors', refiner_lora(maker.refiner_pipeline))
    return folder


@pytest.fixture(scope='module')
def node(ros_client, lora_dir, tmp_path_factory):
    """One node with lora_dir set, 2 steps per goal."""
    process = NodeProcess(tmp_path_factory.mktemp('node'),
                          {'lora_dir': str(lora_dir), 'default_steps': 2}).start()
    try:
        ros_client.wait_active(process.fqn, process)
        yield process
    finally:
        process.stop()
        print(f'----- log of {process.fqn} -----\n{process.log()}')


def _served_next(ros_client, node):
    """Check that the node still serves a plain goal."""
    _, response = ros_client.generate(node.name_of('generate'), prompt='the next goal',
                                      steps=1)
    assert_served(response)


@pytest.mark.parametrize('fields, words', [
    ({'prompt': 'a <lora:missing:1>'}, ['unknown LoRA', "'missing'", 'detail, refined, sd15']),
    ({'prompt': 'a <lora:sd15:0.5>'}, ['not an SDXL LoRA']),
    ({'prompt': 'a <lora:refined>'}, ['for the SDXL refiner']),
    ({'prompt': 'a <lora:detail:6>'}, ['weight 6', 'out of range', '-5..5']),
    ({'prompt': 'a', 'negative_prompt': '<lora:detail:1>'}, ['negative_prompt', 'prompt only']),
    ({'prompt': 'a [cat:dog:2] <lyco:detail:abc>'}, ['<lyco:detail:abc>', 'not a number']),
], ids=['unknown', 'sd1', 'refiner', 'weight-6', 'in-negative', 'lyco-weight'])
def test_bad_lora_goal_refused_at_admission(ros_client, node, fields, words):
    """Refused with the reason before any feedback; the node keeps serving."""
    run = ros_client.send_goal(node.name_of('generate'), **fields)
    response = run.result(60)
    assert_refused(response, *words)
    assert run.feedback == []
    _served_next(ros_client, node)


def test_lora_goal_served_with_hashes_and_listed(ros_client, node):
    """A LoRA goal with emphasis and a long prompt is served; list_models lists LoRAs."""
    from sdxl_ros.srv import ListModels
    prompt = '(a robot:1.3) <lora:detail:0.8>, ' + 'in a [garden], ' * 20 + 'BREAK sunset'
    _, response = ros_client.generate(node.name_of('generate'), prompt=prompt, seed=5)
    assert_served(response)
    text = response.result.parameters
    assert text.splitlines()[0] == prompt
    assert 'Lora hashes: "detail: ' in text and 'Emphasis' not in text
    listing = ros_client.call(ListModels, node.name_of('list_models'))
    assert list(listing.loras) == ['detail', 'refined', 'sd15']


def test_prompt_grammar_served_and_ignored_tags_named(ros_client, node):
    """Editing, AND, a comment and tags that are not LoRAs: served, tags named, verbatim."""
    action = node.name_of('generate')
    prompt = '[a cat:a dog:0.5] # <lora:missing:1>\nAND <hypernet:x:1> a hat :0.5 <LORA:detail>'
    _, response = ros_client.generate(action, prompt=prompt, seed=5)
    assert response.status == status_names().STATUS_SUCCEEDED, response.result.message
    assert len(response.result.images) == 1
    assert response.result.parameters.startswith(prompt + '\n')
    assert 'Lora hashes' not in response.result.parameters  # <LORA:...> is not a LoRA tag
    message = response.result.message
    assert '<hypernet:x:1>' in message and '<LORA:detail>' in message and 'missing' not in message
    _, empty = ros_client.generate(action, prompt='', steps=1)  # as A1111: an empty prompt
    assert_served(empty)


def test_parameters_change_emphasis_and_lora_dir_at_run_time(ros_client, node, lora_dir):
    """Emphasis none is written to infotext; without lora_dir a LoRA tag is refused."""
    fqn, action = node.fqn, node.name_of('generate')
    assert not ros_client.set_parameters(fqn, emphasis='bogus')[0].successful
    assert ros_client.set_parameters(fqn, emphasis='none')[0].successful
    try:
        _, response = ros_client.generate(action, prompt='(a robot:1.2)')
        assert_served(response)
        assert 'Emphasis: None' in response.result.parameters
    finally:
        assert ros_client.set_parameters(fqn, emphasis='original')[0].successful
    assert ros_client.set_parameters(fqn, lora_dir='')[0].successful
    try:
        run = ros_client.send_goal(action, prompt='a <lora:detail:1>')
        assert_refused(run.result(60), 'no lora_dir')
        _served_next(ros_client, node)
    finally:
        assert ros_client.set_parameters(fqn, lora_dir=str(lora_dir))[0].successful
