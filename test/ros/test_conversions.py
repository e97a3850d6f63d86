"""Predictions -> grid message, PointCloud2 and per-class cubes; CameraInfo and extrinsic checks."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, PointCloud2

from monoocc_ros.camera import CameraInfoError, CameraInfoSizeError
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.msgs.cloud import occupied_voxels
from monoocc_ros.msgs.decode import decode_camera_info
from monoocc_ros.msgs.markers import class_cubes
from monoocc_ros.ros.conversions import (
    cloud_to_msg,
    grid_to_msg,
    matrix_from_translation_quaternion,
    static_transform_from_params,
)

SMALL = VoxelGrid(size=(4, 3, 2), voxel_size_m=0.5, origin_m=(1.0, -1.0, -2.0))


@pytest.fixture()
def small_labels():
    labels = np.zeros(SMALL.size, np.uint8)
    labels[0, 0, 0] = 9  # road
    labels[3, 2, 1] = 1  # car
    labels[1, 2, 0] = 9
    labels[2, 1, 1] = 255  # unknown: not occupied
    return labels


def test_occupied_voxels_are_centres_with_label_and_colour(small_labels):
    conf = np.full(SMALL.size, 51, np.uint8)
    pts = occupied_voxels(small_labels, conf, SMALL, SEMANTIC_KITTI)
    assert pts.size == 3
    # flat order: (0,0,0), (1,2,0), (3,2,1)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1)
    assert np.allclose(xyz, [[1.25, -0.75, -1.75], [1.75, 0.25, -1.75], [2.75, 0.25, -1.25]])
    assert pts["label"].tolist() == [9, 9, 1]
    r, g, b = SEMANTIC_KITTI.colors_rgb[1].astype(np.uint32)
    assert pts["rgb"][2] == (r << 16) | (g << 8) | b
    assert np.allclose(pts["confidence"], 0.2)
    assert "confidence" not in occupied_voxels(small_labels, None, SMALL, SEMANTIC_KITTI).dtype.names


def test_point_cloud_round_trips_through_cdr(small_labels):
    pts = occupied_voxels(small_labels, None, SMALL, SEMANTIC_KITTI)
    msg = cloud_to_msg(pts, Time(sec=5, nanosec=7), "velodyne")
    back = deserialize_message(serialize_message(msg), PointCloud2)
    assert (back.width, back.height, back.point_step, back.header.frame_id) == (3, 1, pts.dtype.itemsize, "velodyne")
    assert [f.name for f in back.fields] == ["x", "y", "z", "rgb", "label"]
    assert back.fields[3].datatype == 7  # FLOAT32: what RViz's RGB8 transformer reads
    decoded = np.frombuffer(bytes(back.data), dtype=pts.dtype)
    assert np.array_equal(decoded, pts)


def test_grid_message_holds_the_labels_in_flat_order():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, size=KITTI_GRID.size, dtype=np.uint8)
    conf = rng.integers(0, 256, size=KITTI_GRID.size, dtype=np.uint8)
    msg = grid_to_msg(labels, conf, KITTI_GRID, SEMANTIC_KITTI, Time(sec=1, nanosec=2), "velodyne")
    back = deserialize_message(serialize_message(msg), SemanticOccupancyGrid)
    assert (back.size_x, back.size_y, back.size_z) == (256, 256, 32)
    assert back.resolution == pytest.approx(0.2)
    assert (back.origin.position.x, back.origin.position.y, back.origin.position.z) == pytest.approx((0, -25.6, -2))
    got = np.frombuffer(bytes(back.labels), np.uint8).reshape(256, 256, 32)
    assert np.array_equal(got, labels)
    assert np.array_equal(np.frombuffer(bytes(back.confidence), np.uint8).reshape(256, 256, 32), conf)
    assert list(back.class_names) == list(SEMANTIC_KITTI.names)
    with pytest.raises(ValueError, match="shape"):
        grid_to_msg(labels[:10], None, KITTI_GRID, SEMANTIC_KITTI, Time(), "velodyne")


def test_bag_and_node_grid_messages_are_the_same_bytes(small_labels):
    """The converter (rosbags) and the node (rclpy) fill the grid from one grid_fields: same CDR."""
    from monoocc_ros import topics
    from monoocc_ros.msgs.bag_messages import grid_message
    from monoocc_ros.msgs.bagtypes import typestore

    stamp_ns = 1_700_000_000_123_456_789
    node_msg = grid_to_msg(small_labels, None, SMALL, SEMANTIC_KITTI, Time(sec=1_700_000_000, nanosec=123_456_789),
                           "velodyne")
    bag_bytes = bytes(typestore().serialize_cdr(grid_message(small_labels, stamp_ns, SMALL, "velodyne"),
                                                 topics.GRID_MSG_TYPE))
    # rclpy leaves its alignment padding uninitialised: read its bytes back and write them with rosbags
    node_back = typestore().deserialize_cdr(serialize_message(node_msg), topics.GRID_MSG_TYPE)
    assert bytes(typestore().serialize_cdr(node_back, topics.GRID_MSG_TYPE)) == bag_bytes


def test_class_cubes_one_marker_per_present_class(small_labels):
    pts = occupied_voxels(small_labels, None, SMALL, SEMANTIC_KITTI)
    cubes = class_cubes(pts, SMALL, SEMANTIC_KITTI, alpha=0.5)
    assert [(c.ns, c.marker_id, len(c.points)) for c in cubes] == [("car", 1, 1), ("road", 9, 2)]
    assert cubes[0].scale_m == 0.5 and cubes[0].rgba[3] == 0.5
    assert cubes[1].rgba[:3] == pytest.approx(tuple(SEMANTIC_KITTI.colors_rgb[9] / 255.0))
    capped = class_cubes(pts, SMALL, SEMANTIC_KITTI, max_points=2)
    assert [(c.ns, len(c.points)) for c in capped] == [("car", 1), ("road", 1)]


def test_marker_cap_keeps_every_class_and_spreads_the_cubes():
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    labels[:, :, 0] = 9  # 65,536 road voxels
    labels[10, 20, 5] = 1  # one car
    pts = occupied_voxels(labels, None, KITTI_GRID, SEMANTIC_KITTI)
    cubes = class_cubes(pts, KITTI_GRID, SEMANTIC_KITTI, max_points=1000)
    assert [(c.ns, len(c.points)) for c in cubes] == [("car", 1), ("road", 999)]
    road = cubes[1].points
    assert road[:, 0].min() < 1.0 and road[:, 0].max() > 50.0  # spread over the whole grid
    assert len(np.unique(road, axis=0)) == 999


def _info(w, h, k):
    return CameraInfo(width=w, height=h, k=[float(v) for v in k])


def test_camera_info_checks():
    K = [700, 0, 300, 0, 700, 100, 0, 0, 1]
    assert np.allclose(decode_camera_info(_info(640, 200, K), image_hw=(200, 640)), np.reshape(K, (3, 3)))
    with pytest.raises(CameraInfoSizeError, match="size 640x200 differs from the image size 320x100"):
        decode_camera_info(_info(640, 200, K), image_hw=(100, 320))
    with pytest.raises(CameraInfoError, match="focal length"):
        decode_camera_info(_info(640, 200, [0] * 9), image_hw=(200, 640))


def test_static_extrinsic_from_parameters():
    T = static_transform_from_params([1, 2, 3], [0.5, -0.5, 0.5, 0.5], [])
    # grid x (forward) -> camera z, grid y (left) -> camera -x, grid z (up) -> camera -y
    assert np.allclose(T[:3, :3], [[0, -1, 0], [0, 0, -1], [1, 0, 0]])
    assert np.allclose(T[:3, 3], [1, 2, 3])
    assert np.allclose(static_transform_from_params([], [], T.ravel().tolist()), T)
    with pytest.raises(ValueError, match="not unit length"):
        matrix_from_translation_quaternion([0, 0, 0], [1, 1, 0, 0])
    with pytest.raises(ValueError, match="16 values"):
        static_transform_from_params([0, 0, 0], [0, 0, 0, 1], [1.0] * 9)
    with pytest.raises(ValueError, match="not rigid"):
        static_transform_from_params([0, 0, 0], [0, 0, 0, 1], (2 * np.eye(4)).ravel().tolist())
