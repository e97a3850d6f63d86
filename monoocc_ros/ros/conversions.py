"""Predictions <-> ROS messages: numpy first, message objects only at the edge.

The heavy parts (occupied voxel extraction, the PointCloud2 buffer, label bytes, marker
points) are numpy; message objects are filled with ``bytes`` because assigning numpy arrays
to ``uint8[]`` fields is about 50x slower in rclpy.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from monoocc_ros.camera import CameraInfoError, CameraInfoReader, CameraInfoSizeError, check_rigid
from monoocc_ros.grid import VoxelGrid
from monoocc_ros.labels import LabelMap
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.ros.cdr import CubeList
from monoocc_ros.stamps import split_ns, stamp_to_ns
from monoocc_ros.transforms import matrix_from_translation_quaternion

__all__ = [
    "CameraInfoError",
    "CameraInfoSizeError",
    "stamp_to_ns",
    "ns_to_stamp",
    "occupied_voxels",
    "grid_to_msg",
    "cloud_to_msg",
    "class_cubes",
    "camera_info_to_K",
    "matrix_from_translation_quaternion",
    "static_transform_from_params",
]


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds -> rclpy ``builtin_interfaces/Time`` (the reverse of :func:`stamp_to_ns`)."""
    sec, nanosec = split_ns(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


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


def cloud_to_msg(points: np.ndarray, stamp: Time, frame_id: str) -> PointCloud2:
    """A structured array from :func:`occupied_voxels` -> unorganised PointCloud2."""
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
    if labels.shape != grid.size:
        raise ValueError(f"labels have shape {labels.shape}, the grid is {grid.size}")
    msg = SemanticOccupancyGrid()
    msg.header = Header(stamp=stamp, frame_id=frame_id)
    origin = Pose()
    origin.position.x, origin.position.y, origin.position.z = (float(v) for v in grid.origin_m)
    origin.orientation.w = 1.0
    msg.origin = origin
    msg.resolution = float(grid.voxel_size_m)
    msg.size_x, msg.size_y, msg.size_z = (int(n) for n in grid.size)
    msg.labels = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
    if confidence is not None:
        msg.confidence = np.ascontiguousarray(confidence, dtype=np.uint8).tobytes()
    msg.class_names = list(label_map.names)
    return msg


def class_cubes(
    points: np.ndarray, grid: VoxelGrid, label_map: LabelMap, *, alpha: float = 1.0, max_points: int = 0
) -> list[CubeList]:
    """One CUBE_LIST per class present in ``points`` (from :func:`occupied_voxels`).

    Args:
        points: (P,) structured voxel centres with labels.
        alpha: marker transparency in [0, 1].
        max_points: cap on the cubes of all markers together (0 = no cap). Above it each class
            is subsampled evenly to its share of the cap, keeping at least one cube, so rare
            classes stay visible (the total may exceed the cap by up to one cube per class).

    Returns:
        Markers with ``ns`` = class name, id = train id, class colour, voxel-sized cubes.
    """
    # Group by class with one stable sort instead of one mask per class.
    labels = points["label"]
    order = np.argsort(labels, kind="stable")
    xyz = np.empty((labels.size, 3), np.float64)
    xyz[:, 0], xyz[:, 1], xyz[:, 2] = points["x"][order], points["y"][order], points["z"][order]
    counts = np.bincount(labels, minlength=256)
    ends = np.cumsum(counts)
    scale = max_points / labels.size if max_points and labels.size > max_points else 1.0
    cubes = []
    for class_id in np.flatnonzero(counts):
        count = int(counts[class_id])
        start = int(ends[class_id]) - count
        keep = max(1, int(count * scale))
        # Even stride over the class's voxels (flat grid order, so spread over the scene).
        rows = start + (np.arange(keep) * count) // keep
        r, g, b = (float(c) / 255.0 for c in label_map.colors_rgb[class_id])
        cubes.append(
            CubeList(
                ns=label_map.names[class_id],
                marker_id=int(class_id),
                points=xyz[rows] if keep < count else xyz[start : start + count],
                scale_m=float(grid.voxel_size_m),
                rgba=(r, g, b, float(alpha)),
            )
        )
    return cubes


def camera_info_to_K(
    info: CameraInfo,
    image_hw: tuple[int, int],
    *,
    topic: str = "camera_info",
    image_frame_id: str | None = None,
    reader: CameraInfoReader | None = None,
) -> np.ndarray:
    """Intrinsics of ``info`` for the image they come with, by the one camera rule of
    :class:`monoocc_ros.camera.CameraInfoReader` (P when set, else K; checks and warnings there).

    Raises:
        CameraInfoError: the reason (size, binning, ROI, distortion model, bounds, frame_id).
    """
    reader = reader if reader is not None else CameraInfoReader(topic)
    return reader.intrinsics(info, image_hw, image_frame_id)


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
