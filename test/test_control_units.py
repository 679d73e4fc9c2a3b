# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""ControlUnit messages <-> requests and the client's --control specs, with real messages."""

import numpy as np
from PIL import Image as PilImage
import pytest

from sdxl_ros.client.control_specs import control_unit, parse_spec
from sdxl_ros.engine.request import RequestError


def raw_msg(**fields):
    from sensor_msgs.msg import Image
    return Image(**fields)


def depth_16(values, bigendian=False, pad=0):
    array = np.asarray(values, '>u2' if bigendian else '<u2')
    height, width = array.shape
    rows = [row.tobytes() + b'\xee' * pad for row in array]
    return raw_msg(height=height, width=width, encoding='16UC1', is_bigendian=int(bigendian),
                   step=2 * width + pad, data=b''.join(rows))


@pytest.mark.ros  # builds ROS messages: skipped where ROS is missing
def test_16uc1_is_read_in_either_byte_order_and_with_padded_rows():
    from sdxl_ros.ros.control_units import control_image_to_numpy
    values = [[500, 0, 1000], [2000, 65535, 1]]
    for msg in (depth_16(values), depth_16(values, bigendian=True), depth_16(values, pad=3)):
        array = control_image_to_numpy(msg, 'depth_metric')
        assert array.dtype == np.uint16 and array.tolist() == values


@pytest.mark.ros  # builds ROS messages: skipped where ROS is missing
def test_32fc1_keeps_nan_and_inf():
    from sdxl_ros.ros.control_units import control_image_to_numpy
    values = np.array([[1.5, np.nan], [np.inf, 0.25]], '<f4')
    msg = raw_msg(height=2, width=2, encoding='32FC1', step=8, data=values.tobytes())
    array = control_image_to_numpy(msg, 'depth_metric')
    assert array.dtype == np.float32
    assert np.array_equal(array, values, equal_nan=True)


@pytest.mark.ros  # builds ROS messages: skipped where ROS is missing
@pytest.mark.parametrize('msg, module, words', [
    (lambda: raw_msg(height=2, width=2, encoding='rgb8', step=6, data=b'\0' * 12),
     'depth_metric', ['needs a depth frame', "'rgb8'"]),
    (lambda: raw_msg(height=2, width=2, encoding='32FC1', step=8, data=b'\0' * 16),
     'canny', ['needs an 8-bit picture', "'32FC1'"]),
    (lambda: raw_msg(height=2, width=2, encoding='16UC1', step=2, data=b'\0' * 8),
     'depth_metric', ['step 2 is less than width 2 x 2']),
    (lambda: raw_msg(height=2, width=2, encoding='16UC1', step=4, data=b'\0' * 6),
     'depth_metric', ['too short', '6 bytes']),
    (lambda: raw_msg(height=0, width=0, encoding='32FC1'), 'depth_metric', ['0x0']),
])
def test_bad_control_images_are_refused_with_the_reason(msg, module, words):
    from sdxl_ros.ros.control_units import control_image_to_numpy
    with pytest.raises(ValueError) as error:
        control_image_to_numpy(msg(), module)
    assert all(word in str(error.value) for word in words), error.value


@pytest.mark.ros  # builds ROS messages: skipped where ROS is missing
def test_goal_units_with_topics_get_stand_ins_until_their_frames_come():
    from sdxl_ros.msg import ControlUnit
    from sdxl_ros.ros.control_units import control_topics, goal_control_units

    class Goal:
        control = [ControlUnit(model='tiny', module='depth_metric', image_topic='/depth'),
                   ControlUnit(model='tiny', image=raw_msg(height=1, width=1, encoding='mono8',
                                                           step=1, data=b'\x80'))]
    assert control_topics(Goal) == [(0, '/depth')]
    stand_in, picture = goal_control_units(Goal)
    assert stand_in.image.dtype == np.uint16 and stand_in.weight == 1.0
    assert picture.image.tolist() == [[[128, 128, 128]]] and picture.module == 'none'
    frame = depth_16([[700]])
    assert goal_control_units(Goal, {0: frame})[0].image.tolist() == [[700]]


def test_spec_syntax_tells_files_from_topics():
    assert parse_spec('depth_metric:/camera/depth/image_raw:model=xl:weight=0.8') == (
        'depth_metric', ('topic', '/camera/depth/image_raw'), {'model': 'xl', 'weight': 0.8})
    assert parse_spec('canny:edges.png:low=50:high=150:mode=Balanced') == (
        'canny', ('file', 'edges.png'),
        {'canny_low_threshold': 50.0, 'canny_high_threshold': 150.0,
         'control_mode': 'Balanced'})
    assert parse_spec('none:file=/tmp/map.png')[1] == ('file', '/tmp/map.png')
    assert parse_spec('none:topic=relative/topic')[1] == ('topic', 'relative/topic')


@pytest.mark.ros  # builds ROS messages: skipped where ROS is missing
@pytest.mark.parametrize('spec, words', [
    ('depth:camera', ['neither a picture file', 'topic']),
    ('depth:/t:weight=heavy', ['not a number']),
    ('depth:/t:colour=red', ['unknown key']),
    ('depth:/t', ['model=NAME']),
    ('depth:model=x', ['no picture file or topic']),
])
def test_bad_specs_are_refused_with_the_reason(spec, words):
    with pytest.raises(RequestError) as error:
        control_unit(spec)
    assert all(word in str(error.value) for word in words), error.value


@pytest.mark.ros  # builds ROS messages: skipped where ROS is missing
def test_a_16_bit_depth_png_becomes_a_16uc1_unit(tmp_path):
    path = tmp_path / 'depth.png'
    depth = np.array([[800, 0], [3000, 65535]], np.uint16)
    PilImage.fromarray(depth).save(path)
    unit = control_unit(f'depth_metric:{path}:model=tiny:start=0.1:end=0.5')
    assert (unit.image.encoding, unit.image.width, unit.image.height) == ('16UC1', 2, 2)
    assert np.frombuffer(bytes(unit.image.data), '<u2').tolist() == [800, 0, 3000, 65535]
    assert (unit.guidance_start, unit.guidance_end, unit.model) == (
        pytest.approx(0.1), 0.5, 'tiny')


@pytest.mark.parametrize('name', ['../secret', '/etc/passwd', 'a/../../b'])
def test_a_controlnet_model_name_never_leaves_its_folders(tmp_path, name):
    """control[].model is a plain name: '..' and absolute paths are refused, nothing is read."""
    from sdxl_ros.engine.controlnet_files import ControlNetError, find_controlnet
    with pytest.raises(ControlNetError, match='plain name'):
        find_controlnet(name, str(tmp_path), '')
