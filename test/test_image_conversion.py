# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""numpy <-> sensor_msgs/Image in the layout cv_bridge uses (no running node)."""

import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs is not importable: '
                    'source scripts/env.sh')

from sdxl_ros.ros.image_conversion import (  # noqa: E402
    image_msg_to_numpy, mask_msg_to_numpy, numpy_to_image_msg, numpy_to_mono_msg)


def _image(height=6, width=5):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_layout_is_what_cv_bridge_expects():
    array = _image()
    msg = numpy_to_image_msg(array, frame_id='cam')
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step) == (
        6, 5, 'rgb8', 0, 15)
    assert msg.header.frame_id == 'cam'
    assert bytes(msg.data) == array.tobytes()
    # Pixel (row 2, column 3), channel G is at row * step + column * 3 + 1.
    assert msg.data[2 * 15 + 3 * 3 + 1] == array[2, 3, 1]


def test_round_trip_and_stamp():
    from builtin_interfaces.msg import Time
    array = _image(64, 48)
    msg = numpy_to_image_msg(array, stamp=Time(sec=5, nanosec=7))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 7)
    assert np.array_equal(image_msg_to_numpy(msg), array)


def test_non_contiguous_input_is_copied_correctly():
    array = _image(8, 8)[:, ::2]
    assert np.array_equal(image_msg_to_numpy(numpy_to_image_msg(array)), array)


def test_padded_rows_and_bgr_are_read():
    from sensor_msgs.msg import Image
    array = _image(3, 4)
    padded = np.zeros((3, 16), np.uint8)
    padded[:, :12] = array[:, :, ::-1].reshape(3, 12)
    msg = Image(height=3, width=4, encoding='bgr8', step=16, data=padded.tobytes())
    assert np.array_equal(image_msg_to_numpy(msg), array)


@pytest.mark.parametrize('bad', [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32)])
def test_wrong_arrays_are_refused(bad):
    with pytest.raises(ValueError, match='uint8 HxWx3'):
        numpy_to_image_msg(bad)


def test_unknown_encoding_and_short_data_are_refused():
    from sensor_msgs.msg import Image
    with pytest.raises(ValueError, match="unsupported encoding '16UC1'"):
        image_msg_to_numpy(Image(height=1, width=1, encoding='16UC1', step=2, data=b'\0\0'))
    with pytest.raises(ValueError, match='too short: 6 bytes, but height 2 x step 6 = 12'):
        image_msg_to_numpy(Image(height=2, width=2, encoding='rgb8', step=6, data=b'\0' * 6))


@pytest.mark.parametrize('encoding, channels, order', [
    ('bgr8', 3, [2, 1, 0]), ('rgba8', 4, [0, 1, 2]), ('bgra8', 4, [2, 1, 0])])
def test_camera_encodings_convert_exactly(encoding, channels, order):
    """Each channel lands where its encoding says; alpha is dropped; padded rows are skipped."""
    from sensor_msgs.msg import Image
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
    padded = np.zeros((5, 7 * channels + 3), np.uint8)
    padded[:, :7 * channels] = raw.reshape(5, -1)
    msg = Image(height=5, width=7, encoding=encoding, step=7 * channels + 3,
                data=padded.tobytes())
    assert np.array_equal(image_msg_to_numpy(msg), raw[:, :, order])


def test_mono8_becomes_gray_rgb_and_masks_read_back():
    from sensor_msgs.msg import Image
    gray = _image(4, 6)[:, :, 0]
    msg = Image(height=4, width=6, encoding='mono8', step=6, data=gray.tobytes())
    rgb = image_msg_to_numpy(msg)
    assert rgb.shape == (4, 6, 3)
    assert all(np.array_equal(rgb[:, :, c], gray) for c in range(3))
    mask = numpy_to_mono_msg(gray)
    assert (mask.encoding, mask.step, mask.width, mask.height) == ('mono8', 6, 6, 4)
    assert np.array_equal(mask_msg_to_numpy(mask), gray)


@pytest.mark.parametrize('fields, words', [
    ({'height': 0, 'width': 0, 'encoding': 'rgb8', 'step': 0}, 'image is 0x0'),
    ({'height': 2, 'width': 0, 'encoding': 'rgb8', 'step': 0, 'data': b'\0'}, 'image is 0x2'),
    ({'height': 2, 'width': 4, 'encoding': 'bgra8', 'step': 15, 'data': b'\0' * 30},
     'step 15 is less than width 4 x 4'),
    ({'height': 3, 'width': 2, 'encoding': 'mono8', 'step': 2, 'data': b'\0' * 5},
     'too short: 5 bytes'),
])
def test_malformed_messages_are_refused_with_the_reason(fields, words):
    from sensor_msgs.msg import Image
    with pytest.raises(ValueError, match=words):
        image_msg_to_numpy(Image(**fields))


def test_mask_must_be_mono8():
    with pytest.raises(ValueError, match="'rgb8' is not mono8"):
        mask_msg_to_numpy(numpy_to_image_msg(_image(2, 2)))
    with pytest.raises(ValueError, match='uint8 HxW'):
        numpy_to_mono_msg(_image(2, 2))


def test_cv_bridge_decodes_it_where_available():
    cv_bridge = pytest.importorskip(
        'cv_bridge', reason='cv_bridge is not importable here (PyPI has only a broken '
        'ROS 1 copy); runs on a system ROS install')
    array = _image(16, 24)
    decoded = cv_bridge.CvBridge().imgmsg_to_cv2(numpy_to_image_msg(array),
                                                 desired_encoding='rgb8')
    assert np.array_equal(decoded, array)
    back = cv_bridge.CvBridge().cv2_to_imgmsg(array, encoding='rgb8')
    assert np.array_equal(image_msg_to_numpy(back), array)
