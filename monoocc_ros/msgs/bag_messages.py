"""Messages for writing bags without ROS: numpy in, ``rosbags`` message objects out.

The converter writes every topic of :mod:`monoocc_ros.topics` with these builders; the bag
reader decodes them with :mod:`monoocc_ros.msgs.decode`. The node publishes the same message
types through rclpy (:mod:`monoocc_ros.ros.conversions`); what both build alike (the grid's
fields) comes from one function, :func:`monoocc_ros.msgs.grid.grid_fields`.
"""

from __future__ import annotations

import numpy as np

from monoocc_ros import topics
from monoocc_ros.camera import check_sane_intrinsics
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.msgs.bagtypes import typestore
from monoocc_ros.msgs.cloud import LIDAR_POINT_FIELDS, LIDAR_POINT_STEP
from monoocc_ros.msgs.grid import grid_fields
from monoocc_ros.stamps import split_ns
from monoocc_ros.transforms import matrix_to_quaternion

__all__ = [
    "camera_info_message",
    "compressed_image_message",
    "grid_message",
    "image_message",
    "make_header",
    "points_message",
    "tf_message",
]


def make_header(stamp_ns: int, frame_id: str):
    """std_msgs/Header of the stamp (integer nanoseconds) and frame."""
    t = typestore().types
    sec, nanosec = split_ns(stamp_ns)
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def image_message(image: np.ndarray, stamp_ns: int, frame_id: str = topics.CAMERA_FRAME):
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](
        header=make_header(stamp_ns, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=image.reshape(-1),
    )


def compressed_image_message(
    data: bytes, fmt: str, stamp_ns: int, frame_id: str = topics.CAMERA_FRAME
):
    """Encoded bytes (png or jpeg) -> sensor_msgs/CompressedImage."""
    return typestore().types["sensor_msgs/msg/CompressedImage"](
        header=make_header(stamp_ns, frame_id),
        format=fmt,
        data=np.frombuffer(data, dtype=np.uint8),
    )


def camera_info_message(
    K: np.ndarray, image_hw: tuple[int, int], stamp_ns: int, frame_id: str = topics.CAMERA_FRAME
):
    """Rectified pinhole CameraInfo: K, R = I, P = [K | 0], no distortion.

    K must pass the bounds every reader applies (:func:`~monoocc_ros.camera.check_sane_intrinsics`),
    so the converter never writes a CameraInfo that training, evaluation or the node would refuse.
    """
    t = typestore().types
    K = check_sane_intrinsics(K, tuple(image_hw), name="camera_info K")
    P = np.zeros((3, 4))
    P[:, :3] = K
    return t["sensor_msgs/msg/CameraInfo"](
        header=make_header(stamp_ns, frame_id),
        height=image_hw[0],
        width=image_hw[1],
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def tf_message(transforms: list[tuple[str, str, np.ndarray]], stamp_ns: int):
    """[(parent, child, T_parent_child (4, 4))] -> tf2_msgs/TFMessage."""
    t = typestore().types
    out = []
    for parent, child, T in transforms:
        q = matrix_to_quaternion(T[:3, :3])
        out.append(
            t["geometry_msgs/msg/TransformStamped"](
                header=make_header(stamp_ns, parent),
                child_frame_id=child,
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](
                        x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])
                    ),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
                ),
            )
        )
    return t["tf2_msgs/msg/TFMessage"](transforms=out)


def points_message(
    scan: np.ndarray, labels: np.ndarray, stamp_ns: int, frame_id: str = topics.LIDAR_FRAME
):
    """(P, 4) float32 scan + (P,) uint32 raw labels -> PointCloud2 (x, y, z, intensity, label)."""
    t = typestore().types
    field_t = t["sensor_msgs/msg/PointField"]
    rec = np.empty(len(scan), dtype=[("xyzi", "<f4", (4,)), ("label", "<u4")])
    rec["xyzi"] = scan
    rec["label"] = labels
    fields = [
        field_t(
            name=n, offset=4 * i, datatype=field_t.FLOAT32 if i < 4 else field_t.UINT32, count=1
        )
        for i, n in enumerate(LIDAR_POINT_FIELDS)
    ]
    return t["sensor_msgs/msg/PointCloud2"](
        header=make_header(stamp_ns, frame_id),
        height=1,
        width=len(scan),
        fields=fields,
        is_bigendian=False,
        point_step=LIDAR_POINT_STEP,
        row_step=LIDAR_POINT_STEP * len(scan),
        data=rec.view(np.uint8).reshape(-1),
        is_dense=True,
    )


def grid_message(
    labels: np.ndarray,
    stamp_ns: int,
    grid: VoxelGrid = KITTI_GRID,
    frame_id: str = topics.GRID_FRAME,
    *,
    class_names: list[str] | None = None,
):
    """(X, Y, Z) uint8 train ids -> SemanticOccupancyGrid (origin = grid minimum corner).

    ``class_names`` names the label values (default: SemanticKITTI's train classes)."""
    t = typestore().types
    f = grid_fields(labels, None, grid, SEMANTIC_KITTI.names if class_names is None else class_names)
    ox, oy, oz = f.origin_xyz
    return t[topics.GRID_MSG_TYPE](
        header=make_header(stamp_ns, frame_id),
        origin=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=ox, y=oy, z=oz),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        resolution=f.resolution,
        size_x=f.size[0],
        size_y=f.size[1],
        size_z=f.size[2],
        labels=f.labels,
        confidence=f.confidence,
        class_names=f.class_names,
    )
