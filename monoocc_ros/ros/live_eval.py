"""Live evaluation over ROS: subscribe to the running node's output and the bag's ground truth.

The rclpy half of ``monoocc eval --live``. The subscriber feeds a
:class:`~monoocc_ros.evaluation.live.LiveMatcher` (matching, scoring and accounting, plain Python);
:func:`run_live` optionally replays the bag from this process (:mod:`monoocc_ros.ros.replay`) and
writes the same report as the offline evaluation.

Example::

    monoocc eval seq08 --live --replay --rate 0.5 --out eval/live
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from monoocc_ros import topics
from monoocc_ros.evaluation.live import LiveConfig, LiveMatcher, summarize_unscored
from monoocc_ros.stamps import stamp_to_ns

__all__ = ["run_live"]


class _Subscriber:
    """The rclpy side: subscriptions that feed a :class:`LiveMatcher`."""

    def __init__(self, node, cfg: LiveConfig, matcher: LiveMatcher, problems: list[str]):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo

        from monoocc_ros.msg import SemanticOccupancyGrid

        self.matcher = matcher
        self.problems = problems
        self.clock_ns: int | None = None
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._subs = [
            node.create_subscription(SemanticOccupancyGrid, cfg.output_topic, self._on_output, reliable),
            node.create_subscription(SemanticOccupancyGrid, cfg.ground_truth_topic, self._on_gt, reliable),
            node.create_subscription(CameraInfo, cfg.camera_info_topic, self._on_input, reliable),
            node.create_subscription(Clock, "/clock", self._on_clock, 10),
        ]
        self._topics = (cfg.output_topic, cfg.ground_truth_topic)

    def _grid(self, msg, topic: str) -> np.ndarray | None:
        from monoocc_ros.msgs.decode import decode_grid

        try:
            return decode_grid(msg)
        except ValueError as e:
            self.problems.append(f"{topic}: grid at {stamp_to_ns(msg.header.stamp)} ns skipped ({e})")
            return None

    def _on_clock(self, msg) -> None:
        self.clock_ns = stamp_to_ns(msg.clock)

    def _on_input(self, msg) -> None:
        self.matcher.on_input(stamp_to_ns(msg.header.stamp), time.monotonic())

    def _on_gt(self, msg) -> None:
        t = time.monotonic()
        labels = self._grid(msg, self._topics[1])
        if labels is not None:
            self.matcher.on_ground_truth(stamp_to_ns(msg.header.stamp), labels, t)

    def _on_output(self, msg) -> None:
        t = time.monotonic()
        labels = self._grid(msg, self._topics[0])
        if labels is not None:
            self.matcher.on_output(stamp_to_ns(msg.header.stamp), labels, t, self.clock_ns)


def _start_replay(node, bag: Path, cfg: LiveConfig, rate: float, progress: bool, result: dict) -> threading.Thread:
    """Play ``bag`` from ``node``'s publishers on a thread; the result or error lands in ``result``.

    The caller destroys ``node`` only after the evaluation ends: a publisher destroyed right
    after its last ``publish`` loses the large messages DDS is still delivering.
    """
    from rosbags.rosbag2 import Reader

    from monoocc_ros.ros.replay import ReplayConfig, replay_bag

    with Reader(bag) as reader:
        present = {c.topic for c in reader.connections}
    # Only what the node and the evaluator read: LiDAR clouds would cost transport time.
    wanted = (topics.IMAGE, topics.IMAGE_COMPRESSED, topics.CAMERA_INFO, topics.TF, topics.TF_STATIC, topics.GROUND_TRUTH)
    replay_cfg = ReplayConfig(
        rate=rate,
        clock=True,
        topics=tuple(t for t in wanted if t in present),
        remaps=(
            (topics.IMAGE, cfg.image_topic),
            (topics.IMAGE_COMPRESSED, cfg.image_topic),  # for a node with image_transport=compressed
            (topics.CAMERA_INFO, cfg.camera_info_topic),
            (topics.GROUND_TRUTH, cfg.ground_truth_topic),
        ),
        start_delay_s=cfg.replay_start_delay_s,
    )

    def work():
        try:
            result["summary"] = replay_bag(node, bag, replay_cfg, progress=progress, log=lambda _: None)
        except Exception as e:  # noqa: BLE001 - reported in the report, the evaluation still ends
            result["error"] = f"replay of {bag} failed ({type(e).__name__}: {e})"

    thread = threading.Thread(target=work, name="monoocc_eval_replay", daemon=True)
    thread.start()
    return thread


def _wait_for_subscriber(executor, node, topic: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while node.count_subscribers(topic) == 0:
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.1)
    return True


def _collect(executor, matcher: LiveMatcher, cfg: LiveConfig, replay: threading.Thread | None, problems: list[str]) -> None:
    """Spin until every frame is matched, or nothing arrives for ``cfg.idle_timeout_s``.

    Deferred scoring waits for ``matcher.finish()``: the node may still be busy with the last
    frames after the replay's last message.
    """
    start = time.monotonic()
    while True:
        executor.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        replaying = replay is not None and replay.is_alive()
        if not replaying and matcher.complete():
            return
        last = matcher.last_arrival_s
        if last is None:
            if not replaying and now - start > cfg.start_timeout_s:
                problems.append(
                    f"nothing arrived on {cfg.output_topic}, {cfg.ground_truth_topic} or "
                    f"{cfg.camera_info_topic} within {cfg.start_timeout_s} s"
                )
                return
        elif not replaying and now - last > cfg.idle_timeout_s:
            return


def run_live(
    bag: Path,
    out_dir: Path,
    cfg: LiveConfig = LiveConfig(),
    *,
    checkpoint_path: Path | None = None,
    replay: bool = False,
    replay_rate: float = 1.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect and score the node's output while ``bag`` is replayed; write the report.

    Args:
        bag: the bag being replayed; indexed first for the ground-truth stamps and frame count.
        out_dir: folder for ``metrics.json``, ``table.md``, ``class_iou.png``.
        cfg: topics and timeouts.
        checkpoint_path: the node's checkpoint, recorded in the report by sha256 (optional).
        replay: play the bag from this process over rclpy (else someone else plays it).
        replay_rate: playback rate of ``replay``.
        progress: show progress bars.

    Returns:
        The report (schema of :mod:`~monoocc_ros.evaluation.report`, ``mode`` "live").
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from monoocc_ros.data.bag_io import read_bag_frames
    from monoocc_ros.fileio import sha256_file
    from monoocc_ros.evaluation.report import build_report, write_report

    bag, out_dir = Path(bag), Path(out_dir)
    if not replay_rate > 0:
        raise ValueError(f"replay rate must be > 0, got {replay_rate}")
    index = read_bag_frames(bag, require_ground_truth=True)
    problems = list(index.problems)
    expected = [index.records[i].stamp_ns for i in index.selected]
    # Deferred only under our own replay: the scorer would share the node's cores. With another
    # player the end is not known here, so each grid is scored on arrival (memory stays flat).
    defer = replay and cfg.defer_scoring
    matcher = LiveMatcher(expected, total_inputs=len(index.records), defer_scoring=defer)
    context = rclpy.Context()
    rclpy.init(context=context)
    replay_result: dict[str, Any] = {}
    try:
        node = rclpy.create_node("monoocc_eval", context=context)
        _Subscriber(node, cfg, matcher, problems)  # the node keeps its subscriptions alive
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        thread = replay_node = None
        if replay:
            # Messages published before the node's subscription is discovered are lost for good.
            if not _wait_for_subscriber(executor, node, cfg.image_topic, cfg.start_timeout_s):
                problems.append(f"no subscriber on {cfg.image_topic} within {cfg.start_timeout_s} s (is the node running?)")
            replay_node = rclpy.create_node("monoocc_eval_replay", context=context)
            thread = _start_replay(replay_node, bag, cfg, replay_rate, progress, replay_result)
        try:
            _collect(executor, matcher, cfg, thread, problems)
        except KeyboardInterrupt:
            # Ctrl-C ends the run early; what was collected so far is still reported.
            problems.append("interrupted by the user; frames not seen yet count as missed")
        if thread is not None and not thread.is_alive():
            replay_node.destroy_node()
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
    finally:
        rclpy.try_shutdown(context=context)
    if "error" in replay_result:
        problems.append(replay_result["error"])
    result = matcher.finish()
    problems += summarize_unscored(result, cfg)
    live = result["live"]
    live["clock"] = bool(result["latency_ms"]["sim_time"])  # sim-time latencies need /clock
    live["scoring"] = "after the replay" if defer else "on arrival"
    if "summary" in replay_result:
        s = replay_result["summary"]
        live["replay"] = {"rate": replay_rate, "published": s.published, "skipped": s.skipped, "duration_s": s.duration_s}
    checkpoint = {"path": None, "sha256": None}
    if checkpoint_path is not None:
        checkpoint = {"path": str(checkpoint_path), "sha256": sha256_file(checkpoint_path)}
    scores = matcher.metrics.compute()
    report = build_report(
        scores,
        matcher.metrics.confusion,
        mode="live",
        frames=result["frames"],
        latency_ms=result["latency_ms"],
        device=None,  # the node's device and precision are its parameters, unknown here
        precision=None,
        checkpoint=checkpoint,
        bag=str(bag),
        problems=problems,
        extra={"live": live},
    )
    write_report(out_dir, report)
    return report
