"""The C kernel of the map (monoocc_ros.mapping.kernel) against the numpy path it replaces.

Both fuse the same frames (a persistent random scene with per-frame flicker, seen from a vehicle
that drives, turns, climbs and tilts, with gaps in time so movable classes decay) and must leave
bit-identical state: log-odds, labels, votes, stamps and saturation codes.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from monoocc_ros.camera import CameraModel, kitti_camera_from_calib
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI
from monoocc_ros.mapping import MapConfig, SemanticMap
from monoocc_ros.mapping import kernel as map_kernel


def _camera() -> CameraModel:
    from monoocc_ros.data.scene import KITTI_IMAGE_HW, scaled_calib

    calib = scaled_calib(KITTI_IMAGE_HW)
    K, T = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    return CameraModel(K=K, T_cam_grid=T, image_hw=KITTI_IMAGE_HW)


def _pose(x, y, z, yaw_deg, tilt_deg=0.0) -> np.ndarray:
    a, b = np.radians(yaw_deg), np.radians(tilt_deg)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry
    T[:3, 3] = [x, y, z]
    return T


def _frames(seed: int = 3):
    rng = np.random.default_rng(seed)
    size = KITTI_GRID.size
    n = SEMANTIC_KITTI.num_classes
    # mostly empty, a few classes dominate (so votes build up and saturate), some unknown
    base = np.where(rng.random(size) < 0.6, 0, rng.choice([1, 9, 11, 13, 15], size)).astype(np.uint8)
    base[rng.random(size) < 0.03] = IGNORE
    # (x, y, z, yaw, tilt, stamp): straight, turning, a climb across a voxel, a tilt, a time gap
    poses = [(0, 0, 1.73, 0, 0, 0.0), (0.8, 0.1, 1.73, 2, 0, 0.1), (1.5, 0.3, 1.73, 7, 0, 0.2),
             (2.3, 0.7, 1.95, 12, 0, 0.3), (3.0, 1.2, 2.0, 15, 4, 0.4), (3.0, 1.2, 2.0, 15, 4, 0.5),
             (3.7, 1.9, 1.8, 25, -3, 1.9), (4.5, 2.6, 1.8, 31, 0, 2.0)]
    for x, y, z, yaw, tilt, stamp in poses:
        labels = base.copy()
        hit = rng.random(size) < 0.1
        labels[hit] = rng.integers(0, n, int(hit.sum()), dtype=np.uint8)
        conf = rng.integers(100, 256, size, dtype=np.uint8)
        yield labels, conf, _pose(x, y, z, yaw, tilt), 1000.0 + stamp


def _state(m: SemanticMap):
    return {"logodds": m.logodds, "label": m.label, "votes": m.votes.view(np.uint16), "stamp": m.stamp,
            "sat": m.sat, "lo": m.lo}


@pytest.mark.parametrize("cfg", [MapConfig(), MapConfig(size=(300, 280, 40), occupied_in_frustum_only=True)],
                         ids=["default", "small-window"])
def test_kernel_matches_numpy(cfg):
    if map_kernel.load() is None:
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail(f"a C compiler exists but the map kernel did not build: {map_kernel.kernel_status()}")
        pytest.skip("no C compiler: only the numpy path exists")
    camera = _camera()
    ref, fast = SemanticMap(cfg), SemanticMap(cfg)
    ref.use_kernel = False
    decayed = 0
    for k, (labels, conf, T, stamp) in enumerate(_frames()):
        c = None if k == 2 else conf  # one frame without confidences
        car = ref.label == SEMANTIC_KITTI.names.index("car")
        before = ref.logodds[car].copy()
        assert fast.integrate(labels, c, T, stamp, camera) == ref.integrate(labels, c, T, stamp, camera)
        decayed += int(np.count_nonzero((ref.logodds[car] < before) & (before > 0)))
        for name, value in _state(ref).items():
            np.testing.assert_array_equal(_state(fast)[name], value, err_msg=f"{name} after frame {k}")
    # the frames exercised what they are meant to: saturation, votes, decay of a movable class
    assert np.count_nonzero(ref.sat) > 0 and np.count_nonzero(ref.votes) > 0 and decayed > 0


def test_kernel_columns_match_numpy():
    """The footprint's columns in C equal numpy's (same columns, order, grid columns and layers)."""
    lib = map_kernel.load()
    if lib is None:
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail(f"a C compiler exists but the map kernel did not build: {map_kernel.kernel_status()}")
        pytest.skip("no C compiler: only the numpy path exists")
    m = SemanticMap(MapConfig(size=(300, 280, 40)))
    for x, y, z, yaw, tilt in [(0, 0, 1.73, 0, 0), (-7.3, 4.1, 1.9, 33, 5), (12.05, -3.3, 0.4, -141, -8)]:
        T = _pose(x, y, z, yaw, tilt)
        m._recentre(m._window_lo_for(T))
        for fast, ref in zip(m._columns(T, lib), m._columns(T)):
            np.testing.assert_array_equal(fast, ref)
