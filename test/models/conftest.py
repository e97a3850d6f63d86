"""Fixtures for the model tests: camera geometry and a minimal painted scene to overfit."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.camera import CameraModel
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI

IMAGE_HW = (96, 320)
# KITTI's P2 scaled to a 320-pixel-wide image
K_SMALL = np.array([[184.0, 0.0, 160.0], [0.0, 184.0, 48.0], [0.0, 0.0, 1.0]])
# velodyne (x forward, y left, z up) -> optical (x right, y down, z forward), camera 8 cm lower
T_CAM_VELO = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0.0, 0.0, 0.0, 1.0]]
)


@pytest.fixture(scope="session")
def camera() -> CameraModel:
    return CameraModel(K_SMALL, T_CAM_VELO, IMAGE_HW)


def _paint(labels: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Ray-march every pixel through the grid; the first occupied voxel gives the pixel its class colour."""
    h, w = camera.image_hw
    v, u = np.mgrid[0:h, 0:w]
    pix = np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(h * w)], 1)
    rays_cam = pix @ np.linalg.inv(camera.K).T
    T_velo_cam = np.linalg.inv(camera.T_cam_grid)
    origin = T_velo_cam[:3, 3]
    rays = rays_cam @ T_velo_cam[:3, :3].T
    image = np.full((h * w, 3), (135, 180, 235), dtype=np.uint8)  # sky
    hit = np.zeros(h * w, dtype=bool)
    colors = SEMANTIC_KITTI.colorize(np.arange(SEMANTIC_KITTI.num_classes))
    for depth in np.arange(0.5, 60.0, 0.1):
        pts = origin + rays * depth
        ijk, inside = KITTI_GRID.point_to_index(pts)
        todo = inside & ~hit
        cls = np.zeros(h * w, dtype=np.uint8)
        cls[todo] = labels[ijk[todo, 0], ijk[todo, 1], ijk[todo, 2]]
        new = todo & (cls != 0) & (cls != IGNORE)
        image[new] = colors[cls[new]]
        hit |= new
    return image.reshape(h, w, 3)


@pytest.fixture(scope="session")
def box_scene(camera) -> dict[str, np.ndarray]:
    """Road and sidewalk plane, a car, a building and vegetation; voxels outside the view are 255.

    Returns "image" (96, 320, 3) uint8, "labels" (256, 256, 32) uint8, "K", "T_cam_grid".
    """
    labels = np.zeros(KITTI_GRID.size, dtype=np.uint8)
    labels[:, 100:156, 0:2] = 9  # road
    labels[:, 60:100, 0:2] = 11  # sidewalk
    labels[:, 156:196, 0:2] = 11
    labels[40:62, 140:150, 2:9] = 1  # car
    labels[90:150, 150:190, 2:26] = 13  # building
    labels[70:110, 70:95, 2:16] = 15  # vegetation
    _, _, visible = camera.project(KITTI_GRID.centres())
    labels.reshape(-1)[~visible] = IGNORE
    return {"image": _paint(labels, camera), "labels": labels, "K": camera.K, "T_cam_grid": camera.T_cam_grid}


@pytest.fixture(scope="session")
def swapped_scenes(camera, box_scene) -> list[dict[str, np.ndarray]]:
    """Two scenes with ``box_scene``'s geometry whose car box and vegetation box trade classes.

    Occupancy and camera are identical; only the labels of the two boxes and the painted image
    differ, so a model can tell the scenes apart only through its image features.
    """
    base = box_scene["labels"]
    car, veg = base == 1, base == 15
    scenes = []
    for car_class, veg_class in ((1, 15), (15, 1)):
        labels = base.copy()
        labels[car], labels[veg] = car_class, veg_class
        scenes.append({"image": _paint(labels, camera), "labels": labels, "K": camera.K, "T_cam_grid": camera.T_cam_grid})
    return scenes
