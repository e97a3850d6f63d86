"""The one image decoder: 8/16-bit and Bayer encodings, refusal by name, the size cap checked
before any pixel is decoded."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from monoocc_ros.msgs.image import MAX_PIXELS, ImageDecodeError, compressed_size, decode_compressed, decode_raw


def test_16_bit_encodings_scale_like_cv_bridge_in_either_byte_order():
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(3, 5, 3), dtype=np.uint16)
    want = np.minimum(np.round(rgb16 / 256.0), 255).astype(np.uint8)
    for big in (0, 1):
        data = rgb16.astype(">u2" if big else "<u2").tobytes()
        np.testing.assert_array_equal(decode_raw("rgb16", 3, 5, 30, data, big), want)
        bgr = rgb16[:, :, ::-1].astype(">u2" if big else "<u2").tobytes()
        np.testing.assert_array_equal(decode_raw("bgr16", 3, 5, 30, bgr, big), want)
    mono = rgb16[:, :, 0]
    out = decode_raw("mono16", 3, 5, 10, mono.astype("<u2").tobytes(), 0)
    np.testing.assert_array_equal(out, np.repeat(want[:, :, :1], 3, axis=2))


@pytest.mark.parametrize("pattern, layout", [
    ("rggb", ("R", "G", "G", "B")), ("bggr", ("B", "G", "G", "R")),
    ("gbrg", ("G", "B", "R", "G")), ("grbg", ("G", "R", "B", "G")),
])
def test_bayer_encodings_demosaic_to_the_right_colour(pattern, layout):
    colour = {"R": 200, "G": 90, "B": 20}
    mosaic = np.zeros((16, 16), np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = colour[layout[k]]
    rgb = decode_raw(f"bayer_{pattern}8", 16, 16, 16, mosaic.tobytes())
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_allclose(rgb[4:12, 4:12].reshape(-1, 3).mean(0), (200, 90, 20), atol=2)
    rgb16 = decode_raw(f"bayer_{pattern}16", 16, 16, 32, (mosaic.astype("<u2") * 256).tobytes())
    np.testing.assert_array_equal(rgb16, rgb)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "yuv422", "uyvy", "nv21", "bayer_rggb32"])
def test_other_encodings_are_refused_by_name(encoding):
    with pytest.raises(ImageDecodeError, match=f"unsupported image encoding '{encoding}'"):
        decode_raw(encoding, 2, 2, 8, bytes(16))


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(cv2, "imdecode", fail)


def test_oversized_png_and_jpeg_are_refused_from_their_headers(monkeypatch):
    ok, png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    png = bytearray(png.tobytes())
    png[16:24] = struct.pack(">II", 8000, 8000)  # the IHDR of an 8000x8000 image
    ok, jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    jpg = jpg.tobytes()
    assert compressed_size(jpg) == ("jpeg", 8, 8) and compressed_size(bytes(png)) == ("png", 8000, 8000)
    sof = next(i for i in range(len(jpg) - 1) if jpg[i] == 0xFF and jpg[i + 1] in (0xC0, 0xC2))
    big_jpg = jpg[: sof + 5] + struct.pack(">HH", 8000, 8000) + jpg[sof + 9 :]
    _forbid_decoding(monkeypatch)
    for fmt, data in (("png", bytes(png)), ("jpeg", big_jpg)):
        with pytest.raises(ImageDecodeError, match=r"8000x8000, more than the 16.8 MP"):
            decode_compressed(fmt, data)
    with pytest.raises(ImageDecodeError, match="neither PNG nor JPEG"):
        decode_compressed("bmp", b"BM" + bytes(60))


def test_oversized_raw_image_is_refused_before_reading_data():
    assert 5000 * 5000 > MAX_PIXELS
    with pytest.raises(ImageDecodeError, match="5000x5000, more than"):
        decode_raw("rgb8", 5000, 5000, 15000, b"")
