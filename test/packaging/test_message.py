"""The generated SemanticOccupancyGrid from the colcon install: CDR round trip and real DDS transport."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest
import rclpy
from rclpy.serialization import deserialize_message, serialize_message

from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.msg import SemanticOccupancyGrid


def make_grid_message(seed: int = 0) -> tuple[SemanticOccupancyGrid, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 20, KITTI_GRID.num_voxels, dtype=np.uint8)
    labels[rng.random(labels.size) < 0.1] = SemanticOccupancyGrid.UNKNOWN
    confidence = rng.integers(0, 256, KITTI_GRID.num_voxels, dtype=np.uint8)
    msg = SemanticOccupancyGrid(labels=labels.tobytes(), confidence=confidence.tobytes())
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 123_456_789
    msg.header.frame_id = "velodyne"
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = KITTI_GRID.origin_m
    msg.origin.orientation.w = 1.0
    msg.resolution = KITTI_GRID.voxel_size_m
    msg.size_x, msg.size_y, msg.size_z = KITTI_GRID.size
    msg.class_names = list(SEMANTIC_KITTI.names)
    return msg, labels, confidence


def assert_grid_equal(msg: SemanticOccupancyGrid, labels: np.ndarray, confidence: np.ndarray):
    assert np.array_equal(np.frombuffer(bytes(msg.labels), np.uint8), labels)
    assert np.array_equal(np.frombuffer(bytes(msg.confidence), np.uint8), confidence)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert msg.header.frame_id == "velodyne"
    assert (msg.size_x, msg.size_y, msg.size_z) == (256, 256, 32)
    assert msg.resolution == pytest.approx(0.2)
    assert (msg.origin.position.x, msg.origin.position.y, msg.origin.position.z) == pytest.approx(
        (0.0, -25.6, -2.0)
    )
    assert list(msg.class_names) == list(SEMANTIC_KITTI.names)


def test_generated_type_comes_from_colcon_install():
    module_file = SemanticOccupancyGrid.__module__
    import importlib

    path = importlib.import_module(module_file).__file__
    assert f"{os.sep}install{os.sep}monoocc_ros{os.sep}" in path, path


def test_cdr_round_trip_full_grid():
    msg, labels, confidence = make_grid_message()
    data = serialize_message(msg)
    assert len(data) > 2 * KITTI_GRID.num_voxels  # two full uint8 arrays travel
    back = deserialize_message(data, SemanticOccupancyGrid)
    assert_grid_equal(back, labels, confidence)


def test_publish_subscribe_over_fast_dds():
    assert rclpy.get_rmw_implementation_identifier() == "rmw_fastrtps_cpp"
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("grid_transport_test", context=context)
        received: list[SemanticOccupancyGrid] = []
        node.create_subscription(SemanticOccupancyGrid, "grid_test", received.append, 1)
        pub = node.create_publisher(SemanticOccupancyGrid, "grid_test", 1)
        msg, labels, confidence = make_grid_message(seed=1)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline:
            if pub.get_subscription_count() > 0:
                pub.publish(msg)
            executor.spin_once(timeout_sec=0.2)
        assert received, "no SemanticOccupancyGrid arrived over DDS within 20 s"
        assert_grid_equal(received[0], labels, confidence)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_node_executable_launch_and_config_are_installed():
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    exe = os.path.join(get_package_prefix("monoocc_ros"), "lib", "monoocc_ros", "monoocc_node")
    assert os.path.isfile(exe), f"`ros2 run monoocc_ros monoocc_node` would not resolve: {exe} missing"
    assert os.stat(exe).st_mode & stat.S_IXUSR
    share = get_package_share_directory("monoocc_ros")
    assert os.path.isdir(os.path.join(share, "launch"))
    assert os.path.isdir(os.path.join(share, "config"))
