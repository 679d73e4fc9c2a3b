# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
What the node sends out besides action results: images, previews and PNG copies.

~/image and ~/preview, each also as `<topic>/compressed` (image_publishing.py), and the
output_dir files: one place for the node's outputs, so others join here without touching the
goal logic. QoS: the result image is RELIABLE + TRANSIENT_LOCAL (a late subscriber still gets
the last image); previews are BEST_EFFORT + VOLATILE (only the newest matters).
"""

import datetime
import os

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sdxl_ros.engine.png_io import save_png
from sdxl_ros.ros.image_publishing import ImagePublishing

IMAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
PREVIEW_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)


class Publishing:
    """The node's image and preview publishers and its output_dir writer."""

    def __init__(self, node, compressed_format='png', jpeg_quality=95):
        """Create ~/image and ~/preview (raw and compressed) on `node`."""
        self._node = node
        self._images = ImagePublishing(node, '~/image', IMAGE_QOS, compressed_format,
                                       jpeg_quality)
        self._previews = ImagePublishing(node, '~/preview', PREVIEW_QOS, compressed_format,
                                         jpeg_quality, keep_latest_only=True)
        self.last_image_stamp = None

    def configure(self, compressed_format, jpeg_quality):
        """Use this codec and JPEG quality for the next compressed images."""
        for publishing in (self._images, self._previews):
            publishing.configure(compressed_format, jpeg_quality)

    def preview(self, pixels, frame_id):
        """Publish an HxWx3 uint8 preview on ~/preview and its compressed topic."""
        self._previews.publish(pixels, frame_id)

    def results(self, result, frame_id, output_dir):
        """Publish a GenerationResult's images on ~/image, save them if asked; return the msgs."""
        images = [self._images.publish(image, frame_id) for image in result.images]
        if images:
            self.last_image_stamp = images[-1].header.stamp
        if output_dir:
            self._save(result, output_dir)
        return images

    def destroy(self):
        """Send the compressed images still being coded, destroy the publishers."""
        for publishing in (self._images, self._previews):
            publishing.destroy()

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
