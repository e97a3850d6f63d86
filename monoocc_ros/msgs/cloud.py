"""The two PointCloud2 layouts of the project, as numpy structured arrays (ROS-free).

* The converter's LiDAR cloud (``/velodyne_points`` of a converted bag): x, y, z, intensity
  float32 and the raw SemanticKITTI label uint32, 20 bytes a point
  (:data:`LIDAR_POINT_FIELDS`; built by :func:`monoocc_ros.msgs.bag_messages.points_message`,
  read by :func:`monoocc_ros.msgs.decode.decode_points`).
* The node's occupied voxels (``~/output/occupied_voxels``, ``~/output/map/occupied_voxels``):
  :func:`occupied_voxels`, wrapped in an rclpy message by
  :func:`monoocc_ros.ros.conversions.cloud_to_msg`.
"""

from __future__ import annotations

import numpy as np

from monoocc_ros.grid import VoxelGrid
from monoocc_ros.labels import LabelMap

__all__ = ["LIDAR_POINT_FIELDS", "LIDAR_POINT_STEP", "occupied_voxels"]

LIDAR_POINT_FIELDS = ("x", "y", "z", "intensity", "label")
LIDAR_POINT_STEP = 20  # 4 x float32 + uint32


def _point_dtype(with_confidence: bool) -> np.dtype:
    names = ["x", "y", "z", "rgb", "label"]
    formats = ["<f4", "<f4", "<f4", "<u4", "u1"]
    offsets = [0, 4, 8, 12, 16]
    if with_confidence:
        names.append("confidence")
        formats.append("<f4")
        offsets.append(20)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": 24 if with_confidence else 20})


def occupied_voxels(
    labels: np.ndarray, confidence: np.ndarray | None, grid: VoxelGrid, label_map: LabelMap
) -> np.ndarray:
    """Centres of the occupied voxels as a PointCloud2-ready structured array.

    Args:
        labels: (X, Y, Z) uint8 train ids; 0 (empty) and 255 (unknown) are left out.
        confidence: (X, Y, Z) uint8 probability * 255, or None.
        grid: geometry of ``labels``.
        label_map: colours of the train ids.

    Returns:
        (P,) structured array with x, y, z float32 (m, grid frame), rgb uint32 (0x00RRGGBB,
        RViz reads it as the float32 "rgb" field), label uint8 and, when ``confidence`` is
        given, confidence float32 in [0, 1]. Flat grid order.
    """
    if labels.shape != grid.size:
        raise ValueError(f"labels have shape {labels.shape}, the grid is {grid.size}")
    flat = np.ascontiguousarray(labels, dtype=np.uint8).reshape(-1)
    # uint8 wrap-around: EMPTY (0) -> 255, IGNORE (255) -> 254, every class id below 254.
    index = np.flatnonzero((flat - np.uint8(1)) < np.uint8(254))
    ids = flat[index]
    out = np.empty(index.size, dtype=_point_dtype(confidence is not None))
    # flat index -> (i, j, k) with flat = (i * Y + j) * Z + k
    _, size_y, size_z = grid.size
    ij, k = np.divmod(index, size_z)
    i, j = np.divmod(ij, size_y)
    for name, axis_index, origin in zip("xyz", (i, j, k), grid.origin_m):
        out[name] = (axis_index + 0.5) * grid.voxel_size_m + origin
    palette = label_map.colorize(np.arange(256)).astype(np.uint32)
    out["rgb"] = ((palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2])[ids]
    out["label"] = ids
    if confidence is not None:
        out["confidence"] = confidence.reshape(-1)[index].astype(np.float32) / 255.0
    return out
