"""Predictions <-> rclpy messages: numpy first, message objects only at the edge.

The heavy, ROS-free parts live in :mod:`monoocc_ros.msgs` (occupied voxel extraction, the grid's
field values, the marker cubes and their CDR bytes); this module only wraps their results in
rclpy objects. Those are filled with ``bytes`` because assigning numpy arrays to ``uint8[]``
fields is about 50x slower in rclpy.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from monoocc_ros.camera import check_rigid
from monoocc_ros.grid import VoxelGrid
from monoocc_ros.labels import LabelMap
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.msgs.grid import grid_fields
from monoocc_ros.stamps import split_ns, stamp_to_ns
from monoocc_ros.transforms import matrix_from_translation_quaternion

__all__ = [
    "stamp_to_ns",
    "ns_to_stamp",
    "grid_to_msg",
    "cloud_to_msg",
    "matrix_from_translation_quaternion",
    "static_transform_from_params",
]


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds -> rclpy ``builtin_interfaces/Time`` (the reverse of :func:`stamp_to_ns`)."""
    sec, nanosec = split_ns(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


def cloud_to_msg(points: np.ndarray, stamp: Time, frame_id: str) -> PointCloud2:
    """A structured array from :func:`monoocc_ros.msgs.cloud.occupied_voxels` -> unorganised PointCloud2."""
    datatypes = {"<f4": PointField.FLOAT32, "<u4": PointField.UINT32, "|u1": PointField.UINT8}
    fields = []
    for name in points.dtype.names:
        dtype, offset = points.dtype.fields[name][:2]
        # RViz colours points from a FLOAT32 "rgb" field holding the packed bits.
        datatype = PointField.FLOAT32 if name == "rgb" else datatypes[dtype.str]
        fields.append(PointField(name=name, offset=offset, datatype=datatype, count=1))
    msg = PointCloud2()
    msg.header = Header(stamp=stamp, frame_id=frame_id)
    msg.height = 1
    msg.width = int(points.size)
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = points.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = points.tobytes()
    return msg


def grid_to_msg(
    labels: np.ndarray,
    confidence: np.ndarray | None,
    grid: VoxelGrid,
    label_map: LabelMap,
    stamp: Time,
    frame_id: str,
) -> SemanticOccupancyGrid:
    """(X, Y, Z) uint8 train ids (+ optional uint8 confidence) -> SemanticOccupancyGrid."""
    f = grid_fields(labels, confidence, grid, label_map.names)
    msg = SemanticOccupancyGrid()
    msg.header = Header(stamp=stamp, frame_id=frame_id)
    origin = Pose()
    origin.position.x, origin.position.y, origin.position.z = f.origin_xyz
    origin.orientation.w = 1.0
    msg.origin = origin
    msg.resolution = f.resolution
    msg.size_x, msg.size_y, msg.size_z = f.size
    msg.labels = f.labels.tobytes()
    if confidence is not None:
        msg.confidence = f.confidence.tobytes()
    msg.class_names = f.class_names
    return msg


def static_transform_from_params(translation, rotation_xyzw, matrix) -> np.ndarray:
    """The static camera-from-grid transform from its parameters.

    Args:
        translation: (3,) metres; used with ``rotation_xyzw`` when ``matrix`` is empty.
        rotation_xyzw: (4,) unit quaternion.
        matrix: empty, or 16 values of the row-major (4, 4) matrix (wins when given).

    Raises:
        ValueError: wrong length, non-unit quaternion or non-rigid matrix.
    """
    if len(matrix):
        if len(matrix) != 16:
            raise ValueError(f"static_T_cam_grid.matrix needs 16 values, got {len(matrix)}")
        return check_rigid(np.asarray(matrix, dtype=np.float64).reshape(4, 4), name="static_T_cam_grid.matrix")
    return matrix_from_translation_quaternion(translation, rotation_xyzw)
