"""The node's semantic map over real rclpy: pose from nav_msgs/Odometry (tf2_ros is not
installed here), map grid, map cloud and costmap in the odom frame."""

from __future__ import annotations

import time

import numpy as np
import pytest
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from monoocc_ros.labels import IGNORE
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.ros.node import MonoOccNode
from ros_spin import spinning

NAME = "monoocc_map"
H, W = 64, 192
K = [120.0, 0.0, W / 2, 0.0, 120.0, H / 2, 0.0, 0.0, 1.0]
WAIT_S = 120.0
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SIZE = [128, 128, 32]


def _stamp(msg, ns: int):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)


@pytest.fixture(scope="module")
def rig(ros_domain, tiny_checkpoint):
    import rclpy

    values = {
        "checkpoint_path": str(tiny_checkpoint), "config_name": "tiny", "device": "cpu", "precision": "fp32",
        "warmup_image_size": [0, 0], "input_qos": "reliable", "map.enabled": True, "map.size": SIZE,
        "map.grid_rate_hz": 30.0, "map.cloud_rate_hz": 30.0, "map.costmap_rate_hz": 30.0,
    }
    node = MonoOccNode(node_name=NAME, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    tester = rclpy.create_node("map_tester")
    out = {"grid": [], "cloud": [], "costmap": []}
    sub = tester.create_subscription
    sub(SemanticOccupancyGrid, f"/{NAME}/output/map/occupancy", out["grid"].append, RELIABLE)
    sub(PointCloud2, f"/{NAME}/output/map/occupied_voxels", out["cloud"].append, RELIABLE)
    sub(OccupancyGrid, f"/{NAME}/output/map/costmap", out["costmap"].append, RELIABLE)
    pubs = {
        "image": tester.create_publisher(Image, f"/{NAME}/input/image", RELIABLE),
        "info": tester.create_publisher(CameraInfo, f"/{NAME}/input/camera_info", RELIABLE),
        "odom": tester.create_publisher(Odometry, f"/{NAME}/input/odom", RELIABLE),
    }
    with spinning(node, tester):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            all(p.get_subscription_count() == 1 for p in pubs.values())
            and all(p.get_subscription_count() == 1 for p in node._map._pubs.values())
        ):
            time.sleep(0.02)
        yield node, pubs, out


def _send(pubs, stamp_ns: int, x: float | None):
    """Odometry at (x, 0, 1.73) (None: none) and an image with the same stamp."""
    if x is not None:
        odom = Odometry()
        _stamp(odom, stamp_ns)
        odom.header.frame_id, odom.child_frame_id = "odom", "velodyne"
        odom.pose.pose.position.x, odom.pose.pose.position.z = x, 1.73
        odom.pose.pose.orientation.w = 1.0
        pubs["odom"].publish(odom)
    pubs["info"].publish(CameraInfo(height=H, width=W, k=K, distortion_model="plumb_bob"))
    time.sleep(0.1)
    rng = np.random.default_rng(5)
    image = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=rng.integers(0, 256, H * W * 3, dtype=np.uint8).tobytes())
    _stamp(image, stamp_ns)
    image.header.frame_id = "camera_optical"
    pubs["image"].publish(image)


def _wait(condition, timeout_s=WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_map_outputs_in_the_odom_frame_follow_the_odometry(rig):
    node, pubs, out = rig
    _send(pubs, 1_000_000_000, 0.0)
    assert _wait(lambda: out["grid"] and out["costmap"] and out["cloud"]), f"fused {node._map.fused}"
    grid, cloud, costmap = out["grid"][-1], out["cloud"][-1], out["costmap"][-1]
    assert grid.header.frame_id == cloud.header.frame_id == costmap.header.frame_id == "odom"
    assert [grid.size_x, grid.size_y, grid.size_z] == SIZE
    labels = np.frombuffer(bytes(grid.labels), np.uint8)
    assert (labels != IGNORE).any() and (labels == IGNORE).any()  # seen and never-seen voxels
    assert grid.origin.position.x == pytest.approx(-SIZE[0] // 2 * 0.2)
    assert (costmap.info.width, costmap.info.height) == (SIZE[0], SIZE[1])
    cells = np.frombuffer(bytes(costmap.data), np.int8)
    assert set(np.unique(cells)) <= {-1, 0, 100} and (cells == -1).any() and (cells != -1).any()
    assert cloud.width == ((labels != 0) & (labels != IGNORE)).sum()

    # 10 m on: the window moves with the vehicle
    n = len(out["grid"])
    _send(pubs, 1_100_000_000, 10.0)
    assert _wait(lambda: len(out["grid"]) > n)
    assert out["grid"][-1].origin.position.x == pytest.approx(10.0 - SIZE[0] // 2 * 0.2)
    assert node._map.fused == 2


def test_frame_without_odometry_is_counted_and_named(rig):
    node, pubs, _ = rig
    before = node._map.no_pose
    _send(pubs, 5_000_000_000, None)
    assert _wait(lambda: node._map.no_pose == before + 1)
    assert f"nav_msgs/Odometry on /{NAME}/input/odom" in node.last_warning["map_pose"]
