"""Message decoders for both ``rosbags`` and rclpy objects (duck-typed: same field names).

Each turns one message into numpy and checks what the readers rely on; the bag index
(:mod:`monoocc_ros.data.bag_io`), the node (camera info) and the live evaluation (grid) use them.
Images are decoded by :func:`monoocc_ros.msgs.image.decode_message`.
"""

from __future__ import annotations

import numpy as np

from monoocc_ros import topics
from monoocc_ros.camera import CameraInfoReader
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.msgs.cloud import LIDAR_POINT_FIELDS, LIDAR_POINT_STEP
from monoocc_ros.transforms import quaternion_to_matrix

__all__ = ["decode_camera_info", "decode_grid", "decode_points", "decode_transform"]


def decode_camera_info(
    msg,
    reader: CameraInfoReader | None = None,
    *,
    image_hw: tuple[int, int] | None = None,
    image_frame_id: str | None = None,
) -> np.ndarray:
    """CameraInfo -> (3, 3) float64 K by the one camera rule (:class:`~monoocc_ros.camera.CameraInfoReader`:
    P when set, else K; its checks and warnings).

    Args:
        msg: the CameraInfo (rosbags or rclpy).
        reader: the reader to use (it warns once per camera); default: a new one for
            :data:`monoocc_ros.topics.CAMERA_INFO`.
        image_hw: size of the image the intrinsics are for (the node: the decoded image); default:
            the size the message states (the bag index checks the images against it later).
        image_frame_id: the image's frame, checked against the message's when given.

    Raises:
        CameraInfoError: what the model cannot honour, with the reason (CameraInfoSizeError for a
            size that differs from ``image_hw``).
    """
    reader = reader if reader is not None else CameraInfoReader(topics.CAMERA_INFO)
    hw = (int(msg.height), int(msg.width)) if image_hw is None else tuple(image_hw)
    return reader.intrinsics(msg, hw, image_frame_id)


def decode_transform(tf) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) float64."""
    T = np.eye(4)
    r = tf.rotation
    T[:3, :3] = quaternion_to_matrix(r.x, r.y, r.z, r.w)
    T[:3, 3] = [tf.translation.x, tf.translation.y, tf.translation.z]
    return T


def decode_points(msg) -> tuple[np.ndarray, np.ndarray]:
    """Converter PointCloud2 -> (P, 4) float32 x, y, z, intensity and (P,) uint32 raw label.

    Raises:
        ValueError: the cloud lacks the expected float32 x, y, z, intensity / uint32 label layout.
    """
    fields = {f.name: (f.offset, f.datatype) for f in msg.fields}
    expected = {n: (4 * i, 7 if i < 4 else 6) for i, n in enumerate(LIDAR_POINT_FIELDS)}
    if (
        any(fields.get(n) != v for n, v in expected.items())
        or msg.point_step != LIDAR_POINT_STEP
        or msg.is_bigendian
    ):
        raise ValueError(
            f"point cloud layout {fields} (step {msg.point_step}) is not x,y,z,intensity,label"
        )
    n = int(msg.width) * int(msg.height)
    if len(msg.data) != n * LIDAR_POINT_STEP:
        raise ValueError(f"point cloud has {len(msg.data)} bytes for {n} points")
    rec = np.asarray(msg.data, dtype=np.uint8).view([("xyzi", "<f4", (4,)), ("label", "<u4")])
    return rec["xyzi"].astype(np.float32), rec["label"].astype(np.uint32)


def decode_grid(msg, grid: VoxelGrid = KITTI_GRID) -> np.ndarray:
    """SemanticOccupancyGrid -> (X, Y, Z) uint8 train ids.

    Raises:
        ValueError: sizes differ from ``grid`` or the label count does not match.
    """
    size = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    if size != grid.size or abs(msg.resolution - grid.voxel_size_m) > 1e-6:
        raise ValueError(
            f"grid {size} @ {msg.resolution} m, expected {grid.size} @ {grid.voxel_size_m} m"
        )
    if len(msg.labels) != grid.num_voxels:
        raise ValueError(f"grid has {len(msg.labels)} labels, expected {grid.num_voxels}")
    return np.asarray(msg.labels, dtype=np.uint8).reshape(size).copy()
