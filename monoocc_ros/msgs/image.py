"""Camera image fields -> (H, W, 3) uint8 RGB: the one decoder of the node, the bag index and
dataset, and evaluation. ROS-free: it reads the fields of a ``sensor_msgs/Image`` or
``CompressedImage`` from any object that has them (rclpy or rosbags messages).

Encodings (ROS ``sensor_msgs/image_encodings`` names):

* 8 bit: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``;
* 16 bit: ``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16`` (either byte order), scaled to
  8 bit as cv_bridge does (value / 256, rounded);
* Bayer: ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` and their ``16``
  variants, demosaiced bilinearly by OpenCV (cv_bridge's mapping);
* compressed: PNG and JPEG.

Anything else (``16UC1``, ``32FC1``, YUV 4:2:2 …) is refused by name. Images larger than
:data:`MAX_PIXELS` are refused before anything is decoded: raw ones from their fields,
compressed ones from the width and height in the PNG/JPEG header.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

__all__ = ["ImageDecodeError", "MAX_PIXELS", "SUPPORTED_ENCODINGS", "check_pixels", "compressed_size", "decode_compressed",
           "decode_message", "decode_raw"]

# 16.8 MP (4096 x 4096): above every automotive camera the model is meant for; a 187 kB PNG of
# 8000 x 8000 would otherwise decode to 190 MB before any check.
MAX_PIXELS = 4096 * 4096

# encoding -> (channels, bytes per channel, channel order for R, G, B)
_LAYOUTS: dict[str, tuple[int, int, tuple[int, int, int]]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, (0, 0, 0)),
    "rgb16": (3, 2, (0, 1, 2)),
    "bgr16": (3, 2, (2, 1, 0)),
    "rgba16": (4, 2, (0, 1, 2)),
    "bgra16": (4, 2, (2, 1, 0)),
    "mono16": (1, 2, (0, 0, 0)),
}
# ROS Bayer pattern -> OpenCV code (OpenCV names the pattern by its second row: RGGB = "BG")
_BAYER = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
_BAYER_ENCODINGS = {f"bayer_{p}{bits}": (p, bits // 8) for p in _BAYER for bits in (8, 16)}
SUPPORTED_ENCODINGS = (*_LAYOUTS, *_BAYER_ENCODINGS)


class ImageDecodeError(ValueError):
    """The image cannot be turned into an RGB array; the text says why."""


def check_pixels(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{what} has zero size ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"{what} is {width}x{height}, more than the {MAX_PIXELS / 1e6:.1f} MP this node decodes")


def _buffer(data) -> np.ndarray:
    return data.view(np.uint8).reshape(-1) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as cv_bridge's ``convertTo(CV_8U, 1/256)``: rounded, saturated."""
    return np.minimum((values.astype(np.uint32) + 128) >> 8, 255).astype(np.uint8)


def decode_raw(
    encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray, is_bigendian: int = 0
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into (H, W, 3) uint8 RGB (a fresh array).

    Args:
        encoding: one of :data:`SUPPORTED_ENCODINGS`.
        height, width: image size in pixels.
        step: bytes per row, at least ``width * bytes per pixel`` (rows may be padded).
        data: ``height * step`` bytes.
        is_bigendian: byte order of 16-bit encodings.

    Raises:
        ImageDecodeError: unsupported encoding (named), zero or too large a size, or a
            step/data length that does not match the size.
    """
    height, width, step = int(height), int(width), int(step)
    if encoding in _LAYOUTS:
        channels, depth, order = _LAYOUTS[encoding]
    elif encoding in _BAYER_ENCODINGS:
        channels, depth, order = 1, _BAYER_ENCODINGS[encoding][1], (0, 0, 0)
    else:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(or a CompressedImage)"
        )
    check_pixels(width, height, f"{encoding} image")
    row = width * channels * depth
    if step < row:
        raise ImageDecodeError(f"image step {step} is smaller than width {width} x {channels * depth} bytes of {encoding}")
    buf = _buffer(data)
    if buf.size < height * step:
        raise ImageDecodeError(f"image data has {buf.size} bytes, expected height {height} x step {step} = {height * step}")
    # (H, step) rows -> drop row padding -> (H, W * C * depth)
    rows = buf[: height * step].reshape(height, step)[:, :row]
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        rows = _to_8bit(np.ascontiguousarray(rows).view(dtype))
    pixels = rows.reshape(height, width, channels)
    if encoding in _BAYER_ENCODINGS:
        return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), _BAYER[_BAYER_ENCODINGS[encoding][0]])
    return np.ascontiguousarray(pixels[:, :, list(order)])


def compressed_size(data: bytes | np.ndarray) -> tuple[str, int, int]:
    """(format, width, height) read from a PNG or JPEG header, without decoding the pixels.

    Raises:
        ImageDecodeError: neither PNG nor JPEG, or a header cut short.
    """
    buf = _buffer(data)
    head = buf[:32].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise ImageDecodeError("PNG image has no IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        return "png", width, height
    if head.startswith(b"\xff\xd8"):
        raw = buf.tobytes()
        i = 2
        while i + 9 <= len(raw):
            if raw[i] != 0xFF:
                i += 1
                continue
            marker = raw[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", raw[i + 2 : i + 4])[0]
            # start-of-frame markers C0-CF except C4 (Huffman), C8 (reserved), CC (arithmetic)
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", raw[i + 5 : i + 9])
                return "jpeg", width, height
            i += 2 + length
        raise ImageDecodeError("JPEG image has no frame header (SOF)")
    raise ImageDecodeError("compressed image is neither PNG nor JPEG")


def decode_compressed(fmt: str, data: bytes | np.ndarray) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (PNG or JPEG) into (H, W, 3) uint8 RGB, after
    checking the size in its header against :data:`MAX_PIXELS`.

    Raises:
        ImageDecodeError: empty, not PNG/JPEG, too large, or undecodable data.
    """
    what = f"compressed image ({fmt or 'no format'})"
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageDecodeError(f"{what} has no data")
    try:
        kind, width, height = compressed_size(buf)
    except ImageDecodeError as err:
        raise ImageDecodeError(f"{what} could not be decoded: {err}") from None
    check_pixels(width, height, f"{what} {kind}")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"{what} could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_message(msg) -> np.ndarray:
    """A ``sensor_msgs/Image`` or ``CompressedImage`` (any object with its fields; compressed
    when it has ``format``) -> (H, W, 3) uint8 RGB.

    Raises:
        ImageDecodeError: the reason.
    """
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
