"""The camera's field of view over a voxel grid, cached per calibration, and the map's observation codes.

A frame's observation code per grid voxel is its class id (bits :data:`CLASS_MASK`) or
:data:`FREE_CODE`; :func:`code_mask` keeps all bits inside the frustum and only the class bits
(or none) outside it, because free space outside the view is no evidence.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from monoocc_ros.camera import CameraModel
from monoocc_ros.grid import KITTI_GRID, VoxelGrid

__all__ = ["CLASS_MASK", "FREE_CODE", "code_mask", "frustum_mask"]

FREE_CODE = 0xE0
"""Observation / saturation code of free space; ``FREE_CODE & CLASS_MASK == 0``."""
CLASS_MASK = 0x1F
"""Bits of a class id in the codes (20 SemanticKITTI classes fit)."""


@lru_cache(maxsize=4)
def _code_mask_cached(key: bytes, grid: VoxelGrid, occupied_in_frustum_only: bool) -> np.ndarray:
    inside = _frustum_cached(key, grid)
    outside = 0 if occupied_in_frustum_only else CLASS_MASK
    mask = np.where(inside, np.uint8(0xFF), np.uint8(outside)).astype(np.uint8)
    mask.setflags(write=False)
    return mask


def code_mask(camera: CameraModel, grid: VoxelGrid, occupied_in_frustum_only: bool) -> np.ndarray:
    """(X*Y*Z,) uint8 AND-mask of observation codes: all bits in the frustum; outside it only
    the class bits (free space outside the view is no evidence), or none."""
    return _code_mask_cached(_camera_key(camera), grid, occupied_in_frustum_only)


def _camera_key(camera: CameraModel) -> bytes:
    return np.concatenate(
        [camera.K.ravel(), camera.T_cam_grid.ravel(), np.asarray(camera.image_hw, dtype=np.float64)]
    ).astype(np.float64).tobytes()


@lru_cache(maxsize=4)
def _frustum_cached(key: bytes, grid: VoxelGrid) -> np.ndarray:
    K, T, hw = _frustum_key_decode(key)
    camera = CameraModel(K=K, T_cam_grid=T, image_hw=hw)
    visible = camera.project(grid.centres())[2]
    visible.setflags(write=False)
    return visible


def _frustum_key_decode(key: bytes):
    values = np.frombuffer(key, dtype=np.float64)
    return values[:9].reshape(3, 3), values[9:25].reshape(4, 4), (int(values[25]), int(values[26]))


def frustum_mask(camera: CameraModel, grid: VoxelGrid = KITTI_GRID) -> np.ndarray:
    """(X*Y*Z,) bool, flat grid order: voxel centres inside the camera's field of view.

    Cached per calibration (a projection of the 2M voxel centres takes about 0.1 s; the
    calibration rarely changes).
    """
    return _frustum_cached(_camera_key(camera), grid)
