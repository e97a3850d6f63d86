"""Live evaluation: score the running node's output against the bag's ground truth over ROS.

The bag is replayed by ``ros2 bag play --clock`` (real ROS install) or by the project's replay
(:mod:`monoocc_ros.ros.replay`, ``--replay``) while an rclpy subscriber collects

* the node's occupancy grids (``output_topic``), matched to ground truth by ``header.stamp``;
* the ground-truth grids (``ground_truth_topic``);
* the camera_info the node receives (``camera_info_topic``), one per input frame: its arrival
  time starts the end-to-end latency clock and its count gives the dropped frames;
* ``/clock`` when the player publishes it: the latency in sim time is then ``clock - stamp``.

A ground-truth frame without a matching output counts as *missed* and is scored as an all-empty
prediction, so drops lower the accuracy instead of hiding. With nothing dropped, the confusion
matrix equals the offline one for the same bag and checkpoint.

This module is the ROS-free half: :class:`LiveConfig` and :class:`LiveMatcher` (matching and
accounting). The rclpy subscriber and :func:`~monoocc_ros.ros.live_eval.run_live` are in
:mod:`monoocc_ros.ros.live_eval`.

Example::

    monoocc eval seq08 --live --replay --rate 0.5 --out eval/live
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from monoocc_ros import topics
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import EMPTY

__all__ = ["LiveConfig", "LiveMatcher", "NODE_OUTPUT", "labels_digest", "summarize_unscored"]

NODE_OUTPUT = "/monoocc_node/output/occupancy"
_MAX_PENDING = 64  # unmatched grids kept while waiting for their partner (2 MiB each)
_MAX_DEFERRED = 64  # frames kept for deferred scoring (up to 4 MiB each: output and ground truth); beyond, score at once


@dataclass(frozen=True)
class LiveConfig:
    """Topics and timing of a live evaluation.

    Attributes:
        output_topic: the node's occupancy output (absolute name).
        ground_truth_topic: the bag's ground-truth grids.
        image_topic: the node's image input, where ``--replay`` publishes the bag's images
            (default: the bag's topic, which launch/monoocc.launch.py remaps the node to).
        camera_info_topic: the node's CameraInfo input, where ``--replay`` publishes it; every
            message counts as one input frame.
        idle_timeout_s: stop once nothing arrived for this long (after the first message, and
            after the replay ended when replaying).
        start_timeout_s: give up when no message at all arrives for this long.
        replay_start_delay_s: discovery time between creating the replay publishers and playing.
        defer_scoring: while this process replays the bag, keep each arriving grid and score it
            (confusion update and label digest, tens of ms of numpy per frame) at the end, so the
            scorer takes no CPU from the node on a small machine; arrival times, and so the
            latencies, are taken on arrival either way (bench/bench_node_replay.py --scoring).
    """

    output_topic: str = NODE_OUTPUT
    ground_truth_topic: str = topics.GROUND_TRUTH
    image_topic: str = topics.IMAGE
    camera_info_topic: str = topics.CAMERA_INFO
    idle_timeout_s: float = 10.0
    start_timeout_s: float = 60.0
    replay_start_delay_s: float = 2.0
    defer_scoring: bool = True

    def __post_init__(self):
        for name in ("output_topic", "ground_truth_topic", "image_topic", "camera_info_topic"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(f"{name} must be an absolute topic name, got {getattr(self, name)!r}")
        if self.idle_timeout_s <= 0 or self.start_timeout_s <= 0:
            raise ValueError("idle_timeout_s and start_timeout_s must be > 0")


class LiveMatcher:
    """Matches output and ground-truth grids by stamp and keeps the live accounting.

    Times are monotonic seconds of arrival at the evaluator; ``clock_ns`` is the latest /clock
    value at arrival (None without /clock). Thread-safe.

    Args:
        expected_stamps: stamps of the ground-truth frames the bag holds (None: whatever arrives).
        total_inputs: number of camera frames in the bag (None: unknown), to know when all came.
        defer_scoring: keep the confusion update and the label digest of each arriving grid for
            :meth:`drain` (or :meth:`finish`) instead of doing them on arrival; matching,
            counts and latencies stay on arrival. At most ``max_deferred`` grids wait: beyond,
            the oldest is scored at once.
    """

    def __init__(
        self,
        expected_stamps: Collection[int] | None = None,
        total_inputs: int | None = None,
        *,
        defer_scoring: bool = False,
        max_deferred: int = _MAX_DEFERRED,
    ):
        from monoocc_ros.metrics import SSCMetrics

        self.metrics = SSCMetrics(num_classes=20)
        self.expected = None if expected_stamps is None else set(int(s) for s in expected_stamps)
        self.total_inputs = total_inputs
        self.inputs: dict[int, float] = {}
        self.outputs: dict[int, float] = {}
        # sha256[:16] of each output's labels: `make demo` checks them against the offline predictor's
        self.output_digests: dict[int, str] = {}
        self.matched: set[int] = set()
        self.duplicate_outputs = 0
        self.latency_ms: list[float] = []
        self.sim_latency_ms: list[float] = []
        self.last_arrival_s: float | None = None
        self._gt_pending: OrderedDict[int, np.ndarray] = OrderedDict()
        self._gt_seen: set[int] = set()
        self._out_pending: OrderedDict[int, np.ndarray] = OrderedDict()
        # (stamp, prediction, ground truth or None, digest it): work left for drain()
        self._deferred: deque[tuple[int, np.ndarray, np.ndarray | None, bool]] = deque()
        self.defer_scoring = defer_scoring
        self.max_deferred = max_deferred
        self._lock = threading.Lock()

    def _touch(self, t_s: float) -> None:
        self.last_arrival_s = t_s

    def on_input(self, stamp_ns: int, t_s: float) -> None:
        with self._lock:
            self._touch(t_s)
            self.inputs.setdefault(stamp_ns, t_s)

    def on_ground_truth(self, stamp_ns: int, labels: np.ndarray, t_s: float) -> None:
        with self._lock:
            self._touch(t_s)
            if stamp_ns in self._gt_seen:
                return
            self._gt_seen.add(stamp_ns)
            pred = self._out_pending.pop(stamp_ns, None)
            if pred is not None:
                self._score(stamp_ns, pred, labels)
            else:
                self._gt_pending[stamp_ns] = labels
                while len(self._gt_pending) > _MAX_PENDING:
                    # An old frame whose output never came: missed, scored as empty now.
                    _, gt = self._gt_pending.popitem(last=False)
                    self.metrics.update(np.full(KITTI_GRID.size, EMPTY, np.uint8), gt)

    def on_output(self, stamp_ns: int, labels: np.ndarray, t_s: float, clock_ns: int | None) -> None:
        with self._lock:
            self._touch(t_s)
            if stamp_ns in self.outputs:
                self.duplicate_outputs += 1
                return
            self.outputs[stamp_ns] = t_s
            start = self.inputs.get(stamp_ns)
            if start is not None:
                self.latency_ms.append((t_s - start) * 1e3)
            if clock_ns is not None:
                self.sim_latency_ms.append((clock_ns - stamp_ns) / 1e6)
            gt = self._gt_pending.pop(stamp_ns, None)
            self._score(stamp_ns, labels, gt, digest=True)
            if gt is None and stamp_ns not in self._gt_seen and (self.expected is None or stamp_ns in self.expected):
                self._out_pending[stamp_ns] = labels
                while len(self._out_pending) > _MAX_PENDING:
                    self._out_pending.popitem(last=False)

    def _score(self, stamp_ns: int, pred: np.ndarray, gt: np.ndarray | None, digest: bool = False) -> None:
        """Match ``pred`` to ``gt`` (None: nothing to score) and, with ``digest``, name its labels;
        the numpy work now, or later with ``defer_scoring``."""
        if gt is not None:
            self.matched.add(stamp_ns)
        self._deferred.append((stamp_ns, pred, gt, digest))
        limit = self.max_deferred if self.defer_scoring else 0
        while len(self._deferred) > limit:
            self._run_one()

    def _run_one(self) -> None:
        stamp_ns, pred, gt, digest = self._deferred.popleft()
        if digest:
            self.output_digests[stamp_ns] = labels_digest(pred)
        if gt is not None:
            self.metrics.update(pred, gt)

    def drain(self) -> None:
        """Do the deferred scoring now (a no-op without ``defer_scoring``)."""
        with self._lock:
            while self._deferred:
                self._run_one()

    def complete(self) -> bool:
        """Every expected ground-truth frame is matched and every counted input has its output."""
        with self._lock:
            if self.expected is None or not self.expected <= self.matched:
                return False
            if self.total_inputs is not None and len(self.outputs) < self.total_inputs:
                return False
            return True

    def finish(self) -> dict[str, Any]:
        """Score what is deferred and the still-unmatched ground truth as missed; return counts and latencies."""
        self.drain()
        with self._lock:
            missed = sorted(self._gt_pending) + sorted(
                s for s in self._gt_seen if s not in self.matched and s not in self._gt_pending
            )
            for gt in self._gt_pending.values():
                self.metrics.update(np.full(KITTI_GRID.size, EMPTY, np.uint8), gt)
            self._gt_pending.clear()
            not_received = sorted(self.expected - self._gt_seen) if self.expected is not None else []
            out_times = sorted(self.outputs.values())
            in_times = sorted(self.inputs.values())
            dropped = [s for s in self.inputs if s not in self.outputs]
            return {
                "frames": {
                    "ground_truth": len(self.expected) if self.expected is not None else len(self._gt_seen),
                    "evaluated": len(self.matched),
                    "missed": len(missed),
                    "ground_truth_not_received": len(not_received),
                },
                "missed_stamps_ns": missed,
                "not_received_stamps_ns": not_received,
                "live": {
                    "inputs": len(self.inputs),
                    "outputs": len(self.outputs),
                    "dropped_frames": len(dropped),
                    "duplicate_outputs": self.duplicate_outputs,
                    "input_rate_hz": _rate(in_times),
                    "achieved_rate_hz": _rate(out_times),
                    "output_digests": {str(k): v for k, v in sorted(self.output_digests.items())},
                },
                "latency_ms": {"total": self.latency_ms, "sim_time": self.sim_latency_ms},
            }


def labels_digest(labels: np.ndarray) -> str:
    """sha256[:16] of a (256, 256, 32) uint8 label grid in C order: equal digests, equal labels."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()[:16]


def _stamps_text(stamps_ns: list[int], shown: int = 3) -> str:
    """'at 1.000000000 s, 1.100000000 s ... 2.900000000 s' (first and last few stamps)."""
    secs = [f"{s / 1e9:.9f} s" for s in stamps_ns]
    if len(secs) > 2 * shown:
        secs = secs[:shown] + ["..."] + secs[-shown:]
    return "at " + ", ".join(secs).replace(", ...,", " ...")


def summarize_unscored(result: dict[str, Any], cfg: LiveConfig) -> list[str]:
    """One problem line per kind of unscored ground-truth frame, with its count, not one per frame.

    A busy node skips most frames at the recorded rate, and a line for each of them buries the
    other problems. The stamps stay in the report (``live.missed_stamps_ns`` and
    ``live.not_received_stamps_ns``, moved there from ``result``) for whoever needs them.

    Args:
        result: :meth:`LiveMatcher.finish` output; its two stamp lists are moved into
            ``result["live"]``.
        cfg: the topics named in the lines.
    """
    missed = result.pop("missed_stamps_ns")
    not_received = result.pop("not_received_stamps_ns")
    result["live"]["missed_stamps_ns"] = missed
    result["live"]["not_received_stamps_ns"] = not_received
    total = result["frames"]["ground_truth"]
    problems = []
    if missed:
        problems.append(
            f"{cfg.output_topic}: no output for {len(missed)} of {total} ground-truth frames "
            f"({_stamps_text(missed)}); the node did not process them (busy or dropped); scored as missed (empty)"
        )
    if not_received:
        problems.append(
            f"{cfg.ground_truth_topic}: {len(not_received)} of {total} ground-truth frames never arrived "
            f"({_stamps_text(not_received)}); not scored"
        )
    return problems


def _rate(times: list[float]) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])
