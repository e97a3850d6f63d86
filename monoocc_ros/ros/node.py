"""The MonoOcc ROS 2 node: camera image + CameraInfo + TF in, semantic occupancy out.

A thin lifecycle shell over :class:`monoocc_ros.predictor.Predictor`:

- configure: read and check parameters, load the checkpoint, warm up, make the (lifecycle)
  publishers;
- activate: subscriptions, diagnostics and the inference thread (the model stays loaded, so
  a pause costs no reload);
- deactivate: stop them; free device memory only with ``release_on_deactivate``;
- cleanup: drop the publishers and the model.

Any failure of a transition is logged as one line naming its cause and returns FAILURE.
The model comes from :mod:`monoocc_ros.ros.model_loading`, the outputs (grid, cloud, markers,
timings, diagnostics) from the :class:`~monoocc_ros.ros.node_outputs.NodeOutputs` mixin; this
module holds the lifecycle, the input callbacks and the per-frame checks.

A light image callback keeps only the newest frame (latest frame wins, replaced frames are
counted as dropped); the model runs on its own thread (:mod:`monoocc_ros.model_thread`), so
every callback (image, CameraInfo, TF, parameters, lifecycle, diagnostics) is short and one
single-threaded executor serves them all (see :func:`main` for why not rclpy's multi-threaded
one). Run with
``ros2 run monoocc_ros monoocc_node --ros-args --params-file config/monoocc.yaml -p checkpoint_path:=...``
or ``python -m monoocc_ros.ros.node`` where ``ros2`` is not installed.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from monoocc_ros.camera import CameraInfoError, CameraInfoReader, CameraInfoSizeError
from monoocc_ros.errors import one_line
from monoocc_ros.model_thread import ModelThread
from monoocc_ros.msgs.decode import decode_camera_info
from monoocc_ros.ros.diagnostics import NodeStats
from monoocc_ros.ros.image import ImageDecodeError, cv_bridge_available, image_msg_to_rgb
from monoocc_ros.ros.model_loading import ModelLoadError, load_predictor, warm_up
from monoocc_ros.ros.node_outputs import NodeOutputs
from monoocc_ros.ros.params import (
    NodeParams,
    ParameterError,
    coerce_parameters,
    declare_parameters,
    dropped_command_line_values,
    normalize_frame_id,
    on_set_parameters,
    read_parameters,
)
from monoocc_ros.ros.tf import StaticTransformSource, TransformSource, make_transform_source, tf2_available

__all__ = ["MonoOccNode", "ModelLoadError", "load_predictor", "main"]

NODE_NAME = "monoocc_node"
WARN_PERIOD_S = 5.0


class MonoOccNode(NodeOutputs, LifecycleNode):
    """Lifecycle node; see the module docstring. Topics are relative, remap them at launch.

    Subscribes ``~/input/image`` (Image, or CompressedImage with image_transport=compressed)
    and ``~/input/camera_info``; publishes ``~/output/occupancy`` (SemanticOccupancyGrid),
    ``~/output/occupied_voxels`` (PointCloud2), ``~/output/markers`` (MarkerArray),
    ``~/debug/processing_time_ms``, ``~/debug/pipeline_latency_ms`` (Float64) and /diagnostics.
    """

    def __init__(
        self, *, node_name: str = NODE_NAME, namespace: str | None = None, parameter_overrides=None, tf_buffer=None
    ):
        """``tf_buffer``: an object with the tf2 Buffer API to take poses from instead of
        tf2_ros (tests). Raises ParameterError (one line) for a value of the wrong type or range."""
        super().__init__(node_name, namespace=namespace, parameter_overrides=parameter_overrides)
        try:
            declare_parameters(self)
        except ParameterError:
            self.destroy_node()
            raise
        self.add_pre_set_parameters_callback(coerce_parameters)
        self.add_on_set_parameters_callback(on_set_parameters)
        self._tf_buffer = tf_buffer
        self.params: NodeParams | None = None
        self.predictor = None
        self.stats = NodeStats()
        self.last_warning: dict[str, str] = {}
        self._warned_at: dict[str, float] = {}
        self._transforms: TransformSource | None = None
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._subs: list = []
        self._pubs: dict[str, object] = {}
        self._diag_timer = None
        # destroy_timer does not wait for a diagnostics callback already running on another
        # executor thread: this lock keeps it from publishing on a publisher being torn down
        self._diag_lock = threading.Lock()
        self._camera_info: CameraInfo | None = None
        self._pending: tuple[Image | CompressedImage, float] | None = None
        self._slot = threading.Condition()
        self._stop = threading.Event()
        # every torch call of the model (load, warm-up, inference, release) runs on this one thread:
        # a second OpenMP team made the model ~40 % slower on two cores (monoocc_ros.model_thread)
        self._model_thread = ModelThread("monoocc_model")
        self._worker: Future | None = None  # the inference loop, running on the model thread
        self._last_cloud_s = -1e9
        self._last_markers_s = -1e9
        self._map = None  # MapPublisher while active with map.enabled (monoocc_ros.ros.map_publisher)

    def destroy_node(self) -> None:
        model_thread = getattr(self, "_model_thread", None)  # absent when __init__ failed early
        if model_thread is not None:
            model_thread.close()
        super().destroy_node()

    # ---------------------------------------------------------------- lifecycle
    def _transition(self, name: str, step, undo) -> TransitionCallbackReturn:
        """Run ``step``; any failure is one error line and FAILURE, after ``undo``.

        rclpy turns an exception escaping a transition callback into ERROR without a word;
        parameter and model errors are expected, anything else is still named here.
        """
        try:
            return step()
        except (ParameterError, ModelLoadError) as err:
            reason = str(err)
        except Exception as err:  # noqa: BLE001 - see the docstring
            reason = f"unexpected {type(err).__name__}: {one_line(err)}"
        try:
            undo()
        except Exception as err:  # noqa: BLE001 - the first error is the one to report
            reason += f" (and undoing it failed: {type(err).__name__}: {err})"
        self.get_logger().error(f"{name} failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure, self._release_all)

    def _configure(self) -> TransitionCallbackReturn:
        uses_tf2 = self._tf_buffer is not None or tf2_available()
        self.params = read_parameters(self, static_extrinsic=not uses_tf2)
        self.predictor = self._load_predictor()
        self._transforms = make_transform_source(
            self, self.params.grid_frame, self.params.static_T_cam_grid, tf_buffer=self._tf_buffer
        )
        self._create_publishers()
        if isinstance(self._transforms, StaticTransformSource):
            self.get_logger().info(
                "tf2_ros is not installed: using the static camera-from-grid extrinsic from "
                f"parameters static_T_cam_grid.* = {self._transforms.T_cam_grid.round(4).tolist()}"
            )
        else:
            self.get_logger().info(f"camera pose from {self._transforms.description}")
        self.get_logger().info(
            f"images via {'cv_bridge' if cv_bridge_available() else 'the built-in converter'}; "
            f"model from {self.params.checkpoint_path} on {self.params.device} ({self.params.precision}), "
            f"backend {self.predictor.backend_name}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("activate", lambda: self._activate(state), lambda: self._undo_activate(state))

    def _activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.predictor is None:  # released on deactivate (release_on_deactivate)
            self.predictor = self._load_predictor()
        self._create_subscriptions()
        super().on_activate(state)  # enables the lifecycle publishers
        self._stop.clear()
        self._worker = self._model_thread.submit(self._inference_loop)
        self.get_logger().info(
            f"active: waiting for images on {self.resolve_topic_name('~/input/image')} "
            f"({self.params.image_transport}, {self.params.input_qos} QoS)"
        )
        return TransitionCallbackReturn.SUCCESS

    def _undo_activate(self, state: LifecycleState) -> None:
        self._stop_activity()
        LifecycleNode.on_deactivate(self, state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activity()
        super().on_deactivate(state)  # lifecycle publishers stop publishing
        if self.get_parameter("release_on_deactivate").value and self.predictor is not None:
            self._model_thread.call(self.predictor.release)
            self.predictor = None
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_all()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activity()
        self._release_all()
        return TransitionCallbackReturn.SUCCESS

    def _load_predictor(self):
        def load_and_warm_up():
            predictor = load_predictor(self.params)
            return predictor, warm_up(predictor, self.params)

        predictor, camera_warmed = self._model_thread.call(load_and_warm_up)
        if not camera_warmed and self.params.warmup_camera_k is not None:
            self.get_logger().warning(
                "warmup_camera_k is not used: it needs warmup_image_size and the static extrinsic "
                "(with tf2_ros the camera pose is known only at the first frame)"
            )
        return predictor

    def _create_subscriptions(self) -> None:
        p = self.params
        # A deep history: a frame the middleware overwrites before the callback takes it would be
        # lost without a trace (depth 1 lost a third of a 10 Hz stream with inference busy); the
        # node itself keeps only the newest and counts what it skips.
        reliability = ReliabilityPolicy.BEST_EFFORT if p.input_qos == "sensor_data" else ReliabilityPolicy.RELIABLE
        in_qos = QoSProfile(depth=p.input_queue_depth, reliability=reliability, history=HistoryPolicy.KEEP_LAST)
        image_type = CompressedImage if p.image_transport == "compressed" else Image
        self._subs = [
            self.create_subscription(
                image_type,
                "~/input/image",
                self._on_image,
                in_qos,
                callback_group=self._input_group,
                event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_message_lost),
            ),
            self.create_subscription(
                CameraInfo, "~/input/camera_info", self._on_camera_info, in_qos, callback_group=self._input_group
            ),
        ]
        # Wall-clock period: with use_sim_time a paused or slow bag must not stop diagnostics.
        self._diag_timer = self.create_timer(
            1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        if self.get_parameter("map.enabled").value and self._map is None:
            from monoocc_ros.ros.map_publisher import MapPublisher

            self._map = MapPublisher(self, p.grid_frame, self._transforms, self._warn)
            self.get_logger().info(f"semantic map in '{self._map.frame}', pose from {self._map.pose_source}")

    def _stop_activity(self) -> None:
        self._stop.set()
        with self._slot:
            self._slot.notify_all()
        if self._worker is not None:
            self._worker.result()  # the loop returns within its 0.5 s wait once _stop is set
            self._worker = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        with self._diag_lock:
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
                self._diag_timer = None
        with self._slot:
            self._pending = None
        if self._map is not None:  # after the worker stopped: it is the map's only writer
            self._map.close()
            self._map = None

    def _release_all(self) -> None:
        with self._diag_lock:
            for pub in self._pubs.values():
                self.destroy_lifecycle_publisher(pub)
            self._pubs = {}
        if self._transforms is not None:
            self._transforms.close()
            self._transforms = None
        if self.predictor is not None:
            self._model_thread.call(self.predictor.release)
            self.predictor = None
        self._camera_info = None
        self.params = None

    # ---------------------------------------------------------------- callbacks
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_message_lost(self, info) -> None:
        # best effort: frames (or fragments of one) that never arrived are counted as drops
        self.stats.on_lost(int(info.total_count_change))

    def _on_image(self, msg) -> None:
        # Only store: inference runs on its own thread and takes the newest frame.
        with self._slot:
            replaced = self._pending is not None
            self._pending = (msg, time.monotonic())
            self.stats.on_received(replaced)
            self._slot.notify()

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            with self._slot:
                self._slot.wait_for(lambda: self._pending is not None or self._stop.is_set(), timeout=0.5)
                item, self._pending = self._pending, None
            if item is None or self._stop.is_set():
                continue
            try:
                self._process(*item)
            except Exception as err:  # noqa: BLE001 - the node must survive any one bad frame
                self._reject("internal_error", f"frame failed unexpectedly ({type(err).__name__}): {err}")

    # ---------------------------------------------------------------- per frame
    def _camera_info_reader(self) -> CameraInfoReader:
        """The node's one CameraInfo reader (monoocc_ros.camera): its distortion warning is given
        once per camera, and ``distorted`` counts the frames it applied to."""
        if getattr(self, "_camera_reader", None) is None:
            topic = self.resolve_topic_name("~/input/camera_info")
            self._camera_reader = CameraInfoReader(topic, warn=lambda text: self.get_logger().warning(text))
        return self._camera_reader

    def _warn(self, cause: str, text: str) -> None:
        self.last_warning[cause] = text
        now = time.monotonic()
        if now - self._warned_at.get(cause, -1e9) >= WARN_PERIOD_S:
            self._warned_at[cause] = now
            self.get_logger().warning(text)

    def _reject(self, cause: str, text: str) -> None:
        self.stats.on_rejected(cause)
        self._warn(cause, f"dropping image: {text}")

    def _process(self, msg, arrived_s: float) -> None:
        p = self.params
        image_topic = self.resolve_topic_name("~/input/image")
        # Image and CameraInfo of one frame arrive in either order: give the first frame's
        # CameraInfo the same bounded wait as its TF.
        deadline_s = arrived_s + self.get_parameter("tf_timeout_s").value
        while self._camera_info is None and time.monotonic() < deadline_s and not self._stop.is_set():
            time.sleep(0.005)
        info = self._camera_info
        if info is None:
            topic = self.resolve_topic_name("~/input/camera_info")
            self._reject("camera_info_missing", f"no CameraInfo received yet on {topic}")
            return
        try:
            image = image_msg_to_rgb(msg)
        except ImageDecodeError as err:
            self._reject("bad_image", f"{image_topic}: {err}")
            return
        try:
            K = decode_camera_info(
                info, self._camera_info_reader(), image_hw=image.shape[:2], image_frame_id=msg.header.frame_id
            )
        except CameraInfoSizeError as err:
            self._reject("size_mismatch", str(err))
            return
        except CameraInfoError as err:
            self._reject("bad_camera_info", str(err))
            return
        if msg.header.stamp.sec < 0:
            # ROS time starts at 0; tf2 and rclpy.Time refuse earlier stamps.
            self._reject("bad_stamp", f"{image_topic}: negative header.stamp ({msg.header.stamp.sec} s)")
            return
        camera_frame = p.camera_frame or normalize_frame_id(msg.header.frame_id)
        if not camera_frame and not isinstance(self._transforms, StaticTransformSource):
            self._reject("no_camera_frame", f"{image_topic}: empty header.frame_id and parameter camera_frame")
            return
        tf_timeout_s = self.get_parameter("tf_timeout_s").value
        T_cam_grid = self._transforms.lookup(camera_frame, msg.header.stamp, arrived_s + tf_timeout_s)
        if T_cam_grid is None:
            self.stats.on_tf_failed()
            self._warn(
                "tf",
                f"dropping image: no transform {p.grid_frame} -> '{camera_frame}' at the image stamp "
                f"within tf_timeout_s={tf_timeout_s}",
            )
            return
        try:
            prediction = self.predictor.predict(image, K, T_cam_grid)
        except ValueError as err:
            self._reject("bad_input", f"{image_topic}: {err}")
            return
        self._publish(prediction, msg.header.stamp, arrived_s)
        if self._map is not None:  # after the frame's own outputs, so the map adds no latency to them
            self._map.update(prediction, K, T_cam_grid, image.shape[:2], msg.header.stamp, arrived_s + tf_timeout_s)

def main(args: list[str] | None = None) -> int:
    """Entry point: ``monoocc_node``; Ctrl-C shuts down cleanly with exit code 0.

    Exit codes: 0 after Ctrl-C, 1 when configure or activate fails (its one error line is
    logged), 2 for bad ROS arguments or a parameter of the wrong type or range (one line).
    """
    try:
        rclpy.init(args=args)
    except _rclpy.RCLError as err:
        # Malformed --ros-args (e.g. a parameter override of mixed types) land here.
        print(f"monoocc_node: invalid ROS arguments: {err}", file=sys.stderr)
        return 2
    node = None
    # Not rclpy's MultiThreadedExecutor: its spin loop hands each ready callback to a worker pool
    # and, while that callback still waits in the pool's queue, yields it again and returns at once
    # instead of waiting (ros2/rclpy#1452, fixed after Jazzy by #1547). The spinning thread then
    # holds the GIL that the queued workers need, and with the model busy on both cores image
    # callbacks ran hundreds of milliseconds late, several frames at once, so all but the newest
    # were dropped (bench/bench_node_replay.py --executor multi). Every callback here is short,
    # so one thread serves them all.
    executor = SingleThreadedExecutor()
    code = 0
    try:
        try:
            node = MonoOccNode()
        except ParameterError as err:
            print(f"monoocc_node: {err}", file=sys.stderr)
            return 2
        dropped = dropped_command_line_values(node, sys.argv if args is None else args)
        if dropped:
            print(f"monoocc_node: {dropped[0]}", file=sys.stderr)
            return 2
        executor.add_node(node)
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                code = 1
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                code = 1
        if code == 0:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node._stop_activity()
            node._release_all()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
