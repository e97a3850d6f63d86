"""The node's outputs: lifecycle publishers, the per-frame messages and /diagnostics.

:class:`NodeOutputs` is mixed into :class:`monoocc_ros.ros.node.MonoOccNode` (it uses the node's
parameters, ``stats`` and ``_pubs``); the node's lifecycle and per-frame input handling stay in
:mod:`monoocc_ros.ros.node`. The grid message goes out every frame; the point cloud and the
markers only at their configured rates and only while someone subscribes, since building them
costs more than the grid.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64, Header
from visualization_msgs.msg import MarkerArray

from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.msgs.cloud import occupied_voxels
from monoocc_ros.msgs.markers import class_cubes, serialize_marker_array
from monoocc_ros.ros.conversions import cloud_to_msg, grid_to_msg, stamp_to_ns
from monoocc_ros.ros.diagnostics import diagnostic_status

__all__ = ["NodeOutputs", "OUTPUT_QOS"]

OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
"""Outputs: depth 1, only the newest matters and they are large (a grid is 2 MB)."""


class NodeOutputs:
    """The output methods of :class:`~monoocc_ros.ros.node.MonoOccNode` (see the module docstring).

    Uses the node's ``params``, ``stats``, ``_pubs`` (name -> publisher), ``_diag_lock`` and the
    monotonic times ``_last_cloud_s`` / ``_last_markers_s`` of the last cloud and markers sent.
    """

    def _create_publishers(self) -> None:
        """Lifecycle publishers (ROS 2 convention): made at configure, publish only while active."""
        pub = self.create_lifecycle_publisher
        self._pubs = {
            "occupancy": pub(SemanticOccupancyGrid, "~/output/occupancy", OUTPUT_QOS),
            "cloud": pub(PointCloud2, "~/output/occupied_voxels", OUTPUT_QOS),
            "markers": pub(MarkerArray, "~/output/markers", OUTPUT_QOS),
            "processing": pub(Float64, "~/debug/processing_time_ms", OUTPUT_QOS),
            "latency": pub(Float64, "~/debug/pipeline_latency_ms", OUTPUT_QOS),
            "diagnostics": pub(DiagnosticArray, "/diagnostics", 10),
        }

    def _publish(self, prediction, stamp, arrived_s: float) -> None:
        p = self.params
        frame = p.grid_frame
        labels, confidence = prediction.labels, prediction.confidence
        self._pubs["occupancy"].publish(grid_to_msg(labels, confidence, KITTI_GRID, SEMANTIC_KITTI, stamp, frame))
        now = time.monotonic()
        cloud_rate = self.get_parameter("cloud_rate_hz").value
        markers_rate = self.get_parameter("markers_rate_hz").value
        want_cloud = (
            cloud_rate > 0
            and now - self._last_cloud_s >= 1.0 / cloud_rate
            and self._pubs["cloud"].get_subscription_count() > 0
        )
        want_markers = (
            markers_rate > 0
            and now - self._last_markers_s >= 1.0 / markers_rate
            and self._pubs["markers"].get_subscription_count() > 0
        )
        if want_cloud or want_markers:
            points = occupied_voxels(labels, confidence, KITTI_GRID, SEMANTIC_KITTI)
            if want_cloud:
                self._last_cloud_s = now
                self._pubs["cloud"].publish(cloud_to_msg(points, stamp, frame))
            if want_markers:
                self._last_markers_s = now
                cubes = class_cubes(
                    points,
                    KITTI_GRID,
                    SEMANTIC_KITTI,
                    alpha=self.get_parameter("markers_alpha").value,
                    max_points=self.get_parameter("markers_max_voxels").value,
                )
                self._pubs["markers"].publish(serialize_marker_array(stamp_to_ns(stamp), frame, cubes))
        processing_ms = (time.monotonic() - arrived_s) * 1e3
        latency_ms = (self.get_clock().now().nanoseconds - stamp_to_ns(stamp)) / 1e6
        self._pubs["processing"].publish(Float64(data=processing_ms))
        self._pubs["latency"].publish(Float64(data=latency_ms))
        self.stats.on_processed(processing_ms, latency_ms)

    def _publish_diagnostics(self) -> None:
        with self._diag_lock:
            pub = self._pubs.get("diagnostics")
            if self.params is not None and pub is not None:
                pub.publish(self._diagnostics())

    def _diagnostics(self) -> DiagnosticArray:
        p = self.params
        device_mb = None
        if p.device.startswith("cuda"):
            import torch

            device_mb = torch.cuda.memory_allocated(p.device) / 2**20
        status = diagnostic_status(
            f"{self.get_name()}: semantic occupancy",
            self.get_fully_qualified_name(),
            self.stats,
            self.get_parameter("processing_budget_ms").value,
            p.device,
            device_mb,
            backend=p.backend,
        )
        return DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
