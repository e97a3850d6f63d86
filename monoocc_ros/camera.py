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
    "CameraInfoError",
    "CameraInfoReader",
    "CameraInfoSizeError",
    "CameraModel",
    "check_sane_intrinsics",
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


# ---------------------------------------------------------------- CameraInfo codec
# One reading of sensor_msgs/CameraInfo for every path (node, bag index, dataset, evaluation).
# Works on any object with the message's fields (rclpy or rosbags), so it needs no ROS.

# distortion_model -> number of D coefficients (an empty D means "no distortion" for any model)
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4, "": 0}
# Sane intrinsics, relative to the image: focal lengths within [0.1, 20] x the longer side (a
# horizontal field of view from about 157 deg down to 3 deg), fy / fx within [0.5, 2], the
# principal point inside the image, |skew| <= 0.01 fx.
FOCAL_RANGE = (0.1, 20.0)
ASPECT_RANGE = (0.5, 2.0)
MAX_SKEW_RATIO = 0.01


class CameraInfoError(ValueError):
    """A CameraInfo the model cannot honour; ``cause`` is the counter it is filed under."""

    cause = "bad_camera_info"


class CameraInfoSizeError(CameraInfoError):
    """CameraInfo is for another image size than the image it came with."""

    cause = "size_mismatch"


def _matrix(values, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64).reshape(shape)


def check_sane_intrinsics(K: np.ndarray, image_hw: tuple[int, int], *, name: str = "K") -> np.ndarray:
    """:func:`check_intrinsics` plus the bounds above for an image of (H, W).

    Raises:
        ValueError: naming ``name``, the value and the bound it breaks.
    """
    K = check_intrinsics(K, name=name)
    h, w = image_hw
    side = max(h, w)
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    lo, hi = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
    if not (lo <= fx <= hi and lo <= fy <= hi):
        raise ValueError(f"{name} focal length fx={fx:g}, fy={fy:g} outside [{lo:g}, {hi:g}] px ({FOCAL_RANGE[0]:g}-{FOCAL_RANGE[1]:g} x the {side}-px image side)")
    if not ASPECT_RANGE[0] <= fy / fx <= ASPECT_RANGE[1]:
        raise ValueError(f"{name} pixel aspect fy/fx={fy / fx:g} outside [{ASPECT_RANGE[0]:g}, {ASPECT_RANGE[1]:g}]")
    if not (0.0 <= cx <= w and 0.0 <= cy <= h):
        raise ValueError(f"{name} principal point ({cx:g}, {cy:g}) lies outside the {w}x{h} image")
    if abs(skew) > MAX_SKEW_RATIO * fx:
        raise ValueError(f"{name} skew {skew:g} exceeds {MAX_SKEW_RATIO:g} x fx")
    return K


class CameraInfoReader:
    """Intrinsics of the image a CameraInfo comes with, the same way on every path.

    The rule (as ``image_geometry.PinholeCameraModel`` does for rectified images): when P is set
    (not all zero), the image is taken as rectified and K = P[:, :3] (P's fourth column, a stereo
    baseline, belongs in TF); otherwise K = the message's K. Rejected, each with one
    :class:`CameraInfoError` naming the topic: a size other than the image's, binning, a region
    of interest smaller than the image, an unknown distortion model or a D that does not fit it,
    non-finite values, intrinsics outside the bounds of :func:`check_sane_intrinsics`, and a
    frame_id other than the image's. Non-zero distortion is warned about once per camera (the
    model assumes a pinhole image) and counted in ``distorted``.

    Args:
        name: topic or file named in messages.
        warn: called with the warning text (once per camera frame_id).
    """

    def __init__(self, name: str = "camera_info", warn=None):
        self.name = name
        self.warn = warn
        self.warned: set[str] = set()
        self.distorted = 0

    def intrinsics(self, info, image_hw: tuple[int, int], image_frame_id: str | None = None) -> np.ndarray:
        """(3, 3) float64 K for an image of (H, W) that came with ``info``.

        Raises:
            CameraInfoError / CameraInfoSizeError: the reason, naming the topic.
        """
        name = self.name
        height, width = image_hw
        if (int(info.height), int(info.width)) != (height, width):
            raise CameraInfoSizeError(
                f"{name}: CameraInfo size {info.width}x{info.height} differs from the image size {width}x{height}"
            )
        frame = str(info.header.frame_id)
        if image_frame_id and frame and frame != image_frame_id:
            raise CameraInfoError(f"{name}: CameraInfo frame_id '{frame}' is not the image's '{image_frame_id}'")
        bx, by = int(getattr(info, "binning_x", 0)), int(getattr(info, "binning_y", 0))
        if bx > 1 or by > 1:
            raise CameraInfoError(f"{name}: binning {bx}x{by} is not supported (publish full-resolution intrinsics)")
        roi = getattr(info, "roi", None)
        if roi is not None and (int(roi.width), int(roi.height)) not in ((0, 0), (width, height)):
            raise CameraInfoError(f"{name}: region of interest {roi.width}x{roi.height}+{roi.x_offset}+{roi.y_offset} "
                                  "is not supported (crop the intrinsics instead)")
        model = str(info.distortion_model)
        D = np.asarray(list(info.d), dtype=np.float64)
        if model not in DISTORTION_MODELS:
            raise CameraInfoError(f"{name}: unknown distortion_model '{model}' (known: "
                                  f"{', '.join(m for m in DISTORTION_MODELS if m)})")
        if D.size not in (0, DISTORTION_MODELS[model]):
            raise CameraInfoError(f"{name}: D has {D.size} coefficients, distortion_model '{model or 'none'}' takes "
                                  f"{DISTORTION_MODELS[model]}")
        if not np.all(np.isfinite(D)):
            raise CameraInfoError(f"{name}: D contains NaN or infinite values")
        P = _matrix(info.p, (3, 4))
        rectified = bool(np.any(P != 0))
        K = P[:, :3] if rectified else _matrix(info.k, (3, 3))
        try:
            K = check_sane_intrinsics(K, image_hw, name=f"{name}: {'P' if rectified else 'K'}")
        except ValueError as err:
            raise CameraInfoError(str(err)) from err
        if np.any(D != 0):
            self.distorted += 1
            if frame not in self.warned:
                self.warned.add(frame)
                text = (
                    f"{name}: camera '{frame}' has non-zero distortion D={np.round(D, 4).tolist()} ({model}); "
                    + ("P is set, so the image is taken as rectified (image_rect): if it is image_raw the voxels "
                       "are projected wrongly" if rectified else
                       "P is not set, so K is used on an image the model takes as undistorted")
                    + " (warned once per camera)"
                )
                if self.warn is not None:
                    self.warn(text)
        return K
