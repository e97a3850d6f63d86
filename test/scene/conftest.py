"""A small generated street shared by the scene tests (read back with kitti.py's readers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monoocc_ros.data.scene import SceneConfig, generate_sequence

SMALL = SceneConfig(num_frames=6, seed=3, image_size=(96, 320), voxel_every=5)


@pytest.fixture(scope="session")
def small_config() -> SceneConfig:
    return SMALL


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> Path:
    """Dataset root holding sequences/00 generated from :data:`SMALL`."""
    root = tmp_path_factory.mktemp("scene")
    generate_sequence(root, SMALL, sequence="00", progress=False)
    return root
