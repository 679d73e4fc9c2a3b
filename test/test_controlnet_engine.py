# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""ControlNet in the engine: tiny preset ControlNets (built from the tiny UNet), CPU, offline."""

from engine_fixtures import tiny_engine, TINY_LIMITS, tiny_request
import numpy as np
import pytest

from sdxl_ros.engine.conditioning.controlnet import control_map, ControlHook
from sdxl_ros.engine.control_request import ControlUnitRequest
from sdxl_ros.engine.controlnet_files import ControlNetError
from sdxl_ros.engine.infotext import parse_infotext
from sdxl_ros.engine.request import validate_request


@pytest.fixture(scope='module')
def engine():
    """One loaded tiny engine for the module."""
    return tiny_engine()


def depth_frame(height=48, width=80):
    """Return a synthetic 16UC1 frame: a near box (0.8 m) before a far wall (3 m), with holes."""
    depth = np.full((height, width), 3000, np.uint16)
    depth[12:36, 20:50] = 800
    depth[0:4, :] = 0
    return depth


def unit(**fields):
    values = {'model': 'tiny', 'image': depth_frame(), 'module': 'depth_metric'}
    values.update(fields)
    return ControlUnitRequest(**values)


def image(engine, *units, **fields):
    """Generate one 64x64 image with `units`; return (pixels, infotext)."""
    result = engine.generate(tiny_request(control=units, **fields))
    return result.images[0], result.infotexts[0]


@pytest.fixture(scope='module')
def plain(engine):
    return image(engine)[0]


def test_weight_zero_gives_exactly_the_image_without_control(engine, plain):
    assert np.array_equal(image(engine, unit(weight=0.0))[0], plain)


def test_weight_one_changes_the_image(engine, plain):
    controlled = image(engine, unit())[0]
    assert np.abs(controlled.astype(int) - plain.astype(int)).max() > 10


def test_same_goal_same_image(engine):
    assert np.array_equal(image(engine, unit())[0], image(engine, unit())[0])


def test_a_window_that_covers_no_step_equals_no_control(engine, plain):
    # 6 steps: step i runs control when start <= i / 6 <= end; i / 6 <= 5/6 < 0.9.
    assert np.array_equal(image(engine, unit(guidance_start=0.9))[0], plain)
    assert not np.array_equal(image(engine, unit(guidance_end=0.2))[0], plain)


def test_hook_runs_on_the_steps_of_the_window_only(engine):
    counts = []
    original = ControlHook.__call__

    def counting(self, module, args, kwargs):
        before = self.calls
        out = original(self, module, args, kwargs)
        counts.append(self.calls - before)
        return out
    ControlHook.__call__ = counting
    try:
        # steps 8, switch 0.5: the base runs steps 0..3 of 8; window [0.25, 0.5] -> 2, 3
        engine.generate(tiny_request(steps=8, refiner_switch=0.5,
                                     control=(unit(guidance_start=0.25, guidance_end=0.5),)))
    finally:
        ControlHook.__call__ = original
    assert counts == [0, 0, 1, 1]  # the refiner's steps never reach the hook


def test_control_modes_and_weights_differ(engine):
    pictures = [image(engine, unit(control_mode=mode))[0] for mode in
                ('Balanced', 'My prompt is more important', 'ControlNet is more important')]
    pictures.append(image(engine, unit(weight=0.5))[0])
    for i in range(len(pictures)):
        for j in range(i):
            assert not np.array_equal(pictures[i], pictures[j]), (i, j)


def test_two_units_differ_from_each_and_weight_zero_drops_one(engine):
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[:, 30:34] = 255
    second = unit(image=edges, module='none', weight=1.5)
    one = image(engine, unit())[0]
    both, text = image(engine, unit(), second)
    assert not np.array_equal(one, both)
    assert np.array_equal(image(engine, unit(), unit(image=edges, module='none',
                                                     weight=0.0))[0], one)
    assert [u.module for u in parse_infotext(text).control] == ['depth_metric', 'none']


def test_union_controlnet_runs_and_its_type_matters(engine, plain):
    depth = image(engine, unit(model='tiny-union'))[0]
    edges = image(engine, unit(model='tiny-union', control_type='Hard Edge'))[0]
    assert not np.array_equal(depth, plain) and not np.array_equal(depth, edges)


def test_img2img_and_inpainting_take_control(engine):
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    for fields in ({'init_image': init}, {'init_image': init, 'mask_image': mask}):
        without = image(engine, **fields)[0]
        assert not np.array_equal(image(engine, unit(), **fields)[0], without)
        assert np.array_equal(image(engine, unit(weight=0.0), **fields)[0], without)


def test_control_map_resize_modes():
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, :16] = 255  # a white band on the left quarter
    crop = control_map(validated(unit(image=frame, module='none')), 64, 64)
    stretch = control_map(validated(unit(image=frame, module='none',
                                         resize_mode='Just Resize')), 64, 64)
    assert crop.shape == stretch.shape == (64, 64, 3)
    # Crop and Resize keeps the middle half of the width: the band is cut away.
    assert crop[:, :4].max() < 64 and stretch[:, :8].min() > 192


def validated(control_unit):
    return validate_request(tiny_request(control=(control_unit,)), TINY_LIMITS).control[0]


def test_unknown_and_foreign_controlnets_are_refused(engine, tmp_path):
    with pytest.raises(ControlNetError, match="unknown ControlNet 'nope'"):
        engine.generate(tiny_request(control=(unit(model='nope'),)))
    with pytest.raises(ControlNetError, match='union ControlNets'):
        engine.generate(tiny_request(control=(unit(control_type='Depth'),)))
    picture = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ControlNetError, match='module none implies no control type'):
        engine.generate(tiny_request(control=(unit(model='tiny-union', module='none',
                                                   image=picture),)))


def test_controlnets_are_kept_while_goals_use_them(engine):
    from sdxl_ros.engine.conditioning.controlnet import ControlNetSet
    from sdxl_ros.engine.controlnet_files import ControlNetFile
    held = ControlNetSet(engine.base_pipeline.unet, engine.device, engine.dtype)
    tiny, union = ControlNetFile('tiny', ''), ControlNetFile('tiny-union', '', is_union=True)
    first = held.use([tiny])
    assert held.use([tiny, union])[0] is first[0]  # not loaded again
    assert held.loaded == ['tiny', 'tiny-union']
    held.use([union])
    assert held.loaded == ['tiny-union']
    held.use([])
    assert held.loaded == []


def test_a_diffusers_folder_in_controlnet_dir_loads_and_is_hashed(tmp_path):
    from sdxl_ros.engine.conditioning.controlnet import _tiny
    from sdxl_ros.engine.controlnet_files import short_hash
    folder_engine = tiny_engine(controlnet_dir=str(tmp_path))
    _tiny(folder_engine.base_pipeline.unet).save_pretrained(tmp_path / 'my_depth')
    preset, _ = image(folder_engine, unit())
    saved, text = image(folder_engine, unit(model='my_depth'))
    assert np.array_equal(saved, preset)  # the same weights, read back from the folder
    digest = short_hash(tmp_path / 'my_depth')
    assert len(digest) == 8 and f'Model: my_depth [{digest}]' in text
