# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Offline model loading: single-file checkpoints, diffusers folders, tokenizers, errors."""

from pathlib import Path

from engine_fixtures import assert_images_close, tiny_engine, tiny_request
import pytest

from sdxl_ros.engine import EngineConfig, ModelLoadError, SdxlEngine
from sdxl_ros.engine.models import tokenizers as toks
from sdxl_ros.engine.models.resources import model_config_dir, resource_dir
from single_file_export import save_single_file, single_file_state_dict
import torch

COMPONENTS = ('unet', 'vae', 'text_encoder', 'text_encoder_2')


@pytest.fixture(scope='module')
def preset():
    """Return the tiny preset engine the files are written from."""
    return tiny_engine()


@pytest.fixture(scope='module')
def checkpoints(preset, tmp_path_factory):
    """Tiny base and refiner written as original-layout single files."""
    folder = tmp_path_factory.mktemp('models')
    save_single_file(preset.base_pipeline, folder / 'tiny_base.safetensors', 'base')
    save_single_file(preset.refiner_pipeline, folder / 'tiny_refiner.safetensors', 'refiner')
    return folder


def load(**config):
    """Load an engine on the CPU with tiny limits and return it."""
    return tiny_engine(**config)


def assert_same_weights(first, second):
    """Every tensor of the two modules is bit-identical."""
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resources_found():
    assert (resource_dir() / 'models' / 'sdxl-base' / 'unet' / 'config.json').is_file()
    assert (model_config_dir('sdxl-refiner') / 'model_index.json').is_file()


def test_written_file_uses_original_key_layout(preset):
    keys = single_file_state_dict(preset.base_pipeline, 'base').keys()
    assert 'model.diffusion_model.input_blocks.0.0.weight' in keys
    assert 'model.diffusion_model.label_emb.0.0.weight' in keys
    assert 'first_stage_model.decoder.mid.attn_1.q.weight' in keys
    assert 'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight' in keys
    assert any(k.startswith('conditioner.embedders.0.transformer.text_model.') for k in keys)
    refiner = single_file_state_dict(preset.refiner_pipeline, 'refiner').keys()
    assert 'conditioner.embedders.0.model.text_projection' in refiner
    assert not any(k.startswith('conditioner.embedders.1.') for k in refiner)


def test_single_file_loads_offline_with_equal_weights(preset, checkpoints):
    engine = load(base_model='tiny_base.safetensors', refiner_model='tiny_refiner.safetensors',
                  model_dir=str(checkpoints))
    assert engine.model_names == ('tiny_base', 'tiny_refiner')
    for name in COMPONENTS:
        assert_same_weights(getattr(preset.base_pipeline, name),
                            getattr(engine.base_pipeline, name))
    assert_same_weights(preset.refiner_pipeline.unet, engine.refiner_pipeline.unet)
    assert engine.refiner_pipeline.vae is engine.base_pipeline.vae
    assert engine.refiner_pipeline.text_encoder_2 is engine.base_pipeline.text_encoder_2
    request = tiny_request(steps=5)
    assert_images_close(preset.generate(request).images[0], engine.generate(request).images[0])
    assert 'Model: tiny_base, Refiner: tiny_refiner' in engine.generate(request).infotexts[0]


def test_diffusers_folder_loads(preset, tmp_path):
    preset.base_pipeline.save_pretrained(tmp_path / 'base')
    preset.refiner_pipeline.save_pretrained(tmp_path / 'refiner')
    engine = load(base_model=str(tmp_path / 'base'), refiner_model='refiner',
                  model_dir=str(tmp_path))
    assert engine.model_names == ('base', 'refiner')
    assert engine.refiner_pipeline.vae is engine.base_pipeline.vae
    request = tiny_request(steps=4, scheduler='Euler a')
    assert_images_close(preset.generate(request).images[0], engine.generate(request).images[0])


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(ModelLoadError, match='not found.*missing.safetensors.*preset'):
        load(base_model='missing.safetensors', model_dir=str(tmp_path))


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelLoadError, match='model_index.json'):
        load(base_model=str(tmp_path))


def test_not_a_checkpoint_suffix(tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(ModelLoadError, match='not a checkpoint'):
        load(base_model=str(tmp_path / 'notes.txt'))


def test_truncated_file(checkpoints, tmp_path):
    data = (checkpoints / 'tiny_base.safetensors').read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ModelLoadError, match='truncated.*[Dd]ownload it again'):
        load(base_model=str(tmp_path / 'cut.safetensors'), refiner_model='')


def test_garbage_file(tmp_path):
    (tmp_path / 'junk.safetensors').write_bytes(b'\x00' * 5 + b'not a safetensors file' * 9)
    with pytest.raises(ModelLoadError, match='damaged or truncated'):
        load(base_model=str(tmp_path / 'junk.safetensors'), refiner_model='')


def test_refiner_given_as_base(checkpoints):
    with pytest.raises(ModelLoadError, match='is an SDXL refiner checkpoint'):
        load(base_model=str(checkpoints / 'tiny_refiner.safetensors'), refiner_model='')


def test_base_given_as_refiner(checkpoints):
    with pytest.raises(ModelLoadError, match='is an SDXL base checkpoint'):
        load(refiner_model=str(checkpoints / 'tiny_base.safetensors'))


def write(path, tensors):
    """Write a small safetensors file."""
    from safetensors.torch import save_file
    save_file({k: torch.zeros(v) for k, v in tensors.items()}, str(path))
    return str(path)


def test_sd1_checkpoint_refused(tmp_path):
    path = write(tmp_path / 'v1-5.safetensors', {
        'model.diffusion_model.input_blocks.0.0.weight': (320, 4, 3, 3),
        'cond_stage_model.transformer.text_model.embeddings.position_embedding.weight': (77, 8),
        'first_stage_model.decoder.conv_out.weight': (3, 8, 3, 3)})
    with pytest.raises(ModelLoadError, match='1.x/2.x checkpoint, not SDXL'):
        load(base_model=path, refiner_model='')


def test_lora_file_refused(tmp_path):
    path = write(tmp_path / 'lora.safetensors', {'lora_unet_down.alpha': (1,)})
    with pytest.raises(ModelLoadError, match='no Stable Diffusion UNet'):
        load(base_model=path, refiner_model='')


def test_unknown_sdxl_width_refused(preset, tmp_path):
    from safetensors.torch import save_file
    state = single_file_state_dict(preset.base_pipeline, 'base')
    state['model.diffusion_model.input_blocks.0.0.weight'] = torch.zeros(40, 4, 3, 3)
    save_file(state, str(tmp_path / 'odd.safetensors'))
    with pytest.raises(ModelLoadError, match='unknown SDXL base architecture'):
        load(base_model=str(tmp_path / 'odd.safetensors'), refiner_model='')


def test_unknown_preset_choice_lists_presets():
    with pytest.raises(ModelLoadError, match='tiny, sdxl-random'):
        load(base_model='tiny-xl')


def test_no_tokenizer_says_what_to_provide(monkeypatch):
    monkeypatch.setattr(toks, 'clip_bpe_file', lambda: None)
    with pytest.raises(ModelLoadError, match="tokenizer_dir.*'openai-clip'"):
        toks.find_tokenizers('')
    with pytest.raises(ModelLoadError, match='is not a folder'):
        toks.find_tokenizers('/nonexistent/tokenizers')


def test_tokenizer_dir_round_trip(tmp_path):
    first, second = toks.tiny_tokenizers()
    first.save_pretrained(tmp_path / 'tokenizer')
    second.save_pretrained(tmp_path / 'tokenizer_2')
    loaded_first, loaded_second = toks.find_tokenizers(str(tmp_path))
    text = 'a robot, painted'
    assert loaded_first(text).input_ids == first(text).input_ids
    assert loaded_second.pad_token == '!'
    assert loaded_first.model_max_length == 77
    (tmp_path / 'bad').mkdir()
    with pytest.raises(ModelLoadError, match='cannot load CLIP tokenizers'):
        toks.find_tokenizers(str(tmp_path / 'bad'))


def test_real_clip_vocabulary_when_installed():
    path = toks.clip_bpe_file()
    if path is None:
        pytest.skip('no package with the CLIP BPE vocabulary installed')
    first, second = toks.clip_tokenizers_from_bpe(path)
    assert len(first) == 49408
    # Well-known CLIP ids: <|startoftext|> a photo of ... <|endoftext|>.
    assert first('a photo of').input_ids == [49406, 320, 1125, 539, 49407]
    assert first.pad_token_id == 49407 and second.pad_token_id == 0


def test_cuda_requested_without_gpu():
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(ModelLoadError, match='no CUDA GPU'):
        SdxlEngine(EngineConfig(device='cuda')).load()


def test_bad_config_choice():
    with pytest.raises(ValueError, match='memory_mode'):
        EngineConfig(memory_mode='swap')


def test_export_skips_fused_projections(tmp_path):
    engine = tiny_engine(refiner_model='')
    plain = set(single_file_state_dict(engine.base_pipeline, 'base'))
    engine.base_pipeline.unet.fuse_qkv_projections()  # what the GPU fast path does
    assert set(single_file_state_dict(engine.base_pipeline, 'base')) == plain
    save_single_file(engine.base_pipeline, tmp_path / 'fused.safetensors', 'base')
    loaded = load(base_model=str(tmp_path / 'fused.safetensors'), refiner_model='')
    assert loaded.generate(tiny_request(steps=2)).images[0].shape == (64, 64, 3)


def test_checkpoint_reader_matches_safetensors(checkpoints):
    from safetensors.torch import load_file
    from sdxl_ros.engine.models.checkpoint_reader import CheckpointReader
    path = checkpoints / 'tiny_base.safetensors'
    expected = load_file(str(path))
    got = CheckpointReader(path).read(('',), 'cpu')
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key])
    unet = CheckpointReader(path).read(('model.diffusion_model.',), 'cpu')
    assert unet and all(key.startswith('model.diffusion_model.') for key in unet)


# Runs in a fresh process: reads a checkpoint and reports the RSS high-water mark it added.
_RSS_CHILD = """
import sys
from sdxl_ros.engine.models.checkpoint_reader import CheckpointReader
import torch
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
reader = CheckpointReader(sys.argv[1])
torch.empty(1)
open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM to the current RSS
before = status('VmRSS')
tensors = reader.read(('',), sys.argv[2])
print(status('VmHWM') - before)
"""


@pytest.mark.parametrize('target', ['cpu', 'meta'])
def test_checkpoint_read_holds_the_weights_once(tmp_path, target):
    """
    Reading onto the host adds ~1x the file to RSS; onto another device ~one tensor.

    The tiny preset's files (5 MB) drown in the RSS of Python's own lazy work, so this uses a
    192 MB file of six 32 MB tensors. 'meta' stands in for a GPU here: tensors leave the
    host, so only the reused staging buffer stays (on a GPU, bench/bench_memory.py measures
    the whole load: 0.94x the checkpoint bytes for host + device together).
    """
    import subprocess
    import sys
    from safetensors.torch import save_file
    if not Path('/proc/self/clear_refs').exists():
        pytest.skip('no /proc/self/clear_refs to reset the RSS high-water mark')
    tensor_bytes = 32 << 20
    save_file({f'model.diffusion_model.w{i}': torch.full((tensor_bytes // 4,), float(i))
               for i in range(6)}, str(tmp_path / 'big.safetensors'))
    done = subprocess.run([sys.executable, '-c', _RSS_CHILD, str(tmp_path / 'big.safetensors'),
                           target], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    added = int(done.stdout.split()[-1])
    limit = 1.1 * 6 * tensor_bytes if target == 'cpu' else 1.5 * tensor_bytes
    assert added <= limit, f'{target}: RSS grew {added / 2**20:.0f} MiB, ' \
        f'limit {limit / 2**20:.0f} MiB'
    if target == 'cpu':
        assert added >= 0.9 * 6 * tensor_bytes  # the tensors really are on the host
