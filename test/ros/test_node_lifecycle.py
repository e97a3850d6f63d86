"""The node's lifecycle, tf2 path and start-up errors, over real rclpy (issue 15).

tf2_ros is not installed in the pip-only environment: the tf2 lookup path runs here through an
object with the tf2 Buffer API handed to the node (``tf_buffer=``), and the Buffer's
construction through a stand-in ``tf2_ros`` module. Where tf2_ros is installed, the same node
code runs against the real Buffer (see README, "How the node was checked").
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

import monoocc_ros.ros.node as node_module
from monoocc_ros.msg import SemanticOccupancyGrid
from monoocc_ros.ros.conversions import matrix_from_translation_quaternion
from monoocc_ros.ros.diagnostics import process_memory_mb
from monoocc_ros.ros.node import MonoOccNode
from monoocc_ros.ros.param_table import DEFAULT_STATIC_ROTATION_XYZW
from ros_spin import RecordingLogger, spinning

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "config" / "monoocc.yaml"
H, W = 64, 192
K = np.array([[120.0, 0.0, W / 2], [0.0, 120.0, H / 2], [0.0, 0.0, 1.0]])
WAIT_S = 120.0  # one CPU inference of the tiny model takes seconds on a loaded 2-core machine
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# a non-unit quaternion: configure must not look at it while tf2 gives the pose
BAD_STATIC = {"static_T_cam_grid.rotation_xyzw": [0.0, 0.0, 0.0, 2.0]}
TRANSLATION = [0.3, -0.2, 1.1]


class FakeTfBuffer:
    """The part of the tf2 ``Buffer`` API the node uses, over transforms set by the test.

    Like tf2, it has nothing for a frame id with a leading '/'.
    """

    def __init__(self, *args, **kwargs):
        self.made_with = (args, kwargs)
        self.transforms: dict[tuple[str, str, int], TransformStamped] = {}
        self.asked: list[tuple[str, str, int]] = []

    def set(self, target: str, source: str, stamp_ns: int, translation, rotation_xyzw) -> None:
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = target, source
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = translation
        q = tf.transform.rotation
        q.x, q.y, q.z, q.w = rotation_xyzw
        self.transforms[(target, source, stamp_ns)] = tf

    def can_transform(self, target_frame, source_frame, time, timeout=None) -> bool:
        key = (target_frame, source_frame, time.nanoseconds)
        self.asked.append(key)
        return key in self.transforms

    def lookup_transform(self, target_frame, source_frame, time, timeout=None) -> TransformStamped:
        return self.transforms[(target_frame, source_frame, time.nanoseconds)]


def _node(name: str, checkpoint: Path, tf_buffer=None, **params) -> MonoOccNode:
    values = {"checkpoint_path": str(checkpoint), "warmup_image_size": [0, 0], "input_qos": "reliable", **params}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    return MonoOccNode(node_name=name, parameter_overrides=overrides, tf_buffer=tf_buffer)


def _image():
    return np.random.default_rng(5).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _image_msg(rgb, sec: int, nanosec: int = 0, frame_id: str = "camera_optical") -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame_id
    return msg


def _wait(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


# ------------------------------------------------------------------------------------ tf2 path
def test_tf2_buffer_is_made_with_the_node_and_the_static_extrinsic_is_not_checked(
    ros_domain, tiny_checkpoint, monkeypatch
):
    # tf2_ros.Buffer(node=node) follows the node's clock: when /clock jumps back (a looped bag
    # under use_sim_time) it clears itself; a Buffer() without the node keeps the newer data
    # and answers TF_OLD_DATA for the rest of the replay.
    made = {}

    class Buffer(FakeTfBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["buffer"] = self

    class TransformListener:
        def __init__(self, buffer, node, spin_thread=False):
            made["listener"] = (buffer, node)

        def unregister(self):
            made["unregistered"] = True

    tf2_ros = types.ModuleType("tf2_ros")
    tf2_ros.__spec__ = importlib.machinery.ModuleSpec("tf2_ros", None)
    tf2_ros.Buffer, tf2_ros.TransformListener = Buffer, TransformListener
    monkeypatch.setitem(sys.modules, "tf2_ros", tf2_ros)
    node = _node("monoocc_tf2_made", tiny_checkpoint, **BAD_STATIC)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        args, kwargs = made["buffer"].made_with
        assert kwargs.get("node") is node or (len(args) > 1 and args[1] is node), made["buffer"].made_with
        assert made["listener"] == (made["buffer"], node)
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert made.get("unregistered")
    finally:
        node.destroy_node()


def test_tf2_lookup_at_the_image_stamp_with_slash_frames_and_bad_stamps(ros_domain, tiny_checkpoint):
    import rclpy

    from monoocc_ros.predictor import Predictor

    buffer = FakeTfBuffer()
    stamp_sec = 1_700_000_000
    buffer.set("camera_optical", "velodyne", stamp_sec * 10**9, TRANSLATION, DEFAULT_STATIC_ROTATION_XYZW)
    node = _node("monoocc_tf2", tiny_checkpoint, tf_buffer=buffer, grid_frame="/velodyne", **BAD_STATIC)
    tester = rclpy.create_node("tf2_tester")
    image_pub = tester.create_publisher(Image, "/monoocc_tf2/input/image", RELIABLE)
    info_pub = tester.create_publisher(CameraInfo, "/monoocc_tf2/input/camera_info", RELIABLE)
    grids: list[SemanticOccupancyGrid] = []
    tester.create_subscription(SemanticOccupancyGrid, "/monoocc_tf2/output/occupancy", grids.append, RELIABLE)
    stats = node.stats
    with spinning(node, tester):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert _wait(lambda: image_pub.get_subscription_count() == 1 and info_pub.get_subscription_count() == 1)
        assert _wait(lambda: node._pubs["occupancy"].get_subscription_count() == 1)
        info_pub.publish(CameraInfo(height=H, width=W, k=[float(v) for v in K.ravel()], distortion_model="plumb_bob"))
        time.sleep(0.05)
        # no transform at this stamp: dropped after tf_timeout_s and counted, nothing published
        image_pub.publish(_image_msg(_image(), stamp_sec + 7))
        assert _wait(lambda: stats.tf_failed == 1), vars(stats)
        assert ("camera_optical", "velodyne", (stamp_sec + 7) * 10**9) in buffer.asked
        # a negative stamp is a bad input, not an internal error
        image_pub.publish(_image_msg(_image(), -5))
        assert _wait(lambda: stats.rejected["bad_stamp"] == 1), vars(stats)
        assert "negative header.stamp" in node.last_warning["bad_stamp"]
        # a ROS 1 style frame id: looked up as 'camera_optical' at the image stamp
        image_pub.publish(_image_msg(_image(), stamp_sec, frame_id="/camera_optical"))
        assert _wait(lambda: len(grids) == 1, WAIT_S), vars(stats)
        assert stats.rejected["internal_error"] == 0
    grid = grids[0]
    assert (grid.header.stamp.sec, grid.header.frame_id) == (stamp_sec, "velodyne")
    T = matrix_from_translation_quaternion(TRANSLATION, DEFAULT_STATIC_ROTATION_XYZW)
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict(_image(), K, T).labels
    labels = np.frombuffer(bytes(grid.labels), np.uint8).reshape(grid.size_x, grid.size_y, grid.size_z)
    assert np.array_equal(labels, expected)


# ------------------------------------------------------------------------------------ lifecycle
def _count_loads(monkeypatch) -> list:
    loads = []
    real = node_module.load_predictor

    def counting(params):
        loads.append(params.checkpoint_path)
        return real(params)

    monkeypatch.setattr(node_module, "load_predictor", counting)
    return loads


def _output_publishers(node) -> set[str]:
    return {p.topic_name for p in node.publishers if "/output/" in p.topic_name or "/debug/" in p.topic_name}


def test_lifecycle_publishers_live_from_configure_to_cleanup_and_pauses_do_not_reload(
    ros_domain, tiny_checkpoint, monkeypatch
):
    loads = _count_loads(monkeypatch)
    node = _node("monoocc_cycles", tiny_checkpoint)
    try:
        assert _output_publishers(node) == set()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert _output_publishers(node) == {
            "/monoocc_cycles/output/occupancy",
            "/monoocc_cycles/output/occupied_voxels",
            "/monoocc_cycles/output/markers",
            "/monoocc_cycles/debug/processing_time_ms",
            "/monoocc_cycles/debug/pipeline_latency_ms",
        }
        pubs, predictor = dict(node._pubs), node.predictor
        rss = []
        for _ in range(12):
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert node._subs and node._worker is not None
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node._subs == [] and node._worker is None
            rss.append(process_memory_mb())
        # a pause keeps the model and the publishers: no load from disk, nothing re-created
        assert loads == [str(tiny_checkpoint)]
        assert node.predictor is predictor and node._pubs == pubs
        # memory is flat over the cycles (the first two settle allocator caches)
        assert (rss[-1] - rss[2]) / 9 < 0.5, rss
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert _output_publishers(node) == set() and node.predictor is None
    finally:
        node.destroy_node()


def test_release_on_deactivate_frees_the_model_and_activate_reloads_it(ros_domain, tiny_checkpoint, monkeypatch):
    loads = _count_loads(monkeypatch)
    node = _node("monoocc_release", tiny_checkpoint, release_on_deactivate=True)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.predictor is None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.predictor is not None and len(loads) == 2
    finally:
        node.trigger_deactivate()
        node.destroy_node()


def test_model_is_loaded_warmed_up_run_and_released_on_one_thread(ros_domain, tiny_checkpoint, monkeypatch):
    """Every torch call of the model on one thread: a second thread's OpenMP team made the model
    ~40 % slower on two cores (monoocc_ros.model_thread, bench/bench_omp_teams.py)."""
    import threading

    import rclpy

    threads: dict[str, set[int]] = {"load": set(), "warm_up": set(), "predict": set(), "release": set()}

    def recorded(name, fn):
        def wrapper(*args, **kwargs):
            threads[name].add(threading.get_ident())
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(node_module, "load_predictor", recorded("load", node_module.load_predictor))
    monkeypatch.setattr(node_module, "warm_up", recorded("warm_up", node_module.warm_up))
    node = _node("monoocc_one_thread", tiny_checkpoint, warmup_image_size=[H, W], release_on_deactivate=True)
    tester = rclpy.create_node("one_thread_tester")
    image_pub = tester.create_publisher(Image, "/monoocc_one_thread/input/image", RELIABLE)
    info_pub = tester.create_publisher(CameraInfo, "/monoocc_one_thread/input/camera_info", RELIABLE)
    grids: list[SemanticOccupancyGrid] = []
    tester.create_subscription(SemanticOccupancyGrid, "/monoocc_one_thread/output/occupancy", grids.append, RELIABLE)
    # deactivate=False: the block deactivates (which releases the model) itself
    with spinning(node, tester, deactivate=False):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        predictor = node.predictor
        monkeypatch.setattr(predictor, "predict", recorded("predict", predictor.predict))
        monkeypatch.setattr(predictor, "release", recorded("release", predictor.release))
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert _wait(lambda: image_pub.get_subscription_count() == 1 and info_pub.get_subscription_count() == 1)
        assert _wait(lambda: node._pubs["occupancy"].get_subscription_count() == 1)
        info_pub.publish(CameraInfo(height=H, width=W, k=[float(v) for v in K.ravel()], distortion_model="plumb_bob"))
        time.sleep(0.05)
        image_pub.publish(_image_msg(_image(), 1))
        assert _wait(lambda: len(grids) == 1, WAIT_S), vars(node.stats)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS  # releases the model
    assert all(len(idents) == 1 for idents in threads.values()), threads
    model_threads = set().union(*threads.values())
    assert len(model_threads) == 1, threads
    assert threading.get_ident() not in model_threads  # not the thread that triggered the transitions


def test_unexpected_error_in_activate_is_logged_in_one_line(ros_domain, tiny_checkpoint):
    # rclpy turns an exception escaping a transition callback into ERROR without a word
    node = _node("monoocc_activate_error", tiny_checkpoint)
    logger = RecordingLogger()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node.get_logger = lambda: logger

        def boom():
            raise RuntimeError("subscription\nrefused")

        node._create_subscriptions = boom
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert logger.errors == ["activate failed: unexpected RuntimeError: subscription refused"]
        assert node._worker is None
    finally:
        node.destroy_node()


# ------------------------------------------------------------------------------------ start-up
def _bad_config_checkpoint(tiny_checkpoint: Path, path: Path) -> Path:
    import torch

    from monoocc_ros.models.checkpoint import save_checkpoint

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["model_config"]["head"]["num_classes"] = "20"  # the model constructor raises TypeError
    return save_checkpoint(path, payload)


@pytest.mark.parametrize(
    "case, code, needle",
    [
        ("int_for_int_list", 2, "parameter 'warmup_image_size' must be of type integer list, got [0.0, 0.0]"),
        ("dropped_by_rcl", 2, "parameter 'markers_max_voxels' must be of type integer, got 1.5 (type double) from -p"),
        ("out_of_range", 2, "parameter 'cloud_rate_hz' = 500.0 is out of range [0.0, 100.0]"),
        ("misspelt", 1, "unknown parameter 'tf_timout_s' (did you mean 'tf_timeout_s'?)"),
        ("file_unknown_key", 1, "unknown parameter 'markers_rate' (did you mean 'markers_rate_hz'?)"),
        ("file_wrong_type", 2, "parameter 'tf_timeout_s' must be of type double, got 'fast' (type string)"),
        ("bad_model_config", 1, "bad_config.pt': TypeError: "),
        ("bad_device", 1, "device 'gpu0' must be cpu"),
    ],
)
def test_bad_start_up_is_one_line_and_a_non_zero_exit(ros_domain, tiny_checkpoint, tmp_path, case, code, needle):
    checkpoint = tiny_checkpoint
    extra = {
        "int_for_int_list": ["-p", "warmup_image_size:=[0.0, 0.0]"],
        "dropped_by_rcl": ["-p", "markers_max_voxels:=1.5"],
        "out_of_range": ["-p", "cloud_rate_hz:=500.0"],
        "misspelt": ["-p", "tf_timout_s:=0.5"],
        "bad_device": ["-p", "device:=gpu0"],
    }.get(case, [])
    if case.startswith("file_"):
        line = "markers_rate: 2.0" if case == "file_unknown_key" else "tf_timeout_s: fast"
        params = tmp_path / "params.yaml"
        params.write_text(f"/**:\n  ros__parameters:\n    {line}\n")
        extra = ["--params-file", str(params)]
    if case == "bad_model_config":
        checkpoint = _bad_config_checkpoint(tiny_checkpoint, tmp_path / "bad_config.pt")
    # rcl drops (silently) a -p or second-file value whose type differs from the first file's:
    # the type cases run without the shipped file
    shipped = [] if case in ("int_for_int_list", "file_wrong_type") else ["--params-file", str(PARAMS_FILE)]
    cmd = [
        sys.executable, "-m", "monoocc_ros.ros.node", "--ros-args",
        *shipped, "-p", f"checkpoint_path:={checkpoint}", *extra,
    ]  # fmt: skip
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output, output
    lines = [x for x in output.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], output


# ------------------------------------------------------------------------------------ environment
def test_project_environment_lets_the_node_return_memory():
    # TCMALLOC_RELEASE_RATE=0 keeps every freed page: right for a training step, wrong for a
    # node that runs for hours; env.sh (the node's environment) must leave the default.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TCMALLOC_", "LD_PRELOAD"))}
    probe = f'. "{ROOT}/scripts/env.sh" && echo "rate=${{TCMALLOC_RELEASE_RATE-unset}}"'
    done = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "rate=unset"
    assert 'TCMALLOC_RELEASE_RATE="${TCMALLOC_RELEASE_RATE:-0}"' in (ROOT / "scripts" / "run_tests.sh").read_text()
