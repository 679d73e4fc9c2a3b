# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""LoRA tags on the tiny preset: real kohya-layout files, real PEFT loading, real images."""

import hashlib

from engine_fixtures import assert_images_close, tiny_engine, tiny_request
from lora_fixtures import refiner_lora, sd1_like_lora, sdxl_lora, write_lora
import numpy as np
import pytest

from sdxl_ros.engine.infotext import parse_infotext
from sdxl_ros.engine.lora_files import list_loras, short_hash
from sdxl_ros.engine.request import RequestError
import torch


@pytest.fixture(scope='module')
def lora_dir(tmp_path_factory):
    """Write a lora_dir with SDXL LoRAs for the tiny base, an SD1-style one and a refiner one."""
    folder = tmp_path_factory.mktemp('loras')
    maker = tiny_engine()
    base, refiner = maker.base_pipeline, maker.refiner_pipeline
    write_lora(folder / 'detail.safetensors', sdxl_lora(base, seed=0))
    (folder / 'styles').mkdir()
    write_lora(folder / 'styles' / 'ink.safetensors', sdxl_lora(base, seed=5))
    write_lora(folder / 'sd15.safetensors', sd1_like_lora(base))
    write_lora(folder / 'refined.safetensors', refiner_lora(refiner))
    write_lora(folder / 'notes.safetensors', {'something': torch.zeros(3)})
    return folder


@pytest.fixture(scope='module')
def engine(lora_dir):
    """Load a tiny CPU engine with lora_dir set (plain PEFT path)."""
    return tiny_engine(lora_dir=str(lora_dir))


def _weights(pipeline):
    """Return the base weights of UNet and both text encoders, PEFT wrappers looked through."""
    found = {}
    for component in ('unet', 'text_encoder', 'text_encoder_2'):
        for key, value in getattr(pipeline, component).state_dict().items():
            if 'lora_' in key:
                continue
            found[f'{component}.{key.replace(".base_layer", "")}'] = value.clone()
    return found


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_weight_0_equals_no_lora_weight_1_differs_base_untouched(engine):
    """Weight 0 = the image without a LoRA; 1 changes it; the base weights never change."""
    base = engine.base_pipeline
    before = _weights(base)
    plain = engine.generate(tiny_request()).images[0]
    zero = engine.generate(tiny_request(prompt='a robot <lora:detail:0>'))
    assert np.array_equal(zero.images[0], plain)
    one = engine.generate(tiny_request(prompt='a robot <lora:detail:1>')).images[0]
    assert not np.array_equal(one, plain)
    assert int(np.abs(one.astype(int) - plain).max()) > 10
    _assert_same_weights(before, _weights(base))
    again = engine.generate(tiny_request()).images[0]
    assert np.array_equal(again, plain)
    # No LoRA in the goal: the PEFT layers are gone, the modules are the stock ones.
    assert not any('lora_' in k for k in base.unet.state_dict())
    _assert_same_weights(before, _weights(base))


def test_infotext_carries_a1111_lora_hashes_and_round_trips(engine, lora_dir):
    """Lora hashes = first 12 hex of the sha256 of the tensor data (after the header)."""
    prompt = '(a robot:1.2) <lora:detail:0.7>, [fog] <lora:ink>'
    result = engine.generate(tiny_request(prompt=prompt))
    data = (lora_dir / 'detail.safetensors').read_bytes()
    header = int.from_bytes(data[:8], 'little')
    expected = hashlib.sha256(data[8 + header:]).hexdigest()[:12]
    assert expected == short_hash(str(lora_dir / 'detail.safetensors'))
    assert expected != hashlib.sha256(data).hexdigest()[:12]
    ink = short_hash(str(lora_dir / 'styles' / 'ink.safetensors'))
    text = result.infotexts[0]
    assert f'Lora hashes: "detail: {expected}, ink: {ink}"' in text
    assert text.splitlines()[0] == prompt
    again = parse_infotext(text)
    assert again.prompt == prompt
    assert np.array_equal(engine.generate(again).images[0], result.images[0])


def test_used_loras_stay_loaded_others_are_deleted(engine):
    """Goal 1 uses detail+ink, goal 2 ink only: ink stays loaded, detail is deleted."""
    base = engine.base_pipeline
    engine.generate(tiny_request(prompt='a <lora:detail:0.5> <lora:ink:0.5>'))
    adapters = set(base.get_list_adapters()['unet'])
    assert len(adapters) == 2
    engine.generate(tiny_request(prompt='a <lora:ink:0.5>'))
    left = set(base.get_list_adapters()['unet'])
    assert len(left) == 1 and left < adapters and next(iter(left)).startswith('ink_')
    kept = engine.generate(tiny_request(prompt='a <lora:ink:0.5>', steps=2)).images[0]
    engine.generate(tiny_request(steps=1))  # unloads every LoRA
    assert not base.get_list_adapters()
    reloaded = engine.generate(tiny_request(prompt='a <lora:ink:0.5>', steps=2)).images[0]
    assert np.array_equal(kept, reloaded)


@pytest.mark.parametrize('prompt, words', [
    ('a <lora:missing:1>', ['unknown LoRA', "'missing'", 'detail', 'ink', 'refined']),
    ('a <lora:sd15:1>', ['not an SDXL LoRA', 'lora_te_']),
    ('a <lora:refined:1>', ['for the SDXL refiner', 'only base LoRAs']),
    ('a <lora:notes:1>', ['holds no LoRA weights']),
    ('a <lora:detail:6>', ['weight 6', 'out of range', '-5..5']),
])
def test_bad_loras_refused_before_any_step(engine, prompt, words):
    """Each refusal names the reason; nothing is generated, the next goal is served."""
    steps = []
    with pytest.raises(RequestError) as error:
        engine.generate(tiny_request(prompt=prompt), on_progress=steps.append)
    for word in words:
        assert word in str(error.value), str(error.value)
    assert steps == []
    assert engine.generate(tiny_request(steps=1)).images


def test_no_lora_dir_refused():
    """A LoRA tag without lora_dir is refused with the parameter to set."""
    engine = tiny_engine()
    with pytest.raises(RequestError, match='no lora_dir'):
        engine.generate(tiny_request(prompt='a <lora:detail:1>'))


def test_listing(lora_dir):
    assert list_loras(str(lora_dir)) == ['detail', 'ink', 'notes', 'refined', 'sd15']
    assert list_loras('') == [] and list_loras(str(lora_dir / 'nothing')) == []


def test_fused_path_keeps_tensors_and_restores_bit_exactly(engine, lora_dir):
    """
    The fast-path hook (fused QKV, as the GPU fast path installs) fuses LoRAs in place.

    Same picture as the PEFT path within the tolerance, no weight tensor changes storage
    (what CUDA graphs need), and the original weights come back bit for bit.
    """
    from sdxl_ros.engine.prompting.lora import fused_mode_needed
    plain_engine = engine
    engine = tiny_engine(lora_dir=str(lora_dir))
    base = engine.base_pipeline
    base.unet.fuse_qkv_projections()
    assert fused_mode_needed(base, engine.accelerator)
    reference = engine.generate(tiny_request()).images[0]
    assert np.array_equal(reference, plain_engine.generate(tiny_request()).images[0])
    params = {name: p for c in ('unet', 'text_encoder', 'text_encoder_2')
              for name, p in getattr(base, c).named_parameters(prefix=c)}
    before = {name: p.detach().clone() for name, p in params.items()}
    pointers = {name: p.data_ptr() for name, p in params.items()}
    prompt = 'a robot <lora:detail:0.8>'
    fused = engine.generate(tiny_request(prompt=prompt)).images[0]
    assert not np.array_equal(fused, reference)
    assert_images_close(fused, plain_engine.generate(tiny_request(prompt=prompt)).images[0])
    after = dict(base.unet.named_parameters(prefix='unet'))
    assert all(after[n] is params[n] for n in after)  # no PEFT wrappers left
    assert {n: p.data_ptr() for n, p in params.items()} == pointers
    assert np.array_equal(engine.generate(tiny_request()).images[0], reference)
    assert all(torch.equal(before[n], params[n]) for n in params)
