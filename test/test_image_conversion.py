# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""numpy <-> sensor_msgs/Image in the layout cv_bridge uses (no running node)."""

import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs is not importable: '
                    'source scripts/env.sh')

from sdxl_ros.ros.image_conversion import image_msg_to_numpy, numpy_to_image_msg  # noqa: E402


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
    with pytest.raises(ValueError, match='encoding'):
        image_msg_to_numpy(Image(height=1, width=1, encoding='mono8', step=1, data=b'\0'))
    with pytest.raises(ValueError, match='too short'):
        image_msg_to_numpy(Image(height=2, width=2, encoding='rgb8', step=6, data=b'\0' * 6))


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
