"""The node over real rclpy/Fast DDS with the real Predictor (tiny model, random weights).

CPU inference of even the tiny model takes seconds here, so the tests run as few frames as
possible; bad inputs are rejected before inference and cost nothing.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.ros.diagnostics import process_memory_mb
from monoocc_ros.ros.node import NODE_NAME, MonoOccNode
from monoocc_ros.ros.conversions import matrix_from_translation_quaternion
from monoocc_ros.ros.param_table import DEFAULT_STATIC_ROTATION_XYZW
from ros_spin import spinning

ROOT = Path(__file__).resolve().parents[2]
H, W = 64, 192
K = np.array([[120.0, 0.0, W / 2], [0.0, 120.0, H / 2], [0.0, 0.0, 1.0]])
WAIT_S = 120.0  # one CPU inference of the tiny model takes seconds on a loaded 2-core machine
MARKER_CAP = 20_000
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _image():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _image_msg(rgb, stamp_ns, encoding="rgb8"):
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera_optical"
    return msg


def _info_msg(k=K, hw=(H, W)):
    return CameraInfo(height=hw[0], width=hw[1], k=[float(v) for v in np.ravel(k)], distortion_model="plumb_bob")


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


_HARNESS_IDS = itertools.count()


class Harness:
    """The node under test plus a tester node that feeds it and records its outputs."""

    def __init__(self, checkpoint: Path):
        import rclpy

        # A name of its own: rcl routes a node's log records to /rosout by logger (node) name, and a
        # same-named node of another module on this xdist worker would share, then drop, that route.
        self.name = f"{NODE_NAME}_h{next(_HARNESS_IDS)}"
        self.node = MonoOccNode(
            node_name=self.name,
            parameter_overrides=[
                Parameter("checkpoint_path", value=str(checkpoint)),
                Parameter("config_name", value="tiny"),
                Parameter("device", value="cpu"),
                Parameter("precision", value="fp32"),
                Parameter("warmup_image_size", value=[0, 0]),
                Parameter("input_qos", value="reliable"),
                Parameter("cloud_rate_hz", value=100.0),
                Parameter("markers_rate_hz", value=30.0),
                Parameter("markers_max_voxels", value=MARKER_CAP),
            ]
        )
        self.tester = rclpy.create_node(f"{self.name}_tester")
        base = f"/{self.name}"
        self.image_pub = self.tester.create_publisher(Image, f"{base}/input/image", RELIABLE)
        self.info_pub = self.tester.create_publisher(CameraInfo, f"{base}/input/camera_info", RELIABLE)
        self.grids: list[SemanticOccupancyGrid] = []
        self.clouds: list[PointCloud2] = []
        self.markers: list[MarkerArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.logs: list[Log] = []
        sub = self.tester.create_subscription
        sub(SemanticOccupancyGrid, f"{base}/output/occupancy", self.grids.append, RELIABLE)
        sub(PointCloud2, f"{base}/output/occupied_voxels", self.clouds.append, RELIABLE)
        sub(MarkerArray, f"{base}/output/markers", self.markers.append, RELIABLE)
        sub(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        sub(Log, "/rosout", self.logs.append, QoSProfile(depth=100))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def wait(self, condition, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(condition())

    def connect(self) -> None:
        """Wait until the node's endpoints see the tester's (DDS discovery)."""
        assert self.wait(
            lambda: self.image_pub.get_subscription_count() == 1
            and self.info_pub.get_subscription_count() == 1
            and self.node._pubs["markers"].get_subscription_count() == 1
            and self.node._pubs["occupancy"].get_subscription_count() == 1
        ), "node and tester did not discover each other"

    def send(self, rgb, stamp_ns, info=None, encoding="rgb8"):
        self.info_pub.publish(info if info is not None else _info_msg())
        time.sleep(0.05)  # CameraInfo first, as a driver does
        self.image_pub.publish(_image_msg(rgb, stamp_ns, encoding))

    def close(self):
        self.executor.shutdown()
        self.spinner.join(timeout=10)
        self.node.trigger_deactivate()
        self.node.destroy_node()
        self.tester.destroy_node()


@pytest.fixture(scope="module")
def harness(ros_domain, tiny_checkpoint):
    h = Harness(tiny_checkpoint)
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h.connect()
    yield h
    h.close()


@pytest.fixture(scope="module")
def reference_labels(tiny_checkpoint):
    """What the Predictor alone says for the test image with the node's static extrinsic."""
    from monoocc_ros.predictor import Predictor

    T = matrix_from_translation_quaternion([0, 0, 0], DEFAULT_STATIC_ROTATION_XYZW)
    return Predictor.from_checkpoint(tiny_checkpoint).predict(_image(), K, T).labels


def test_image_in_grid_cloud_and_markers_out_with_input_stamp(harness, reference_labels):
    stamp_ns = 1_700_000_000_123_456_789
    harness.send(_image(), stamp_ns)
    def done():
        return any(_stamp_ns(m.markers[0].header) == stamp_ns for m in harness.markers)

    assert harness.wait(done, WAIT_S), f"no markers; node stats {vars(harness.node.stats)}"
    grid = next(g for g in harness.grids if _stamp_ns(g.header) == stamp_ns)
    cloud = next(c for c in harness.clouds if _stamp_ns(c.header) == stamp_ns)
    markers = next(m for m in harness.markers if _stamp_ns(m.markers[0].header) == stamp_ns)
    assert grid.header.frame_id == cloud.header.frame_id == "velodyne"
    assert all(m.header.frame_id == "velodyne" and _stamp_ns(m.header) == stamp_ns for m in markers.markers)

    labels = np.frombuffer(bytes(grid.labels), np.uint8).reshape(grid.size_x, grid.size_y, grid.size_z)
    assert np.array_equal(labels, reference_labels)

    occupied = (reference_labels != 0) & (reference_labels != 255)
    assert cloud.width == occupied.sum()
    names = [f.name for f in cloud.fields]
    assert names[:5] == ["x", "y", "z", "rgb", "label"]
    points = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.width, cloud.point_step)
    cloud_labels = points[:, [f.offset for f in cloud.fields if f.name == "label"][0]]
    assert np.array_equal(np.sort(cloud_labels), np.sort(reference_labels[occupied]))

    assert markers.markers[0].action == Marker.DELETEALL
    present = sorted(set(np.unique(reference_labels[occupied]).tolist()))
    assert [m.id for m in markers.markers[1:]] == present
    assert [m.ns for m in markers.markers[1:]] == [SEMANTIC_KITTI.names[i] for i in present]
    cubes = sum(len(m.points) for m in markers.markers[1:])
    if occupied.sum() <= MARKER_CAP:
        assert cubes == occupied.sum()
    else:  # capped: each class keeps its share of the cap, at least one cube
        assert MARKER_CAP // 2 <= cubes <= MARKER_CAP + len(present)


@pytest.mark.parametrize(
    "case, cause, expected",
    [
        ("unsupported_encoding", "bad_image", "unsupported image encoding '16UC1'"),
        ("size_mismatch", "size_mismatch", f"CameraInfo size 320x100 differs from the image size {W}x{H}"),
        ("k_zeros", "bad_camera_info", "non-positive focal length"),
        ("tiny_image", "bad_input", "too small"),
    ],
)
def test_bad_input_is_rejected_with_one_clear_warning(harness, case, cause, expected):
    before = harness.node.stats.rejected[cause]
    stamp_ns = 2_000_000_000 + len(harness.logs)
    if case == "unsupported_encoding":
        harness.send(_image(), stamp_ns, encoding="16UC1")
    elif case == "size_mismatch":
        harness.send(_image(), stamp_ns, info=_info_msg(hw=(100, 320)))
    elif case == "k_zeros":
        harness.send(_image(), stamp_ns, info=_info_msg(k=np.zeros((3, 3))))
    else:
        one = np.array([[[1, 2, 3]]], np.uint8)
        harness.send(one, stamp_ns, info=_info_msg(k=[[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]], hw=(1, 1)))
    assert harness.wait(lambda: harness.node.stats.rejected[cause] == before + 1)
    assert expected in harness.node.last_warning[cause]
    assert harness.wait(lambda: any(expected in log.msg for log in harness.logs)), "warning not on /rosout"
    warnings = [log for log in harness.logs if expected in log.msg]
    assert len(warnings) == 1 and warnings[0].level == Log.WARN and "\n" not in warnings[0].msg


def _tiny_node(node_name: str, checkpoint: Path, **params) -> MonoOccNode:
    """An unconfigured node on the tiny checkpoint, no warm-up; ``params`` set further parameters."""
    values = {"checkpoint_path": str(checkpoint), "config_name": "tiny", "warmup_image_size": [0, 0], **params}
    return MonoOccNode(node_name=node_name, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def test_compressed_input_over_best_effort_without_camera_info_is_rejected(ros_domain, tiny_checkpoint):
    import rclpy

    # A fresh node (never got CameraInfo) with the default sensor-data QoS and compressed input.
    node = _tiny_node("monoocc_compressed", tiny_checkpoint, config_name="", image_transport="compressed")
    tester = rclpy.create_node("compressed_tester")
    pub = tester.create_publisher(CompressedImage, "/monoocc_compressed/input/image", RELIABLE)
    with spinning(node, tester):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        deadline = time.monotonic() + 20
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        ok, png = cv2.imencode(".png", _image())
        assert ok
        pub.publish(CompressedImage(format="png", data=png.tobytes()))
        while node.stats.rejected["camera_info_missing"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert node.stats.rejected["camera_info_missing"] == 1
        assert "no CameraInfo received yet on /monoocc_compressed/input/camera_info" in node.last_warning[
            "camera_info_missing"
        ]


def test_diagnostics_run_on_wall_time_with_use_sim_time_and_no_clock(ros_domain, tiny_checkpoint):
    import rclpy

    node = _tiny_node("monoocc_sim_time", tiny_checkpoint, use_sim_time=True)
    listener = rclpy.create_node("sim_time_listener")
    statuses = []

    def on_diagnostics(msg):
        statuses.extend(s for s in msg.status if "monoocc_sim_time" in s.name)

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    with spinning(node, listener):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        deadline = time.monotonic() + 20
        while len(statuses) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(statuses) >= 2, "no /diagnostics while /clock is silent"
        values = {v.key: v.value for v in statuses[-1].values}
        assert values["received"] == "0" and values["device"] == "cpu" and float(values["process_memory_mb"]) > 0


def test_diagnostics_tick_during_deactivate_does_not_raise(ros_domain, tiny_checkpoint):
    # The diagnostics timer runs on an executor thread while a lifecycle transition tears the
    # publishers down; an exception there would kill the executor's spin.
    node = _tiny_node("monoocc_diag_race", tiny_checkpoint)
    errors, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            try:
                node._publish_diagnostics()
            except Exception as err:  # noqa: BLE001 - what the executor thread would die of
                errors.append(repr(err))

    ticker = threading.Thread(target=tick, daemon=True)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        ticker.start()
        for _ in range(5):
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            time.sleep(0.05)
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    finally:
        stop.set()
        ticker.join(timeout=10)
        node.destroy_node()
    assert errors == []


def test_burst_of_50_frames_keeps_latest_counts_drops_and_stays_alive(harness, reference_labels, monkeypatch):
    stats = harness.node.stats
    # The bounds below depend on the inference time: control it (at least MIN_INFER_S a frame,
    # whatever the CPU) instead of assuming a slow machine.
    min_infer_s = 0.3
    predict = harness.node.predictor.predict

    def slow_predict(*args, **kwargs):
        start = time.monotonic()
        out = predict(*args, **kwargs)
        time.sleep(max(0.0, min_infer_s - (time.monotonic() - start)))
        return out

    monkeypatch.setattr(harness.node.predictor, "predict", slow_predict)
    # one frame first: the memory bound is about the burst, not the first inference's allocations
    # (run alone, this process's first frame through the node grows RSS by ~300 MB)
    harness.send(_image(), 2_000_000_000)
    assert harness.wait(lambda: any(_stamp_ns(g.header) == 2_000_000_000 for g in harness.grids), WAIT_S)
    memory_before = process_memory_mb()
    received_before, rejected_before, dropped_before = stats.received, stats.total_rejected, stats.dropped
    harness.info_pub.publish(_info_msg())
    time.sleep(0.05)
    stamps = [3_000_000_000 + i * 100_000_000 for i in range(50)]
    rgb = _image()
    # 50 frames at up to 50 Hz: they arrive while inferences run, so the node must drop them.
    # Each is sent once the node took the previous one, so none is lost in the depth-1 queue.
    burst_start = time.monotonic()
    for i, stamp_ns in enumerate(stamps):
        harness.image_pub.publish(_image_msg(rgb, stamp_ns))
        assert harness.wait(lambda: stats.received >= received_before + i + 1, 10.0), vars(stats)
        time.sleep(0.02)
        # the tester keeps every message; an untrained model's cloud is ~36 MB: held clouds would be
        # the test's memory, not the node's
        harness.clouds.clear()
    burst_s = time.monotonic() - burst_start
    last = stamps[-1]
    assert harness.wait(lambda: any(_stamp_ns(g.header) == last for g in harness.grids), WAIT_S)
    def settled():
        return stats.received == stats.processed + stats.dropped + stats.total_rejected + stats.tf_failed

    assert harness.wait(settled), vars(stats)
    received = stats.received - received_before
    assert received == 50
    processed_in_burst = [g for g in harness.grids if _stamp_ns(g.header) in set(stamps)]
    # Latest frame wins: at most one inference per min_infer_s of the burst, plus the one
    # running when it began and the last frame (always processed); all others are drops.
    most = burst_s / min_infer_s + 2
    assert len(processed_in_burst) <= most, (len(processed_in_burst), burst_s)
    assert stats.dropped - dropped_before == received - len(processed_in_burst) >= 50 - most
    assert stats.total_rejected == rejected_before
    labels = np.frombuffer(bytes(harness.grids[-1].labels), np.uint8).reshape(256, 256, 32)
    assert np.array_equal(labels, reference_labels)
    assert process_memory_mb() - memory_before < 200
    def diagnostics_report_drops():
        reports = [{v.key: v.value for v in d.status[0].values} for d in harness.diagnostics]
        return any(int(r["dropped"]) == stats.dropped and r["device"] == "cpu" for r in reports)

    assert harness.wait(diagnostics_report_drops, 5.0)


def test_deactivate_pauses_and_activate_resumes_without_reloading(harness, monkeypatch):
    # ROS 2 lifecycle convention: deactivate stops input and inference; the model and the
    # publishers stay (release_on_deactivate frees the model, see test_node_lifecycle.py).
    import monoocc_ros.ros.node as node_module

    loads = []
    monkeypatch.setattr(node_module, "load_predictor", lambda params: loads.append(params) or None)
    node = harness.node
    predictor, pubs = node.predictor, dict(node._pubs)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.predictor is predictor and node._subs == [] and node._worker is None
    assert harness.wait(lambda: harness.image_pub.get_subscription_count() == 0)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert loads == [] and node.predictor is predictor and node._pubs == pubs
    harness.connect()
    stamp_ns = 4_000_000_000
    harness.send(_image(), stamp_ns)
    assert harness.wait(lambda: any(_stamp_ns(g.header) == stamp_ns for g in harness.grids), WAIT_S)


def test_malformed_ros_arguments_give_a_clear_error(ros_domain):
    # A 4x4 matrix written with integers (..., 0, 0, 0, 1) mixes types: rcl refuses the override.
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain))
    cmd = [sys.executable, "-m", "monoocc_ros.ros.node", "--ros-args", "-p", "static_T_cam_grid.matrix:=[0.5, 1]"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "invalid ROS arguments" in proc.stderr and "static_T_cam_grid.matrix" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_ctrl_c_exits_cleanly_without_traceback(ros_domain, tiny_checkpoint):
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "monoocc_ros.ros.node", "--ros-args",
        "--params-file", str(ROOT / "config" / "monoocc.yaml"),
        "-p", f"checkpoint_path:={tiny_checkpoint}", "-p", "warmup_image_size:=[0, 0]",
        "-p", "tf_timeout_s:=1",  # an integer for a double, as YAML users write it
        "-r", "~/input/image:=/camera/image_raw",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "active: waiting for images on /camera/image_raw" in line:
                break
        assert any("active: waiting for images" in x for x in lines), "".join(lines)
        assert any("tf2_ros is not installed" in x for x in lines) or any("tf2_ros lookups" in x for x in lines)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + out
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_missing_checkpoint_exits_with_a_clear_message(ros_domain, tmp_path):
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain))
    cmd = [
        sys.executable, "-m", "monoocc_ros.ros.node", "--ros-args",
        "--params-file", str(ROOT / "config" / "monoocc.yaml"),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "'checkpoint_path' is required and not set" in output
    assert "Traceback" not in output, output
