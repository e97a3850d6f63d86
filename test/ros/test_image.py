"""Image messages -> RGB: the built-in decoder (and cv_bridge where installed)."""

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from monoocc_ros.ros.image import ImageDecodeError, image_msg_to_rgb


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)


def _as_encoding(rgb, encoding):
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[:, :, ::-1]
    if encoding == "rgba8":
        return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 200, np.uint8)], axis=2)
    if encoding == "bgra8":
        return np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    if encoding == "mono8":
        return rgb[:, :, 0]
    raise AssertionError(encoding)


def _image_msg(pixels, encoding, row_padding=0):
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + row_padding), np.uint8)
    rows[:, : w * c] = pixels.reshape(h, w * c)
    rows[:, w * c :] = 77  # garbage in the padding must not leak into the image
    return Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c + row_padding, data=rows.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("row_padding", [0, 5])
def test_raw_encodings_decode_to_rgb(rgb, encoding, row_padding):
    msg = _image_msg(_as_encoding(rgb, encoding), encoding, row_padding)
    out = image_msg_to_rgb(msg, use_cv_bridge=False)
    expected = np.repeat(rgb[:, :, :1], 3, axis=2) if encoding == "mono8" else rgb
    assert out.dtype == np.uint8 and out.shape == (7, 11, 3)
    assert np.array_equal(out, expected)


def test_png_compressed_image_decodes_exactly(rgb):
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    msg = CompressedImage(format="rgb8; png compressed bgr8", data=png.tobytes())
    assert np.array_equal(image_msg_to_rgb(msg, use_cv_bridge=False), rgb)


def test_jpeg_compressed_image_keeps_channel_order():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    ok, jpg = cv2.imencode(".jpg", red[:, :, ::-1])
    assert ok
    out = image_msg_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes()), use_cv_bridge=False)
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


@pytest.mark.parametrize(
    "msg, match",
    [
        (Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)), "unsupported image encoding '32FC1'"),
        (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(6)), "6 bytes, expected height 2 x step 6"),
        (Image(height=2, width=2, encoding="rgb8", step=4, data=bytes(8)), "step 4 is smaller"),
        (Image(height=0, width=2, encoding="rgb8", step=6, data=b""), "zero size"),
        (CompressedImage(format="jpeg", data=b"not a jpeg"), "could not be decoded"),
        (CompressedImage(format="jpeg", data=b""), "has no data"),
    ],
)
def test_bad_images_raise_with_the_reason(msg, match):
    with pytest.raises(ImageDecodeError, match=match):
        image_msg_to_rgb(msg, use_cv_bridge=False)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_cv_bridge_gives_identical_results(rgb, encoding):
    pytest.importorskip("cv_bridge", reason="cv_bridge not installed: only the built-in decoder runs here")
    msg = _image_msg(_as_encoding(rgb, encoding), encoding, 3)
    assert np.array_equal(
        image_msg_to_rgb(msg, use_cv_bridge=True), image_msg_to_rgb(msg, use_cv_bridge=False)
    )


def test_cv_bridge_gives_identical_results_for_compressed(rgb):
    pytest.importorskip("cv_bridge", reason="cv_bridge not installed: only the built-in decoder runs here")
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    msg = CompressedImage(format="png", data=png.tobytes())
    assert np.array_equal(image_msg_to_rgb(msg, use_cv_bridge=True), image_msg_to_rgb(msg, use_cv_bridge=False))
