"""Fixtures shared by every test area: the real SemanticKITTI sample and generated data."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_KITTI = Path(
    os.environ.get("MONOOCC_SHARED_KITTI", REPO_ROOT.parent / "shared" / "data" / "semantickitti-real")
)


def pytest_configure(config):
    import torch

    # xdist workers share the cores; oversubscribed OpenMP threads spin and slow everyone
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))


def pytest_collection_modifyitems(items):
    # xdist hands tests out in this order: the slow ones go first so that no worker is left
    # running one of them alone at the end
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def real_kitti() -> Path:
    """Root of the real SemanticKITTI sample (``config/``, ``sequences/``), read in place."""
    if not (SHARED_KITTI / "sequences" / "08" / "calib.txt").is_file():
        pytest.fail(
            f"real SemanticKITTI sample not found at {SHARED_KITTI}; "
            "set MONOOCC_SHARED_KITTI to its folder"
        )
    return SHARED_KITTI


def made_once_per_run(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(path)`` once per test run: xdist workers share the result instead of each making it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above the workers' own ones
    path, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            make(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def synthetic_kitti(tmp_path_factory) -> Path:
    """A generated 20-frame street sequence "00" in the SemanticKITTI layout (root folder)."""
    from monoocc_ros.data.scene import SceneConfig, generate_sequence

    def make(root: Path) -> None:
        generate_sequence(root, SceneConfig(num_frames=20, seed=7), sequence="00")

    return made_once_per_run(tmp_path_factory, "synthetic_kitti", make)


@pytest.fixture(scope="session")
def synthetic_bag(synthetic_kitti, tmp_path_factory) -> Path:
    """The generated sequence converted to an MCAP rosbag2 folder."""
    from monoocc_ros.data.converter import convert_sequence

    return made_once_per_run(tmp_path_factory, "seq00_bag", lambda out: convert_sequence(synthetic_kitti, "00", out))
