"""Camera model: KITTI calibration split, projection, visibility and input checks."""

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
