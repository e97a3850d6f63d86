"""Camera image messages -> HxWx3 uint8 RGB arrays.

``cv_bridge`` is used where it is installed and loads; elsewhere the project's one decoder,
:mod:`monoocc_ros.msgs.image` (also used by the bag index, dataset and evaluation), handles the
encodings a camera driver or the bag converter produces (8- and 16-bit RGB/BGR/RGBA/BGRA/mono,
Bayer, and CompressedImage JPEG/PNG), with the same result as cv_bridge. Works on any object with
the message's fields, so the decoder itself needs no rclpy.
"""

from __future__ import annotations

import functools
import importlib.util

import cv2
import numpy as np

from monoocc_ros.msgs.image import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    check_pixels,
    compressed_size,
    decode_compressed,
    decode_message,
    decode_raw,
)

__all__ = [
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "decode_raw",
    "decode_compressed",
    "image_msg_to_rgb",
    "cv_bridge_available",
]


@functools.lru_cache(maxsize=1)
def cv_bridge_available() -> bool:
    """cv_bridge is installed *and* loads, its compiled part included (checked once).

    Found is not enough: apt's cv_bridge on Ubuntu 24.04 is built for numpy 1.x, and in a venv
    whose numpy is 2.x its compiled module refuses to load (vision_opencv#535), which would
    fail every frame; the built-in converter gives the same pixels then.
    """
    if importlib.util.find_spec("cv_bridge") is None:
        return False
    try:
        import cv_bridge  # noqa: F401
        from cv_bridge.boost import cv_bridge_boost  # noqa: F401
    except Exception:  # ImportError, or numpy's AttributeError/RuntimeError for an ABI mismatch
        return False
    return True


def image_msg_to_rgb(msg, *, use_cv_bridge: bool | None = None) -> np.ndarray:
    """A ``sensor_msgs/Image`` or ``CompressedImage`` -> (H, W, 3) uint8 RGB.

    Args:
        msg: the message (compressed when it has a ``format`` field).
        use_cv_bridge: force the cv_bridge path (True) or the own decoder (False);
            None picks cv_bridge when it is installed.

    Raises:
        ImageDecodeError: the message cannot be decoded; the text says why.
    """
    if use_cv_bridge is None:
        use_cv_bridge = cv_bridge_available()
    compressed = hasattr(msg, "format")
    if not use_cv_bridge:
        return decode_message(msg)
    # Checked first so both paths refuse the same encodings and sizes with the same message.
    if compressed:
        _, width, height = compressed_size(msg.data)
        check_pixels(width, height, f"compressed image ({msg.format or 'no format'})")
    elif msg.encoding not in SUPPORTED_ENCODINGS:
        decode_raw(msg.encoding, msg.height, msg.width, msg.step, b"")
    else:
        check_pixels(int(msg.width), int(msg.height), f"{msg.encoding} image")
    return _cv_bridge_to_rgb(msg, compressed)


def _cv_bridge_to_rgb(msg, compressed: bool) -> np.ndarray:
    from cv_bridge import CvBridge, CvBridgeError

    bridge = CvBridge()
    try:
        if compressed:
            rgb = bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
        else:
            rgb = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except CvBridgeError as err:
        raise ImageDecodeError(f"cv_bridge could not convert the image: {err}") from err
    if rgb.ndim == 2:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(rgb)
