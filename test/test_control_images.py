# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""ControlNet preprocessors, unit validation and infotext, without ROS or torch."""

from dataclasses import replace
import importlib.util

import numpy as np
import pytest

from sdxl_ros.engine.control_images import (ControlImageError, depth_metric_map,
                                            opencv_problem, preprocess)
from sdxl_ros.engine.control_request import ControlUnitRequest
from sdxl_ros.engine.infotext import format_infotext, parse_infotext
from sdxl_ros.engine.request import GenerationRequest, Limits, RequestError, validate_request

HAVE_CV2 = importlib.util.find_spec('cv2') is not None


def test_depth_16uc1_with_zeros_against_hand_computed_map():
    # millimetres 500, 1000, 2000 and two holes (0). Inverse depth 2, 1, 0.5 1/m:
    # (inv - 0.5) / 1.5 * 255 -> 255, 85, 0; holes black.
    depth = np.array([[500, 0, 1000], [2000, 0, 500]], np.uint16)
    assert depth_metric_map(depth).tolist() == [[255, 0, 85], [0, 0, 255]]


def test_depth_32fc1_with_nan_and_inf_against_hand_computed_map():
    # metres 1, 4, 2 and NaN, +inf, -inf, -1, 0 (all invalid). Inverse 1, 0.25, 0.5:
    # (inv - 0.25) / 0.75 * 255 -> 255, 0, 85.
    depth = np.array([[1.0, np.nan, 4.0, np.inf], [-np.inf, 2.0, -1.0, 0.0]], np.float32)
    assert depth_metric_map(depth).tolist() == [[255, 0, 0, 0], [0, 85, 0, 0]]


def test_depth_without_valid_pixels_is_black_and_one_distance_is_white():
    assert not depth_metric_map(np.zeros((3, 4), np.uint16)).any()
    assert not depth_metric_map(np.full((2, 2), np.nan, np.float32)).any()
    flat = np.array([[1500, 0], [1500, 1500]], np.uint16)
    assert depth_metric_map(flat).tolist() == [[255, 0], [255, 255]]


def test_depth_metric_maps_equal_in_both_units():
    metres = np.array([[0.5, 0.75], [3.0, 1.2]], np.float32)
    millimetres = np.rint(metres * 1000).astype(np.uint16)
    assert np.array_equal(depth_metric_map(metres), depth_metric_map(millimetres))


def test_preprocess_gives_three_equal_channels_and_keeps_pictures():
    depth = np.array([[500, 1000]], np.uint16)
    out = preprocess('depth_metric', depth)
    assert out.shape == (1, 2, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    picture = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert np.array_equal(preprocess('none', picture), picture)
    assert np.array_equal(preprocess('depth', picture), picture)


@pytest.mark.parametrize('module, image, words', [
    ('depth_metric', np.zeros((4, 4, 3), np.uint8), ['needs a depth frame', 'module depth']),
    ('canny', np.zeros((4, 4), np.float32), ['8-bit picture', 'depth_metric']),
    ('none', np.zeros((4, 4), np.uint16), ['8-bit picture']),
    ('depth', np.zeros((0, 4, 3), np.uint8), ['empty']),
    ('sobel', np.zeros((4, 4, 3), np.uint8), ['unknown module', 'depth_metric']),
])
def test_preprocess_refuses_the_wrong_kind_of_image(module, image, words):
    with pytest.raises(ControlImageError) as error:
        preprocess(module, image)
    assert all(word in str(error.value) for word in words), error.value


@pytest.mark.skipif(HAVE_CV2, reason='OpenCV is installed here')
def test_canny_without_opencv_is_refused_with_the_reason():
    assert 'opencv-python-headless' in opencv_problem()
    unit = ControlUnitRequest(model='tiny', image=np.zeros((8, 8, 3), np.uint8),
                              module='canny')
    with pytest.raises(RequestError, match='needs OpenCV'):
        validate_request(request(unit), Limits(min_side=64))


@pytest.mark.skipif(not HAVE_CV2, reason='needs OpenCV')
def test_canny_finds_the_edge_of_a_step():
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:, 8:] = 255
    edges = preprocess('canny', picture)[..., 0]
    columns = sorted(set(np.nonzero(edges)[1].tolist()))
    assert columns and set(columns) <= {7, 8} and set(np.unique(edges)) == {0, 255}
    assert not preprocess('canny', np.zeros((16, 16, 3), np.uint8)).any()


def request(*units, **fields):
    """Return a small valid request with ControlNet `units`."""
    values = {'prompt': 'a room', 'width': 64, 'height': 64, 'steps': 4, 'control': units}
    values.update(fields)
    return GenerationRequest(**values)


def depth_unit(**fields):
    values = {'model': 'tiny', 'image': np.full((8, 8), 1000, np.uint16),
              'module': 'depth_metric'}
    values.update(fields)
    return ControlUnitRequest(**values)


def test_unit_defaults_are_the_extensions():
    unit = validate_request(request(depth_unit()), Limits(min_side=64)).control[0]
    assert (unit.weight, unit.guidance_start, unit.guidance_end) == (1.0, 0.0, 1.0)
    assert (unit.control_mode, unit.resize_mode) == ('Balanced', 'Crop and Resize')
    assert (unit.canny_low_threshold, unit.canny_high_threshold) == (100.0, 200.0)


def test_unit_labels_are_normalised():
    unit = validate_request(request(depth_unit(
        control_mode='controlnet is  more important', resize_mode='JUST RESIZE',
        module=' Depth_Metric ', weight=0.800000011920929)), Limits(min_side=64)).control[0]
    assert unit.control_mode == 'ControlNet is more important'
    assert (unit.resize_mode, unit.module, unit.weight) == ('Just Resize', 'depth_metric', 0.8)


@pytest.mark.parametrize('fields, words', [
    ({'weight': 2.5}, ['weight 2.5', '0..2']),
    ({'weight': -0.1}, ['weight -0.1']),
    ({'weight': float('nan')}, ['finite']),
    ({'guidance_start': 0.5, 'guidance_end': 0.5}, ['0 <= start < end <= 1']),
    ({'guidance_start': 0.6, 'guidance_end': 0.2}, ['guidance_start 0.6']),
    ({'guidance_end': 1.5}, ['guidance_end 1.5']),
    ({'guidance_start': -0.1}, ['guidance_start -0.1']),
    ({'control_mode': 'Strong'}, ['unknown control[0].control_mode', 'Balanced']),
    ({'resize_mode': 'stretch'}, ['unknown control[0].resize_mode', 'Crop and Resize']),
    ({'control_type': 'Sketch'}, ['control_type', 'Hard Edge']),
    ({'model': ' '}, ['model is empty']),
    ({'image': None}, ['no image']),
    ({'module': 'sobel'}, ['module', 'unknown']),
    ({'image': np.zeros((8, 8, 3), np.uint8)}, ['needs a depth frame']),
])
def test_bad_units_are_refused_with_the_reason(fields, words):
    with pytest.raises(RequestError) as error:
        validate_request(request(depth_unit(**fields)), Limits(min_side=64))
    assert all(word in str(error.value) for word in words), error.value


def test_more_units_than_max_control_units_are_refused():
    units = (depth_unit(),) * 3
    assert len(validate_request(request(*units), Limits(min_side=64)).control) == 3
    with pytest.raises(RequestError, match='3 ControlNet units given; at most 2'):
        validate_request(request(*units), Limits(min_side=64, max_control_units=2))


def test_infotext_writes_units_as_the_extension_and_reads_them_back():
    units = (depth_unit(weight=0.8, guidance_end=0.6,
                        control_mode='My prompt is more important'),
             ControlUnitRequest(model='xl_canny', image=np.zeros((8, 8, 3), np.uint8),
                                module='none', resize_mode='Resize and Fill'))
    req = validate_request(request(*units), Limits(min_side=64))
    text = format_infotext(req, 5, 'tiny', control_hashes=['', 'abcdef12'])
    assert ('ControlNet 0: "Module: depth_metric, Model: tiny, Weight: 0.8, Resize Mode: '
            'Crop and Resize, Processor Res: 64, Threshold A: -1, Threshold B: -1, Guidance '
            'Start: 0.0, Guidance End: 0.6, Pixel Perfect: True, Control Mode: My prompt is '
            'more important"') in text
    assert 'ControlNet 1: "Module: none, Model: xl_canny [abcdef12], Weight: 1.0, ' in text
    back = parse_infotext(text).control
    assert [u.model for u in back] == ['tiny', 'xl_canny']
    for got, want in zip(back, req.control):
        assert got.image is None
        assert replace(got, image=want.image) == want


def test_infotext_reads_canny_thresholds_and_the_extensions_own_text():
    text = ('a house\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, '
            'ControlNet 0: "Module: canny, Model: diffusers_xl_canny_full [2f51180b], '
            'Weight: 0.5, Resize Mode: Just Resize, Processor Res: 512, Threshold A: 50.0, '
            'Threshold B: 150.0, Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: '
            'False, Control Mode: Balanced"')
    unit, = parse_infotext(text).control
    assert (unit.model, unit.module, unit.weight) == ('diffusers_xl_canny_full', 'canny', 0.5)
    assert (unit.canny_low_threshold, unit.canny_high_threshold) == (50.0, 150.0)
    assert (unit.guidance_start, unit.guidance_end, unit.resize_mode) == (0.1, 0.9,
                                                                          'Just Resize')
