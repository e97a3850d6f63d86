"""Helpers for the training tests: a small camera looking down the grid's x axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# velodyne (x fwd, y left, z up) -> camera optical (x right, y down, z fwd)
R_CAM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def camera_batch(hw=(64, 160), past_offsets_m=(4.0, 3.0, 2.0, 1.0), batch=1):
    """K, T_cam_grid and per-past-frame transforms of a car driving forward along x."""
    h, w = hw
    K = torch.tensor([[w / 4, 0.0, w / 2], [0.0, w / 4, h / 2], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = R_CAM_VELO
    T[:3, 3] = [0.0, 1.7, 0.0]
    past = []
    for back in past_offsets_m:
        shift = np.eye(4)
        shift[0, 3] = back  # the earlier camera sat `back` metres behind: grid points are further
        past.append(T @ shift)
    return (
        K.expand(batch, 3, 3).clone(),
        torch.from_numpy(T).float().expand(batch, 4, 4).clone(),
        torch.from_numpy(np.stack(past)).float().expand(batch, len(past), 4, 4).clone(),
    )


@pytest.fixture
def small_camera():
    return camera_batch()


@pytest.fixture(scope="session")
def split_bags(synthetic_kitti, tmp_path_factory):
    """(validation, held-out) bags cut from the generated street: its ground-truth frames 10 and 15.

    Training on ``synthetic_bag`` with ``data.max_train_frames=2`` (frames 0 and 5) leaves both unseen.
    """
    from monoocc_ros.data.converter import convert_sequence

    base = tmp_path_factory.mktemp("split_bags")
    convert_sequence(synthetic_kitti, "00", base / "val", frames=range(8, 13), progress=False)
    convert_sequence(synthetic_kitti, "00", base / "held_out", frames=range(13, 18), progress=False)
    return base / "val", base / "held_out"
