# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
What the node sends out besides action results: ~/image, ~/preview and PNG copies.

One place for the node's outputs, so other outputs (compressed images, diagnostics) join here
without touching the goal logic. QoS: the result image is RELIABLE + TRANSIENT_LOCAL (a late
subscriber still gets the last image); previews are BEST_EFFORT + VOLATILE (only the newest
matters).
"""

import datetime
import os

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sdxl_ros.engine.png_io import save_png
from sdxl_ros.ros.image_conversion import numpy_to_image_msg
from sensor_msgs.msg import Image

IMAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
PREVIEW_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)


class Publishing:
    """The node's image and preview publishers and its output_dir writer."""

    def __init__(self, node):
        """Create ~/image and ~/preview on `node`."""
        self._node = node
        self._image_pub = node.create_publisher(Image, '~/image', IMAGE_QOS)
        self._preview_pub = node.create_publisher(Image, '~/preview', PREVIEW_QOS)

    def preview(self, pixels, frame_id):
        """Publish a preview image (HxWx3 uint8 pixels) on ~/preview."""
        self._preview_pub.publish(numpy_to_image_msg(pixels, self._stamp(), frame_id))

    def results(self, result, frame_id, output_dir):
        """Publish a GenerationResult's images on ~/image, save them if asked; return the msgs."""
        stamp = self._stamp()
        images = [numpy_to_image_msg(image, stamp, frame_id) for image in result.images]
        for image in images:
            self._image_pub.publish(image)
        if output_dir:
            self._save(result, output_dir)
        return images

    def destroy(self):
        """Destroy the publishers (the node leaves the graph cleanly)."""
        for publisher in (self._image_pub, self._preview_pub):
            self._node.destroy_publisher(publisher)

    def _stamp(self):
        """Return the node clock's time as a header stamp."""
        return self._node.get_clock().now().to_msg()

    def _save(self, result, output_dir):
        """Save each image as <time>-<index>-<seed>.png with its infotext; log failures."""
        now = datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')[:-3]
        log = self._node.get_logger()
        try:
            os.makedirs(output_dir, exist_ok=True)
            for index, (image, seed, text) in enumerate(
                    zip(result.images, result.seeds, result.infotexts)):
                path = os.path.join(output_dir, f'{now}-{index}-{seed}.png')
                save_png(path, image, text)
                log.info(f'saved {path}')
        except OSError as error:
            log.error(f'cannot save to output_dir {output_dir!r}: {error}')
