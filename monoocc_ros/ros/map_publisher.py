"""The node's persistent semantic map: fuse each prediction at its pose, publish map outputs.

A thin ROS shell over :class:`monoocc_ros.mapping.SemanticMap`, created by the node when
``map.enabled`` is true. Per predicted frame the grid's pose in ``map.frame`` at the image
stamp comes from tf2 (``map.frame`` <- ``grid_frame``) where tf2_ros is installed, else from
the newest ``nav_msgs/Odometry`` on ``~/input/odom`` within ``map.odom_tolerance_s`` of the
stamp (its pose taken as the grid frame's: remap an odometry of the grid / base frame). Frames
without a pose are skipped and counted, with a rate-limited warning naming the topic/frames.

Outputs (each only while subscribed, each at most at its rate; the snapshot of the window is
built once per tick for all of them):

* ``~/output/map/occupancy``: SemanticOccupancyGrid of the whole window in ``map.frame``;
* ``~/output/map/occupied_voxels``: PointCloud2 of its occupied voxels (x, y, z, rgb, label,
  confidence) in ``map.frame``;
* ``~/output/map/costmap``: nav_msgs/OccupancyGrid (0 free, 100 obstacle, -1 unknown).
"""

from __future__ import annotations

import bisect
import threading
import time

import numpy as np
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from monoocc_ros.camera import CameraModel
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.mapping import MapConfig, SemanticMap
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.msgs.cloud import occupied_voxels
from monoocc_ros.ros.conversions import (
    cloud_to_msg,
    grid_to_msg,
    matrix_from_translation_quaternion,
    stamp_to_ns,
)
from monoocc_ros.ros.tf import Tf2TransformSource

__all__ = ["MapPublisher", "costmap_to_msg", "map_config_from_node"]

_RELIABLE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
_ODOM_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
ODOM_HISTORY = 400  # poses kept for stamp look-ups (40 s of 10 Hz odometry)


def map_config_from_node(node) -> MapConfig:
    """MapConfig from the node's ``map.*`` parameters (checked by params.check_parameter)."""
    get = lambda name: node.get_parameter(name).value  # noqa: E731
    return MapConfig(
        size=tuple(int(v) for v in get("map.size")),
        drivable_classes=tuple(get("map.drivable_classes")),
        obstacle_band_m=tuple(float(v) for v in get("map.obstacle_band_m")),
        movable_tau_s=float(get("map.movable_tau_s")),
    )


def costmap_to_msg(cells: np.ndarray, grid, stamp, frame_id: str) -> OccupancyGrid:
    """(X, Y) int8 x-major cells -> nav_msgs/OccupancyGrid (row-major, rows along y)."""
    msg = OccupancyGrid()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.info.map_load_time = stamp
    msg.info.resolution = float(grid.voxel_size_m)
    msg.info.width, msg.info.height = int(cells.shape[0]), int(cells.shape[1])
    msg.info.origin.position.x, msg.info.origin.position.y = float(grid.origin_m[0]), float(grid.origin_m[1])
    msg.info.origin.orientation.w = 1.0
    msg.data = np.ascontiguousarray(cells.T, dtype=np.int8).tobytes()
    return msg


class MapPublisher:
    """Owns the map, its pose source and its publishers; see the module docstring.

    Args:
        node: the MonoOcc node (parameters, publishers, clock, logger).
        grid_frame: frame of the predicted grids.
        transforms: the node's transform source; a tf2 one also gives the map pose.
        warn: ``warn(cause, text)``, the node's rate-limited warning.
    """

    def __init__(self, node, grid_frame: str, transforms, warn):
        self.node = node
        self.grid_frame = grid_frame
        self.frame = node.get_parameter("map.frame").value
        self.map = SemanticMap(map_config_from_node(node))
        self._warn = warn
        self._lock = threading.Lock()
        self.fused = 0
        self.no_pose = 0
        self.rejected = 0
        self._last = {"occupancy": -1e9, "cloud": -1e9, "costmap": -1e9}
        self._pubs = {
            "occupancy": node.create_publisher(SemanticOccupancyGrid, "~/output/map/occupancy", _RELIABLE),
            "cloud": node.create_publisher(PointCloud2, "~/output/map/occupied_voxels", _RELIABLE),
            "costmap": node.create_publisher(OccupancyGrid, "~/output/map/costmap", _RELIABLE),
        }
        self._tf = transforms if isinstance(transforms, Tf2TransformSource) else None
        self._odom_stamps: list[int] = []
        self._odom_poses: list[np.ndarray] = []
        self._odom_sub = None
        if self._tf is None:
            self._odom_sub = node.create_subscription(Odometry, "~/input/odom", self._on_odom, _ODOM_QOS)
        self.pose_source = (f"tf2 {self.frame} <- {grid_frame}" if self._tf is not None
                            else f"nav_msgs/Odometry on {node.resolve_topic_name('~/input/odom')}")

    # ---------------------------------------------------------------- pose
    def _on_odom(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        T = matrix_from_translation_quaternion([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            k = bisect.bisect(self._odom_stamps, stamp)
            self._odom_stamps.insert(k, stamp)
            self._odom_poses.insert(k, T)
            del self._odom_stamps[:-ODOM_HISTORY], self._odom_poses[:-ODOM_HISTORY]

    def pose_at(self, stamp, deadline_monotonic_s: float) -> np.ndarray | None:
        """(4, 4) T_map_grid at the image stamp, or None."""
        if self._tf is not None:
            return self._tf.lookup(self.frame, stamp, deadline_monotonic_s)
        tol_ns = int(self.node.get_parameter("map.odom_tolerance_s").value * 1e9)
        want = stamp_to_ns(stamp)
        with self._lock:
            if not self._odom_stamps:
                return None
            k = bisect.bisect(self._odom_stamps, want)
            best = min((i for i in (k - 1, k) if 0 <= i < len(self._odom_stamps)),
                       key=lambda i: abs(self._odom_stamps[i] - want))
            if abs(self._odom_stamps[best] - want) > tol_ns:
                return None
            return self._odom_poses[best].copy()

    # ---------------------------------------------------------------- per frame
    def update(self, prediction, K: np.ndarray, T_cam_grid: np.ndarray, image_hw, stamp, deadline_s: float) -> bool:
        """Fuse one prediction and publish what is due. Returns False when the frame was skipped."""
        T = self.pose_at(stamp, deadline_s)
        if T is None:
            self.no_pose += 1
            self._warn("map_pose", f"map: frame not fused, no pose from {self.pose_source} at the image stamp")
            return False
        try:
            camera = CameraModel(K=K, T_cam_grid=T_cam_grid, image_hw=tuple(image_hw))
            self.map.integrate(prediction.labels, prediction.confidence, T, stamp_to_ns(stamp) * 1e-9, camera)
        except ValueError as err:
            self.rejected += 1
            self._warn("map_input", f"map: frame not fused ({err})")
            return False
        self.fused += 1
        self._publish(stamp)
        return True

    def _due(self, name: str, rate_param: str, now: float) -> bool:
        rate = self.node.get_parameter(rate_param).value
        return rate > 0 and now - self._last[name] >= 1.0 / rate and self._pubs[name].get_subscription_count() > 0

    def _publish(self, stamp) -> None:
        now = time.monotonic()
        due = {
            "occupancy": self._due("occupancy", "map.grid_rate_hz", now),
            "cloud": self._due("cloud", "map.cloud_rate_hz", now),
            "costmap": self._due("costmap", "map.costmap_rate_hz", now),
        }
        if not any(due.values()):
            return
        snap = self.map.snapshot()
        if due["occupancy"]:
            self._last["occupancy"] = now
            self._pubs["occupancy"].publish(
                grid_to_msg(snap.labels, snap.confidence, snap.grid, SEMANTIC_KITTI, stamp, self.frame))
        if due["cloud"]:
            self._last["cloud"] = now
            points = occupied_voxels(snap.labels, snap.confidence, snap.grid, SEMANTIC_KITTI)
            self._pubs["cloud"].publish(cloud_to_msg(points, stamp, self.frame))
        if due["costmap"]:
            self._last["costmap"] = now
            cells, grid = self.map.costmap(snap)
            self._pubs["costmap"].publish(costmap_to_msg(cells, grid, stamp, self.frame))

    def close(self) -> None:
        if self._odom_sub is not None:
            self.node.destroy_subscription(self._odom_sub)
            self._odom_sub = None
        for pub in self._pubs.values():
            self.node.destroy_publisher(pub)
        self._pubs = {}
