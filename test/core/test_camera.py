"""Camera model: KITTI calibration split, projection, visibility and input checks."""

import re

import numpy as np
import pytest

from monoocc_ros.camera import (
    CameraModel,
    check_intrinsics,
    check_rigid,
    invert_rigid,
    kitti_camera_from_calib,
)
from monoocc_ros.grid import KITTI_GRID_HALF

# Sequence 08, from monoocc-spec.md §8.4
P2 = np.array([[707.0912, 0, 601.8873, 46.88783], [0, 707.0912, 183.1104, 0.1178601], [0, 0, 1, 0.006203223]])
TR = np.array(
    [
        [-0.0018577, -0.9999660, -0.0080400, -0.0047840],
        [-0.0064815, 0.0080519, -0.9999466, -0.0733743],
        [0.9999773, -0.0018055, -0.0064962, -0.3339968],
    ]
)


def test_kitti_split_reproduces_p2_tr():
    K, T_cam_velo = kitti_camera_from_calib(P2, TR)
    Tr4 = np.vstack([TR, [0, 0, 0, 1]])
    assert np.allclose(K @ T_cam_velo[:3], P2 @ Tr4, atol=1e-9)
    camera = CameraModel(K, T_cam_velo, (370, 1226))
    pts = KITTI_GRID_HALF.centres()[::97]
    uv, depth, _ = camera.project(pts)
    hom = (P2 @ Tr4 @ np.c_[pts, np.ones(len(pts))].T).T
    ok = hom[:, 2] > 1e-3
    assert np.abs(uv[ok] - hom[ok, :2] / hom[ok, 2:]).max() < 1e-6
    assert np.allclose(camera.lidar2img[:3], P2 @ Tr4, atol=1e-9)


def test_visibility_rule_and_forward_voxels():
    K, T = kitti_camera_from_calib(P2, TR)
    camera = CameraModel(K, T, (370, 1226))
    _, _, visible = camera.project(np.array([[10.0, 0.0, -1.0], [-5.0, 0.0, 0.0], [10.0, 30.0, 0.0]]))
    assert visible.tolist() == [True, False, False]


def test_invert_rigid():
    _, T = kitti_camera_from_calib(P2, TR)
    assert np.allclose(invert_rigid(T) @ T, np.eye(4), atol=1e-5)  # spec values are rounded


@pytest.mark.parametrize(
    "T, message",
    [
        (np.eye(3), "must be 4x4"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "not rigid"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "not rigid"),
    ],
)
def test_check_rigid_rejects(T, message):
    with pytest.raises(ValueError, match=message):
        check_rigid(T, name="T_test")


@pytest.mark.parametrize(
    "K, message",
    [
        (np.zeros((3, 3)), "focal length"),
        (np.array([[700, 0, 600], [0, np.nan, 180], [0, 0, 1.0]]), "NaN"),
        (np.eye(4), "must be 3x3"),
    ],
)
def test_check_intrinsics_rejects(K, message):
    with pytest.raises(ValueError, match=message):
        check_intrinsics(K)


# ---------------------------------------------------------------- CameraInfo codec


def _camera_info(**fields):
    """A CameraInfo-like object (the codec reads fields only): 640x200, rectified P = [K | 0]."""
    from types import SimpleNamespace

    K = np.array([[700.0, 0, 320], [0, 700, 100], [0, 0, 1]])
    base = dict(
        height=200, width=640, k=K.ravel().tolist(), p=np.hstack([K, np.zeros((3, 1))]).ravel().tolist(), d=[],
        distortion_model="plumb_bob", binning_x=0, binning_y=0,
        roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False),
        header=SimpleNamespace(frame_id="cam"),
    )
    base.update(fields)
    return SimpleNamespace(**base)


def test_camera_info_rule_takes_p_when_set_else_k():
    from monoocc_ros.camera import CameraInfoReader

    raw = np.array([[650.0, 0, 310], [0, 655, 98], [0, 0, 1]])
    reader = CameraInfoReader("cam_info")
    info = _camera_info(k=raw.ravel().tolist())
    np.testing.assert_array_equal(reader.intrinsics(info, (200, 640), "cam"), [[700, 0, 320], [0, 700, 100], [0, 0, 1]])
    np.testing.assert_array_equal(reader.intrinsics(_camera_info(k=raw.ravel().tolist(), p=[0.0] * 12), (200, 640)), raw)


@pytest.mark.parametrize(
    "fields, image_frame, reason",
    [
        ({"binning_x": 2, "binning_y": 2}, "cam", "binning 2x2"),
        ({"roi": __import__("types").SimpleNamespace(x_offset=10, y_offset=0, width=320, height=200, do_rectify=True)}, "cam", "region of interest 320x200"),
        ({"distortion_model": "fisheye_custom", "d": [0.1] * 50}, "cam", "unknown distortion_model 'fisheye_custom'"),
        ({"d": [0.1] * 50}, "cam", "D has 50 coefficients"),
        ({"d": [float("nan")] * 5}, "cam", "D contains NaN"),
        ({"p": (2 * np.array([[700.0, 0, 320, 0], [0, 700, 100, 0], [0, 0, 1, 0]])).ravel().tolist()}, "cam", "last row"),
        ({"p": [0.0] * 12, "k": [1e-300, 0, 320, 0, 1e-300, 100, 0, 0, 1]}, "cam", "focal length"),
        ({"p": [1e300, 0, 320, 0, 0, 1e300, 100, 0, 0, 0, 1, 0]}, "cam", "focal length"),
        ({"p": [700.0, 0, 1e6, 0, 0, 700, 100, 0, 0, 0, 1, 0]}, "cam", "principal point"),
        ({"p": [700.0, 500, 320, 0, 0, 700, 100, 0, 0, 0, 1, 0]}, "cam", "skew 500"),
        ({"p": [700.0, 0, 320, 0, 0, 2000, 100, 0, 0, 0, 1, 0]}, "cam", "aspect"),
        ({}, "other_cam", "frame_id 'cam' is not the image's 'other_cam'"),
        ({"height": 100}, "cam", "size 640x100 differs"),
    ],
)
def test_camera_info_the_model_cannot_honour_is_rejected_with_one_reason(fields, image_frame, reason):
    from monoocc_ros.camera import CameraInfoError, CameraInfoReader

    with pytest.raises(CameraInfoError, match=re.escape(reason)) as err:
        CameraInfoReader("/cam/camera_info").intrinsics(_camera_info(**fields), (200, 640), image_frame)
    assert str(err.value).startswith("/cam/camera_info: ") and "\n" not in str(err.value)


def test_distortion_is_warned_once_per_camera_and_counted():
    from monoocc_ros.camera import CameraInfoReader

    warnings = []
    reader = CameraInfoReader("/cam/camera_info", warn=warnings.append)
    distorted = _camera_info(d=[-0.37, 0.2, 0.001, 0.0, -0.07])
    for _ in range(3):
        reader.intrinsics(distorted, (200, 640), "cam")
    reader.intrinsics(_camera_info(d=[-0.3, 0.1, 0, 0, 0], header=__import__("types").SimpleNamespace(frame_id="cam2")), (200, 640))
    reader.intrinsics(_camera_info(d=[0.0] * 5), (200, 640))  # zeros: nothing to say
    assert reader.distorted == 4
    assert len(warnings) == 2 and "'cam'" in warnings[0] and "taken as rectified" in warnings[0] and "'cam2'" in warnings[1]
