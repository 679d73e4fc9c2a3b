# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""LoRA tags on the tiny preset: kohya SGM-layout, LoCon and PEFT files, real PEFT loading."""

import hashlib
from types import SimpleNamespace

from engine_fixtures import assert_images_close, tiny_engine, tiny_request
from lora_fixtures import (diffusers_names_lora, dora_lora, loha_lora, lokr_lora, peft_lora,
                           refiner_lora, sd1_like_lora, sdxl_lora, sdxl_modules, write_lora)
import numpy as np
import pytest

from sdxl_ros.engine.infotext import parse_infotext
from sdxl_ros.engine.lora_files import (list_loras, merge_repeated, module_count, read_header,
                                        request_loras, short_hash)
from sdxl_ros.engine.request import RequestError
import torch


@pytest.fixture(scope='module')
def lora_dir(tmp_path_factory):
    """Write a lora_dir: SGM-layout SDXL LoRAs, LoCon, PEFT, LyCORIS and unusable files."""
    folder = tmp_path_factory.mktemp('loras')
    maker = tiny_engine()
    base, refiner = maker.base_pipeline, maker.refiner_pipeline
    write_lora(folder / 'detail.safetensors', sdxl_lora(base, seed=0))
    write_lora(folder / 'detail_diffusers.safetensors', diffusers_names_lora(base, seed=0))
    write_lora(folder / 'locon.safetensors', sdxl_lora(base, seed=7, conv=True))
    (folder / 'styles').mkdir()
    write_lora(folder / 'styles' / 'ink.safetensors', sdxl_lora(base, seed=5))
    write_lora(folder / 'sd15.safetensors', sd1_like_lora(base))
    write_lora(folder / 'refined.safetensors', refiner_lora(refiner))
    write_lora(folder / 'notes.safetensors', {'something': torch.zeros(3)})
    state, metadata = peft_lora(base, rank=4, lora_alpha=2)
    write_lora(folder / 'peft_half.safetensors', state, metadata)
    write_lora(folder / 'loha.safetensors', loha_lora(base))
    write_lora(folder / 'lokr.safetensors', lokr_lora(base))
    write_lora(folder / 'dora.safetensors', dora_lora(base))
    stray = sdxl_lora(base, seed=8)
    body = 'lora_unet_input_blocks_3_1_transformer_blocks_7_attn1_to_q'
    for part in ('lora_down.weight', 'lora_up.weight', 'alpha'):
        stray[f'{body}.{part}'] = stray[
            f'lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.{part}'].clone()
    write_lora(folder / 'stray.safetensors', stray)
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
    ('a <lora:stray:1>', ['only in part', '72 of its 73 modules',
                          'down_blocks.1.attentions.0.transformer_blocks.7.attn1.to_q']),
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
    assert list_loras(str(lora_dir)) == [
        'detail', 'detail_diffusers', 'dora', 'ink', 'locon', 'loha', 'lokr', 'notes',
        'peft_half', 'refined', 'sd15', 'stray']
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


def test_fixture_writes_kohya_sgm_names_derived_from_the_modules(engine):
    """The fixture's UNet keys are LDM/SGM names, its text keys carry `text_model_`."""
    base = engine.base_pipeline
    keys = {key for key, _ in sdxl_modules(base, conv=True)}
    # Tiny preset: 1 layer per block; down block 1 holds the attention -> input_blocks 3.
    assert 'lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q' in keys
    assert 'lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k' in keys
    assert 'lora_unet_output_blocks_0_1_proj_in' in keys
    assert 'lora_unet_middle_block_2_in_layers_2' in keys       # LoCon: mid resnet 1 conv1
    assert 'lora_unet_input_blocks_2_0_op' in keys              # LoCon: downsampler
    assert 'lora_unet_output_blocks_1_2_conv' in keys           # LoCon: upsampler after attn
    assert 'lora_te1_text_model_encoder_layers_0_self_attn_q_proj' in keys
    assert 'lora_te2_text_model_encoder_layers_1_mlp_fc2' in keys
    assert not any('down_blocks' in k or 'mid_block' in k for k in keys)


def test_sgm_layout_equals_diffusers_names_and_every_module_applies(engine, lora_dir):
    """The same tensors in kohya's SGM layout and in diffusers names: the same image."""
    from sdxl_ros.engine.prompting.lora import adapter_modules
    sgm = engine.generate(tiny_request(prompt='a robot <lora:detail:0.8>')).images[0]
    names = engine.generate(tiny_request(prompt='a robot <lora:detail_diffusers:0.8>'))
    assert np.array_equal(sgm, names.images[0])
    (adapter,) = engine.base_pipeline.get_list_adapters()['unet']
    applied = list(adapter_modules(engine.base_pipeline, adapter))
    assert not np.array_equal(sgm, engine.generate(tiny_request(prompt='a robot')).images[0])
    shapes, _ = read_header(str(lora_dir / 'detail.safetensors'))
    assert len(applied) == module_count(shapes) == 72
    assert sum(m.startswith('text_encoder.') for m in applied) == 12
    assert sum(m.startswith('text_encoder_2.') for m in applied) == 12


def test_locon_convolutions_apply(engine, lora_dir):
    """A LoCon file: every linear and convolution module gets the adapter (103 of 103)."""
    from sdxl_ros.engine.prompting.lora import adapter_modules
    image = engine.generate(tiny_request(prompt='a robot <lora:locon:0.5>')).images[0]
    (adapter,) = engine.base_pipeline.get_list_adapters()['unet']
    applied = set(adapter_modules(engine.base_pipeline, adapter))
    assert not np.array_equal(image, engine.generate(tiny_request(prompt='a robot')).images[0])
    shapes, _ = read_header(str(lora_dir / 'locon.safetensors'))
    assert len(applied) == module_count(shapes) == 103
    for module in ('unet.mid_block.resnets.1.conv1', 'unet.down_blocks.0.downsamplers.0.conv',
                   'unet.up_blocks.0.upsamplers.0.conv', 'unet.up_blocks.1.resnets.1.conv2',
                   'unet.down_blocks.0.resnets.0.time_emb_proj'):
        assert module in applied


def test_repeated_tags_apply_the_last_weight_once_per_tag(engine):
    """`<lora:x:0.5> … <lora:x:0.2>` = x applied twice at 0.2 (= once at 0.4), as A1111."""
    twice = engine.generate(tiny_request(prompt='<lora:detail:0.5> a robot <lora:detail:0.2>'))
    once = engine.generate(tiny_request(prompt='a robot <lora:detail:0.4>')).images[0]
    summed = engine.generate(tiny_request(prompt='a robot <lora:detail:0.7>')).images[0]
    assert np.array_equal(twice.images[0], once)
    assert not np.array_equal(once, summed)
    assert twice.infotexts[0].count('detail: ') == 1


def test_merge_repeated_groups_lora_then_lyco_as_a1111():
    """A1111 lists all tags of the type seen first, then the other's; last weight, n times."""
    def tag(name, weight, kind='lora'):
        return SimpleNamespace(name=name, weight=weight, kind=kind)
    assert merge_repeated([tag('x', 0.5), tag('y', 1.0), tag('x', 0.2)]) == [
        ('x', 0.4), ('y', 1.0)]
    # <lora:x:0.5> <lyco:x:0.3> <lora:x:0.2>: list x:0.5, x:0.2 (lora), x:0.3 (lyco).
    assert merge_repeated([tag('x', 0.5), tag('x', 0.3, 'lyco'), tag('x', 0.2)]) == [
        ('x', pytest.approx(0.9))]
    assert merge_repeated([tag('x', 0.5, 'lyco'), tag('x', 0.2)]) == [('x', 0.4)]
    plain = SimpleNamespace(name='z', weight=0.25)  # tags without a kind are lora tags
    assert merge_repeated([plain, plain, plain]) == [('z', 0.75)]


def test_peft_file_honours_lora_alpha_from_its_metadata(engine, lora_dir):
    """
    A PEFT file with rank 4 and lora_alpha 2 runs at scale 2/4 = 0.5.

    Hand-computed: to_q(x) = x W^T + weight * 0.5 * x A^T B^T with A, B read from the file.
    """
    from safetensors.torch import load_file
    engine.generate(tiny_request(prompt='a <lora:peft_half:0.6>', steps=1))
    base = engine.base_pipeline
    (adapter,) = base.get_list_adapters()['unet']
    module = base.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert module.scaling[adapter] == pytest.approx(0.5 * 0.6)
    state = load_file(str(lora_dir / 'peft_half.safetensors'))
    key = 'unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q'
    down, up = state[f'{key}.lora_A.weight'], state[f'{key}.lora_B.weight']
    x = torch.randn(3, down.shape[1], generator=torch.Generator().manual_seed(0))
    weight = module.get_base_layer().weight
    expected = x @ weight.T + 0.6 * 0.5 * (x @ down.T @ up.T)
    with torch.no_grad():
        assert torch.allclose(module(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name, words', [
    ('loha', ['a LyCORIS LoHa', 'hada_w1_a', 'only LoRA and LoCon']),
    ('lokr', ['a LyCORIS LoKr', 'lokr_w1']),
    ('dora', ['a DoRA', 'dora_scale']),
])
def test_lycoris_and_dora_refused_at_admission(engine, lora_dir, name, words):
    """Refused by the header check the node runs at admission (no torch, no target)."""
    request = tiny_request(prompt=f'a <lora:{name}:1>')
    with pytest.raises(RequestError) as error:
        request_loras(request, str(lora_dir), None, with_hash=False)
    for word in words:
        assert word in str(error.value)
    steps = []
    with pytest.raises(RequestError, match=words[0]):
        engine.generate(request, on_progress=steps.append)
    assert steps == []


def test_library_errors_are_kept_whole():
    """A multi-line library error becomes one line, all of it (long ones say what is left)."""
    from sdxl_ros.engine.prompting.lora import error_text
    keys = ', '.join(f'key_{i}' for i in range(5))
    assert error_text(ValueError(f'not renamed: \n\n {keys}\n')) == f'not renamed: {keys}'
    long = error_text(ValueError('x' * 2000), limit=100)
    assert long.startswith('x' * 100) and long.endswith('(1900 more characters)')
