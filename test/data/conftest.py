"""Fixtures of the data tests: a tiny SemanticKITTI-layout sequence written with kitti.write_*."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from monoocc_ros.data import kitti
from monoocc_ros.grid import KITTI_GRID

TINY_HW = (48, 160)
TINY_FRAMES = 6
TINY_VOXEL_FRAMES = (0, 2, 4)
# Raw ids covering every SSC remap case: empty, classes, folded moving classes, ignored ids.
RAW_IDS = np.array([0, 0, 0, 10, 40, 44, 48, 50, 70, 72, 252, 60, 1, 52, 99, 5], dtype=np.uint16)


def tiny_calib() -> dict[str, np.ndarray]:
    """A KITTI-like calibration for TINY_HW images: velodyne x fwd, y left, z up."""
    K = np.array([[80.0, 0.0, 80.0], [0.0, 80.0, 24.0], [0.0, 0.0, 1.0]])
    P0 = np.hstack([K, np.zeros((3, 1))])
    P2 = np.hstack([K, K @ np.array([[0.06], [-0.001], [0.002]])])
    R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    c, s = np.cos(0.01), np.sin(0.01)
    R = R @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    Tr = np.eye(4)
    Tr[:3, :3] = R
    Tr[:3, 3] = [-0.004, -0.076, -0.27]
    return {"P0": P0, "P1": P0, "P2": P2, "P3": P2, "Tr": Tr}


def write_tiny_sequence(root: Path, sequence: str = "00", seed: int = 0) -> dict:
    """Write a TINY_FRAMES-frame sequence and return its source arrays (for bit-exact checks)."""
    rng = np.random.default_rng(seed)
    seq = root / "sequences" / sequence
    calib = tiny_calib()
    kitti.write_calib(seq / "calib.txt", calib)
    poses = np.tile(np.eye(4), (TINY_FRAMES, 1, 1))
    poses[:, 2, 3] = 0.8 * np.arange(TINY_FRAMES)  # camera moves forward along its z
    kitti.write_poses(seq / "poses.txt", poses)
    times = 0.1 * np.arange(TINY_FRAMES) + 0.05
    kitti.write_times(seq / "times.txt", times)
    src = {
        "calib": calib,
        "poses": kitti.read_poses(seq / "poses.txt"),
        "times": times,
        "frames": {},
    }
    for f in range(TINY_FRAMES):
        coarse = rng.uniform(0, 255, (TINY_HW[0] // 8, TINY_HW[1] // 8, 3)).astype(np.float32)
        # Smooth content (as camera images are), so lossy JPEG stays close to the source.
        image = (
            cv2.resize(coarse, TINY_HW[::-1], interpolation=cv2.INTER_LINEAR)
            .round()
            .astype(np.uint8)
        )
        n = 500 + 10 * f
        scan = np.column_stack(
            [
                rng.uniform(1, 40, n),
                rng.uniform(-15, 15, n),
                rng.uniform(-1.8, 2, n),
                rng.uniform(0, 1, n),
            ]
        ).astype(np.float32)
        point_labels = (rng.integers(0, 4, n).astype(np.uint32) << 16) | rng.choice(
            np.array([0, 10, 40, 50, 70, 1], dtype=np.uint32), n
        )
        kitti.write_image(seq / "image_2" / f"{f:06d}.png", image)
        kitti.write_scan(seq / "velodyne" / f"{f:06d}.bin", scan)
        kitti.write_point_labels(seq / "labels" / f"{f:06d}.label", point_labels)
        entry = {"image": image, "scan": scan, "point_labels": point_labels}
        if f in TINY_VOXEL_FRAMES:
            labels = rng.choice(RAW_IDS, KITTI_GRID.size)
            invalid = rng.random(KITTI_GRID.size) < 0.1
            kitti.write_voxel_labels(seq / "voxels" / f"{f:06d}.label", labels)
            kitti.write_voxel_bits(seq / "voxels" / f"{f:06d}.invalid", invalid)
            kitti.write_voxel_bits(seq / "voxels" / f"{f:06d}.bin", labels > 0)
            kitti.write_voxel_bits(seq / "voxels" / f"{f:06d}.occluded", invalid)
            entry.update(voxel_labels=labels, invalid=invalid)
        src["frames"][f] = entry
    return src


@pytest.fixture(scope="session")
def tiny_kitti_src(tmp_path_factory) -> tuple[Path, dict]:
    """(root, source arrays) of a tiny 6-frame sequence "00" (voxels on frames 0, 2, 4)."""
    root = tmp_path_factory.mktemp("tiny_kitti")
    return root, write_tiny_sequence(root)


@pytest.fixture
def tiny_kitti_copy(tiny_kitti_src, tmp_path) -> Path:
    """A private copy of the tiny sequence that a test may damage."""
    root = tmp_path / "kitti"
    shutil.copytree(tiny_kitti_src[0], root)
    return root


@pytest.fixture(scope="session")
def tiny_bag(tiny_kitti_src, tmp_path_factory) -> Path:
    """The tiny sequence converted to an MCAP bag (raw images)."""
    from monoocc_ros.data.converter import convert_sequence

    out = tmp_path_factory.mktemp("tiny_bags") / "tiny"
    convert_sequence(tiny_kitti_src[0], "00", out, progress=False)
    return out
