"""Fixtures shared by every test area: the real SemanticKITTI sample and generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_KITTI = Path(
    os.environ.get("MONOOCC_SHARED_KITTI", REPO_ROOT.parent / "shared" / "data" / "semantickitti-real")
)


def pytest_configure(config):
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def real_kitti() -> Path:
    """Root of the real SemanticKITTI sample (``config/``, ``sequences/``), read in place."""
    if not (SHARED_KITTI / "sequences" / "08" / "calib.txt").is_file():
        pytest.fail(
            f"real SemanticKITTI sample not found at {SHARED_KITTI}; "
            "set MONOOCC_SHARED_KITTI to its folder"
        )
    return SHARED_KITTI


@pytest.fixture(scope="session")
def synthetic_kitti(tmp_path_factory) -> Path:
    """A generated 20-frame street sequence "00" in the SemanticKITTI layout (root folder)."""
    from monoocc_ros.data.scene import SceneConfig, generate_sequence

    root = tmp_path_factory.mktemp("synthetic_kitti")
    generate_sequence(root, SceneConfig(num_frames=20, seed=7), sequence="00")
    return root


@pytest.fixture(scope="session")
def synthetic_bag(synthetic_kitti, tmp_path_factory) -> Path:
    """The generated sequence converted to an MCAP rosbag2 folder."""
    from monoocc_ros.data.converter import convert_sequence

    out = tmp_path_factory.mktemp("bags") / "seq00"
    convert_sequence(synthetic_kitti, "00", out)
    return out
