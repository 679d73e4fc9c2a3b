# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
One image topic published raw and compressed, with the same header and QoS.

`<topic>` is sensor_msgs/Image, `<topic>/compressed` sensor_msgs/CompressedImage. The raw
image goes out at once from the caller's thread; PNG/JPEG coding (PNG ~0.25 s, JPEG ~10 ms per
1024x1024 image on a 2-core CPU, bench/README.md) happens on a worker thread of its own, so a
goal's result never waits for it. Result images are never dropped; previews keep only the
newest waiting one, as a BEST_EFFORT preview stream is meant to.
"""

import queue
import threading

from builtin_interfaces.msg import Time
from sdxl_ros.ros.compressed_image import COMPRESSED_FORMATS, numpy_to_compressed_msg
from sdxl_ros.ros.image_conversion import numpy_to_image_msg
from sensor_msgs.msg import CompressedImage, Image

_STOP = object()


def later_stamp(stamp, previous):
    """Return `stamp`, or 1 ns after `previous` when the clock did not move past it."""
    if previous is None or (stamp.sec, stamp.nanosec) > (previous.sec, previous.nanosec):
        return stamp
    nanoseconds = previous.sec * 1_000_000_000 + previous.nanosec + 1
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class ImagePublishing:
    """Raw + compressed publishers of one topic and the encode worker behind them."""

    def __init__(self, node, topic, qos, compressed_format='png', jpeg_quality=95,
                 keep_latest_only=False):
        """Create `topic` and `topic/compressed` on `node` and start the encode worker."""
        self._node = node
        self._raw = node.create_publisher(Image, topic, qos)
        self._compressed = node.create_publisher(CompressedImage, f'{topic}/compressed', qos)
        self._keep_latest_only = keep_latest_only
        self._jobs = queue.Queue()
        self._last_stamp = None
        self._stamp_lock = threading.Lock()
        self.configure(compressed_format, jpeg_quality)
        self._worker = threading.Thread(target=self._work, name=f'encode {topic}', daemon=True)
        self._worker.start()

    def configure(self, compressed_format, jpeg_quality):
        """Set the codec ('png', 'jpeg' or 'none') and JPEG quality of the next images."""
        if compressed_format not in COMPRESSED_FORMATS:
            raise ValueError(f'compressed_format {compressed_format!r} is not one of: '
                             + ', '.join(COMPRESSED_FORMATS))
        self._settings = (compressed_format, int(jpeg_quality))

    def next_stamp(self):
        """Return the node clock's now, strictly later than the last image's stamp."""
        with self._stamp_lock:
            self._last_stamp = later_stamp(self._node.get_clock().now().to_msg(),
                                           self._last_stamp)
            return self._last_stamp

    def publish(self, array, frame_id, stamp=None):
        """Publish `array` raw now, queue its compressed copy; return the raw message."""
        msg = numpy_to_image_msg(array, stamp or self.next_stamp(), frame_id)
        self._raw.publish(msg)
        codec, quality = self._settings
        if codec != 'none':
            if self._keep_latest_only:
                self._drop_waiting()
            self._jobs.put((array, msg.header, codec, quality))
        return msg

    def _drop_waiting(self):
        """Forget the images still waiting to be coded (previews: only the newest matters)."""
        try:
            while True:
                job = self._jobs.get_nowait()
                if job is _STOP:
                    self._jobs.put(_STOP)
                    return
        except queue.Empty:
            pass

    def _work(self):
        """Code and publish queued images until close()."""
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            array, header, codec, quality = job
            try:
                self._compressed.publish(numpy_to_compressed_msg(array, header, codec, quality))
            except Exception as error:  # keep serving: a bad image must not end the worker
                self._node.get_logger().error(f'cannot publish a compressed image: {error}')

    def close(self, timeout=5.0):
        """Publish what is queued (up to `timeout` s), then stop the worker."""
        self._jobs.put(_STOP)
        self._worker.join(timeout)

    def destroy(self, timeout=5.0):
        """Close, then destroy both publishers (the node leaves the graph cleanly)."""
        self.close(timeout)
        for publisher in (self._raw, self._compressed):
            self._node.destroy_publisher(publisher)
