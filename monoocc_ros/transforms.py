"""Rotations and rigid transforms from quaternions, without ROS.

One implementation for every place that turns a ``geometry_msgs`` rotation into a matrix: the
bag reader (:mod:`monoocc_ros.data.bag_io`), tf2 lookups (:mod:`monoocc_ros.ros.tf`) and the
node's static-extrinsic parameters (:mod:`monoocc_ros.ros.conversions`). Quaternions are
``(x, y, z, w)``, the ROS order.

Example:
    >>> import numpy as np
    >>> R = quaternion_to_matrix(0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5))  # +90 degrees about z
    >>> np.round(R @ [1.0, 0.0, 0.0], 6) + 0.0
    array([0., 1., 0.])
    >>> np.round(matrix_to_quaternion(R), 6) + 0.0
    array([0.      , 0.      , 0.707107, 0.707107])
    >>> matrix_from_translation_quaternion([1, 2, 3], [0, 0, 0, 1])[:3, 3]
    array([1., 2., 3.])
"""

from __future__ import annotations

import numpy as np

__all__ = ["matrix_from_translation_quaternion", "matrix_to_quaternion", "quaternion_to_matrix"]


def quaternion_to_matrix(x: float, y: float, z: float, w: float, *, unit_tol: float | None = None) -> np.ndarray:
    """Quaternion (x, y, z, w) -> (3, 3) float64 rotation matrix.

    The quaternion is normalised first. ``unit_tol`` (for values a person typed, such as a
    parameter) rejects quaternions whose norm is further than that from 1, because a non-unit
    value there is more likely a typo than a rounding error.

    Raises:
        ValueError: zero or non-finite norm, or a norm outside ``1 +- unit_tol``.
    """
    q = np.array([x, y, z, w], dtype=np.float64)
    n = np.linalg.norm(q)
    if unit_tol is not None and not abs(n - 1.0) <= unit_tol:  # NaN fails too
        raise ValueError(f"quaternion {q.tolist()} is not unit length (norm {n:.4f})")
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) quaternion (x, y, z, w) with w >= 0.

    The matrix is first projected onto the nearest rotation (SVD), because calibration files
    store rotations with ~1e-7 orthonormality error.
    """
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    # Shepperd's method: branch on the largest diagonal term for numerical stability.
    t = np.trace(R)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0] * 4
        q[i] = s / 4
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
        q[3] = (R[k, j] - R[j, k]) / s
    q = np.asarray(q)
    return q if q[3] >= 0 else -q


def matrix_from_translation_quaternion(translation, quaternion_xyzw, *, unit_tol: float = 1e-3) -> np.ndarray:
    """(3,) translation + (4,) unit quaternion x, y, z, w -> (4, 4) float64 rigid transform.

    Raises:
        ValueError: wrong number of values, or a quaternion that is not unit length within ``unit_tol``.
    """
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(-1)
    if t.shape != (3,) or q.shape != (4,):
        raise ValueError(f"need 3 translation and 4 quaternion values, got {t.size} and {q.size}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(*q, unit_tol=unit_tol)
    T[:3, 3] = t
    return T
