"""Camera image messages -> HxWx3 uint8 RGB arrays.

``cv_bridge`` is used where it is installed; elsewhere the project's own decoder handles the
encodings a camera driver or the bag converter produces (rgb8, bgr8, rgba8, bgra8, mono8,
and CompressedImage JPEG/PNG), with the same result as cv_bridge. Works on any object with
the message's fields, so the decoder itself needs no rclpy.
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np

__all__ = [
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "decode_raw",
    "decode_compressed",
    "image_msg_to_rgb",
    "cv_bridge_available",
]

# encoding -> (channels, channel order to take for R, G, B)
_LAYOUTS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)


class ImageDecodeError(ValueError):
    """The image message cannot be turned into an RGB array; the text says why."""


def cv_bridge_available() -> bool:
    return importlib.util.find_spec("cv_bridge") is not None


def decode_raw(
    encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray, is_bigendian: int = 0
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an RGB array.

    ``is_bigendian`` does not matter for the supported 8-bit encodings; it is accepted so the
    caller can pass the message fields unchanged.

    Args:
        encoding: one of :data:`SUPPORTED_ENCODINGS`.
        height, width: image size in pixels.
        step: bytes per row, at least ``width * channels`` (rows may be padded).
        data: ``height * step`` bytes.

    Returns:
        (H, W, 3) uint8 RGB, a fresh contiguous array.

    Raises:
        ImageDecodeError: unsupported encoding, zero size, or a step/data length that does
            not match the size.
    """
    del is_bigendian
    if encoding not in _LAYOUTS:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(or a CompressedImage)"
        )
    channels, order = _LAYOUTS[encoding]
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height})")
    if step < width * channels:
        raise ImageDecodeError(
            f"image step {step} is smaller than width {width} x {channels} bytes of {encoding}"
        )
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if buf.size < height * step:
        raise ImageDecodeError(
            f"image data has {buf.size} bytes, expected height {height} x step {step} = {height * step}"
        )
    # (H, step) rows -> drop row padding -> (H, W, C)
    pixels = buf[: height * step].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def decode_compressed(fmt: str, data: bytes | np.ndarray) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) into (H, W, 3) uint8 RGB.

    Raises:
        ImageDecodeError: empty or undecodable data.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image ({fmt or 'no format'}) has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"compressed image ({fmt or 'no format'}) could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
    if not compressed and msg.encoding not in _LAYOUTS:
        # Checked first so both paths reject the same encodings with the same message.
        decode_raw(msg.encoding, msg.height, msg.width, msg.step, b"")
    if use_cv_bridge:
        return _cv_bridge_to_rgb(msg, compressed)
    if compressed:
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)


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
