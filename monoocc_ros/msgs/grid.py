"""``monoocc_ros/msg/SemanticOccupancyGrid``: its field values from a label grid, for either library.

The converter builds the message as a ``rosbags`` object
(:func:`monoocc_ros.msgs.bag_messages.grid_message`), the node as an rclpy object
(:func:`monoocc_ros.ros.conversions.grid_to_msg`); both fill it from :func:`grid_fields`, so the
origin convention (grid minimum corner, identity orientation), the flat order and the checks
live here once. :func:`monoocc_ros.msgs.decode.decode_grid` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monoocc_ros.grid import VoxelGrid

__all__ = ["GridFields", "grid_fields"]


@dataclass(frozen=True)
class GridFields:
    """The values of a SemanticOccupancyGrid except its header.

    Attributes:
        origin_xyz: position of the grid's minimum corner in the header frame (m); the
            orientation is the identity.
        resolution: voxel edge (m).
        size: (X, Y, Z) voxel counts.
        labels: (X * Y * Z,) uint8 train ids, flat C order of (X, Y, Z).
        confidence: (X * Y * Z,) uint8 probability * 255, or (0,) when not given.
        class_names: the name of every label value.
    """

    origin_xyz: tuple[float, float, float]
    resolution: float
    size: tuple[int, int, int]
    labels: np.ndarray
    confidence: np.ndarray
    class_names: list[str]


def grid_fields(
    labels: np.ndarray, confidence: np.ndarray | None, grid: VoxelGrid, class_names
) -> GridFields:
    """(X, Y, Z) uint8 train ids (+ optional uint8 confidence of as many voxels) -> the message's values.

    Raises:
        ValueError: ``labels`` do not have the grid's shape, or ``confidence`` not its voxel count.

    Example:
        >>> from monoocc_ros.grid import VoxelGrid
        >>> g = VoxelGrid(size=(2, 2, 1), voxel_size_m=0.5, origin_m=(0.0, -0.5, -1.0))
        >>> f = grid_fields(np.ones((2, 2, 1), np.uint8), None, g, ["empty", "car"])
        >>> f.origin_xyz, f.size, f.labels.tolist(), f.confidence.size
        ((0.0, -0.5, -1.0), (2, 2, 1), [1, 1, 1, 1], 0)
    """
    if labels.shape != grid.size:
        raise ValueError(f"labels have shape {labels.shape}, the grid is {grid.size}")
    if confidence is not None and confidence.size != grid.num_voxels:
        raise ValueError(f"confidence has {confidence.size} values, the grid {grid.num_voxels} voxels")
    return GridFields(
        origin_xyz=tuple(float(v) for v in grid.origin_m),
        resolution=float(grid.voxel_size_m),
        size=tuple(int(n) for n in grid.size),
        labels=np.ascontiguousarray(labels, dtype=np.uint8).reshape(-1),
        confidence=(
            np.zeros(0, dtype=np.uint8)
            if confidence is None
            else np.ascontiguousarray(confidence, dtype=np.uint8).reshape(-1)
        ),
        class_names=list(class_names),
    )
