# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""LoRA kinds and textual-inversion embeddings through a real sdxl_node: refusals, listing."""

import pytest

from ros_harness import assert_refused, assert_served, NodeProcess

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """Write a lora_dir (a LyCORIS LoHa) and an embeddings_dir built from the tiny preset."""
    import torch
    from embedding_fixtures import random_embedding, write_embedding
    from engine_fixtures import tiny_engine
    from lora_fixtures import loha_lora, write_lora
    loras = tmp_path_factory.mktemp('loras')
    embeddings = tmp_path_factory.mktemp('embeddings')
    base = tiny_engine(refiner_model='').base_pipeline
    write_lora(loras / 'hada.safetensors', loha_lora(base))
    write_embedding(embeddings / 'sparkle.safetensors', random_embedding(base, 2))
    write_embedding(embeddings / 'sd15.safetensors', {'emb_params': torch.zeros(1, 768)})
    (embeddings / 'broken.safetensors').write_bytes(b'not a safetensors file')
    return loras, embeddings


@pytest.fixture(scope='module')
def node(ros_client, folders, tmp_path_factory):
    """One node with lora_dir and embeddings_dir set, 2 steps per goal."""
    loras, embeddings = folders
    process = NodeProcess(tmp_path_factory.mktemp('node'),
                          {'lora_dir': str(loras), 'embeddings_dir': str(embeddings),
                           'default_steps': 2}).start()
    try:
        ros_client.wait_active(process.fqn, process)
        yield process
    finally:
        process.stop()
        print(f'----- log of {process.fqn} -----\n{process.log()}')


@pytest.mark.parametrize('fields, words', [
    ({'prompt': 'a <lora:hada:1>'}, ["'hada'", 'a LyCORIS LoHa', 'hada_w1_a',
                                     'only LoRA and LoCon']),
    ({'prompt': 'a sd15 robot'}, ["'sd15'", 'SD 1.x embedding', '768-wide']),
    ({'prompt': 'a robot', 'negative_prompt': 'broken'}, ['broken.safetensors',
                                                          'cannot be read']),
], ids=['loha', 'sd1-embedding', 'unreadable-embedding'])
def test_refused_at_admission_with_the_reason(ros_client, node, fields, words):
    """Refused before any feedback; the node keeps serving the next goal."""
    run = ros_client.send_goal(node.name_of('generate'), **fields)
    assert_refused(run.result(60), *words)
    assert run.feedback == []
    _, response = ros_client.generate(node.name_of('generate'), prompt='the next goal',
                                      steps=1)
    assert_served(response)


def test_embedding_goal_served_with_ti_hashes_and_listed(ros_client, node, folders):
    """A goal naming an embedding is served, its hash in infotext; list_models lists them."""
    import hashlib
    from sdxl_ros.srv import ListModels
    _, embeddings = folders
    _, response = ros_client.generate(node.name_of('generate'), prompt='a sparkle robot')
    assert_served(response)
    digest = hashlib.sha256((embeddings / 'sparkle.safetensors').read_bytes()).hexdigest()
    assert f'TI hashes: "sparkle: {digest[:12]}"' in response.result.parameters
    listing = ros_client.call(ListModels, node.name_of('list_models'))
    assert list(listing.embeddings) == ['broken', 'sd15', 'sparkle']
    assert list(listing.loras) == ['hada']
