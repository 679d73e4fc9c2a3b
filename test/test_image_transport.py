# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Compressed image topics (image_transport's format) and results without pixels.

~/image/compressed, ~/preview/compressed and the goal's omit_result_images: pure coding
helpers first, then a real node and real subscribers.
"""

import numpy as np
import pytest

from ros_harness import assert_served, wait_for

#: JPEG is lossy: a decoded grainy gradient may differ by this much (mean absolute difference,
#: 0-255 levels) and this little (PSNR, dB) from the original at quality 95.
JPEG_MEAN_ABS_LEVELS = 6.0
JPEG_MIN_PSNR_DB = 28.0
#: The tiny preset's 64x64 images are close to colour noise, JPEG's worst case (its 4:2:0
#: chroma subsampling averages colour over 2x2 pixels): measured 10.2 levels.
NOISE_MEAN_ABS_LEVELS = 16.0
NOISE_MIN_PSNR_DB = 20.0


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _noise_image(seed=0, size=(48, 64)):
    """Return a colour gradient with grain (the same in every channel, as a photo's luma)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size[0], 0:size[1]]
    smooth = np.stack([rows * 255 / size[0], cols * 255 / size[1],
                       (rows + cols) * 127 / (size[0] + size[1])], axis=-1)
    grain = rng.normal(0, 12, size)[..., None]
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------- pure helpers
def test_png_round_trip_is_exact_and_format_is_image_transports():
    pytest.importorskip('sensor_msgs')
    from sdxl_ros.ros.compressed_image import compressed_msg_to_numpy, numpy_to_compressed_msg
    from std_msgs.msg import Header
    image = _noise_image()
    header = Header(frame_id='sdxl')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_compressed_msg(image, header, 'png')
    assert msg.format == 'rgb8; png compressed bgr8'
    assert bytes(msg.data[:8]) == b'\x89PNG\r\n\x1a\n'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
        (12, 345, 'sdxl')
    np.testing.assert_array_equal(compressed_msg_to_numpy(msg), image)


def test_jpeg_round_trip_within_tolerance():
    pytest.importorskip('sensor_msgs')
    from sdxl_ros.ros.compressed_image import compressed_msg_to_numpy, numpy_to_compressed_msg
    from std_msgs.msg import Header
    image = _noise_image(1)
    msg = numpy_to_compressed_msg(image, Header(), 'jpeg', jpeg_quality=95)
    assert msg.format == 'rgb8; jpeg compressed bgr8'
    assert bytes(msg.data[:2]) == b'\xff\xd8'
    decoded = compressed_msg_to_numpy(msg)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image).mean() <= JPEG_MEAN_ABS_LEVELS
    assert _psnr(decoded, image) >= JPEG_MIN_PSNR_DB
    # Channels are not swapped: a pure red image stays red.
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    back = compressed_msg_to_numpy(numpy_to_compressed_msg(red, Header(), 'jpeg'))
    assert back[..., 0].min() > 240 and back[..., 1:].max() < 15
    # Lower quality, smaller data.
    low = numpy_to_compressed_msg(image, Header(), 'jpeg', jpeg_quality=10)
    assert len(low.data) < len(msg.data)


def test_coding_refuses_what_it_cannot_code():
    pytest.importorskip('sensor_msgs')
    from sdxl_ros.ros.compressed_image import encode, format_string
    with pytest.raises(ValueError, match='HxWx3'):
        encode(np.zeros((4, 4), np.uint8), 'png')
    with pytest.raises(ValueError, match='png, jpeg'):
        encode(np.zeros((4, 4, 3), np.uint8), 'webp')
    with pytest.raises(ValueError, match='png, jpeg'):
        format_string('none')


def test_stamps_strictly_increase():
    pytest.importorskip('builtin_interfaces')
    from builtin_interfaces.msg import Time
    from sdxl_ros.ros.image_publishing import later_stamp
    first = Time(sec=5, nanosec=999_999_999)
    assert later_stamp(first, None) is first
    assert later_stamp(Time(sec=6, nanosec=0), first) == Time(sec=6, nanosec=0)
    assert later_stamp(Time(sec=5, nanosec=10), first) == Time(sec=6, nanosec=0)
    assert later_stamp(first, first) == Time(sec=6, nanosec=0)


# ------------------------------------------------------------------------- real node
def _qos(reliable=True):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    if reliable:
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def _stamp(header):
    return (header.stamp.sec, header.stamp.nanosec)


@pytest.mark.ros
def test_compressed_topics_carry_the_same_pixels(ros_client, shared_node):
    """PNG on ~/image/compressed decodes to the result's pixels, same header; then JPEG."""
    from sdxl_ros.ros.compressed_image import compressed_msg_to_numpy, encode
    from sdxl_ros.ros.image_conversion import image_msg_to_numpy
    from sensor_msgs.msg import CompressedImage, Image
    compressed = ros_client.subscribe(CompressedImage, shared_node.name_of('image/compressed'),
                                      _qos())
    raw = ros_client.subscribe(Image, shared_node.name_of('image'), _qos())
    previews = ros_client.subscribe(CompressedImage,
                                    shared_node.name_of('preview/compressed'), _qos(False))
    for codec in ('png', 'jpeg'):
        results = ros_client.set_parameters(shared_node.fqn, compressed_format=codec)
        assert all(r.successful for r in results), [r.reason for r in results]
        _, response = ros_client.generate(shared_node.name_of('generate'), prompt='a kite',
                                          seed=11, steps=4, num_images=2)
        assert_served(response)
        stamps = [_stamp(image.header) for image in response.result.images]
        assert wait_for(lambda: {_stamp(m.header) for m in compressed} >= set(stamps), 30), \
            f'{codec}: no compressed image for {stamps}'
        by_stamp = {_stamp(m.header): m for m in compressed}
        for image in response.result.images:
            msg = by_stamp[_stamp(image.header)]
            assert msg.header.frame_id == image.header.frame_id == 'sdxl'
            assert msg.format == f'rgb8; {codec} compressed bgr8'
            expected, decoded = image_msg_to_numpy(image), compressed_msg_to_numpy(msg)
            if codec == 'png':
                np.testing.assert_array_equal(decoded, expected)
            else:
                # The same pixels at quality 95: the very bytes this process codes from them.
                assert bytes(msg.data) == encode(expected, 'jpeg', 95)
                assert np.abs(decoded.astype(int) - expected).mean() <= NOISE_MEAN_ABS_LEVELS
                assert _psnr(decoded, expected) >= NOISE_MIN_PSNR_DB
        # The raw topic carried the same stamps.
        assert wait_for(lambda: {_stamp(m.header) for m in raw} >= set(stamps), 10)
    assert wait_for(lambda: previews, 10), 'no compressed preview'
    assert previews[-1].format.startswith('rgb8; ')
    results = ros_client.set_parameters(shared_node.fqn, compressed_format='none')
    assert all(r.successful for r in results)
    seen = len(compressed)
    _, response = ros_client.generate(shared_node.name_of('generate'), prompt='none', seed=2)
    assert_served(response)
    assert wait_for(lambda: any(_stamp(m.header) == _stamp(response.result.images[0].header)
                                for m in raw), 10)
    assert not wait_for(lambda: len(compressed) > seen, 1.5), 'none still published'
    refused = ros_client.set_parameters(shared_node.fqn, compressed_format='webp')[0]
    assert not refused.successful and 'png, jpeg, none' in refused.reason
    ros_client.set_parameters(shared_node.fqn, compressed_format='png')


@pytest.mark.ros
def test_omit_result_images_keeps_everything_but_pixels(ros_client, shared_node):
    """omit_result_images: no pixels in the result, seeds/parameters/image_stamps are there."""
    from sensor_msgs.msg import Image
    raw = ros_client.subscribe(Image, shared_node.name_of('image'), _qos())
    action = shared_node.name_of('generate')
    _, full = ros_client.generate(action, prompt='a boat', seed=21, num_images=2)
    assert_served(full)
    full_stamps = [(t.sec, t.nanosec) for t in full.result.image_stamps]
    assert full_stamps == [_stamp(image.header) for image in full.result.images]
    assert len(set(full_stamps)) == 2, 'two images of one goal share a stamp'
    _, slim = ros_client.generate(action, prompt='a boat', seed=21, num_images=2,
                                  omit_result_images=True)
    assert slim.status == full.status and slim.result.message == ''
    assert len(slim.result.images) == 0
    assert list(slim.result.seeds) == [21, 22]
    assert slim.result.parameters == full.result.parameters
    assert slim.result.elapsed_sec > 0
    stamps = [(t.sec, t.nanosec) for t in slim.result.image_stamps]
    assert len(stamps) == 2 and stamps > full_stamps
    # The published images carry exactly these stamps, and the pixels of the same seeds.
    assert wait_for(lambda: {_stamp(m.header) for m in raw} >= set(stamps), 10)
    by_stamp = {_stamp(m.header): m for m in raw}
    for stamp, image in zip(stamps, full.result.images):
        assert bytes(by_stamp[stamp].data) == bytes(image.data)
