"""Pinhole camera model: KITTI calibration, rigid transforms, projection of voxels to pixels.

Conventions:
    * ``K``: (3, 3) intrinsics of the rectified image.
    * ``T_a_b``: (4, 4) rigid transform mapping points in frame b to frame a.
    * The grid frame is KITTI's velodyne frame; ``T_cam_grid`` maps it into the camera's
      optical frame (x right, y down, z forward).
    * KITTI's ``P2 = K [I | t]`` carries the offset of camera 2 from rectified camera 0 in its
      last column, so ``T_cam2_velo = [I | t] @ Tr`` and ``K @ T_cam2_velo[:3] == P2 @ Tr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CameraModel",
    "check_intrinsics",
    "check_rigid",
    "invert_rigid",
    "kitti_camera_from_calib",
    "project_points",
]


def check_rigid(T: np.ndarray, *, name: str = "transform", tol: float = 1e-4) -> np.ndarray:
    """Return T as float64 (4, 4) after checking that it is a finite rigid transform.

    Raises:
        ValueError: naming ``name`` when T is not 4x4, not finite, has a non-orthonormal
            rotation, a reflection, or a bottom row other than [0, 0, 0, 1].
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} contains NaN or infinite values")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or np.linalg.det(R) < 0:
        raise ValueError(f"{name} is not rigid: its rotation part is not orthonormal (det +1)")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=tol):
        raise ValueError(f"{name} is not rigid: bottom row is {T[3].tolist()}, not [0, 0, 0, 1]")
    return T


def check_intrinsics(K: np.ndarray, *, name: str = "K") -> np.ndarray:
    """Return K as float64 (3, 3) after checking focal lengths and finiteness.

    Raises:
        ValueError: naming ``name`` when K is not 3x3, not finite, or has fx/fy <= 0.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{name} must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{name} has non-positive focal length (fx={K[0, 0]}, fy={K[1, 1]})")
    if not np.allclose(K[2], [0, 0, 1]):
        raise ValueError(f"{name} last row must be [0, 0, 1], got {K[2].tolist()}")
    return K


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform."""
    T = np.asarray(T, dtype=np.float64)
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


def project_points(points: np.ndarray, K: np.ndarray, T_cam_src: np.ndarray):
    """Project points into the image.

    Args:
        points: (P, 3) float positions in the source frame.
        K: (3, 3) intrinsics.
        T_cam_src: (4, 4) source -> camera optical frame.

    Returns:
        uv: (P, 2) float64 pixel coordinates (x right, y down; pixel centres at +0.5).
        depth: (P,) float64 depth along the optical axis (may be <= 0 behind the camera).
    """
    pts = np.asarray(points, dtype=np.float64)
    cam = pts @ T_cam_src[:3, :3].T + T_cam_src[:3, 3]
    depth = cam[:, 2]
    pix = cam @ np.asarray(K, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pix[:, :2] / pix[:, 2:3]
    return uv, depth


@dataclass(frozen=True)
class CameraModel:
    """A calibrated camera looking at the grid.

    Attributes:
        K: (3, 3) intrinsics.
        T_cam_grid: (4, 4) grid frame -> camera optical frame.
        image_hw: (H, W) of the images the intrinsics belong to.
    """

    K: np.ndarray
    T_cam_grid: np.ndarray
    image_hw: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "K", check_intrinsics(self.K))
        object.__setattr__(self, "T_cam_grid", check_rigid(self.T_cam_grid, name="T_cam_grid"))
        h, w = self.image_hw
        if h < 2 or w < 2:
            raise ValueError(f"image size {w}x{h} is too small")

    @property
    def lidar2img(self) -> np.ndarray:
        """(4, 4) projection grid frame -> homogeneous pixels (K padded to 4x4 @ T_cam_grid)."""
        K4 = np.eye(4)
        K4[:3, :3] = self.K
        return K4 @ self.T_cam_grid

    def project(self, points: np.ndarray):
        """(P, 3) grid-frame points -> uv (P, 2), depth (P,), visible (P,) bool.

        Visible follows the official MonoOcc rule: depth > 1e-5 and the normalised
        coordinates (u / W, v / H) inside the open interval (0, 1).
        """
        uv, depth = project_points(points, self.K, self.T_cam_grid)
        h, w = self.image_hw
        with np.errstate(invalid="ignore"):
            un, vn = uv[:, 0] / w, uv[:, 1] / h
            visible = (depth > 1e-5) & (un > 0) & (un < 1) & (vn > 0) & (vn < 1)
        return uv, depth, visible


def kitti_camera_from_calib(P: np.ndarray, Tr: np.ndarray):
    """Split a KITTI projection matrix into intrinsics and a camera-from-velodyne transform.

    Args:
        P: (3, 4) rectified projection matrix of the camera (``P2`` for image_2).
        Tr: (3, 4) or (4, 4) velodyne -> rectified camera 0.

    Returns:
        K: (3, 3) intrinsics.
        T_cam_velo: (4, 4) velodyne -> this camera's optical frame, with ``K @ T_cam_velo[:3]``
            equal to ``P @ Tr``.
    """
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    Tr4 = np.eye(4)
    Tr4[:3] = np.asarray(Tr, dtype=np.float64).reshape(-1, 4)[:3]
    K = P[:, :3].copy()
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, offset @ Tr4
