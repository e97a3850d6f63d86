"""Live matching by stamp: missed frames are scored, not ignored; rates and latencies add up."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.metrics import SSCMetrics
from monoocc_ros.evaluation.live import LiveMatcher

CAR = 1


def grid(n_car: int) -> np.ndarray:
    g = np.zeros(KITTI_GRID.size, np.uint8)
    g.reshape(-1)[:n_car] = CAR
    return g


def test_matches_by_stamp_in_any_order_and_scores_missed_frames_as_empty():
    gts = {100: grid(10), 200: grid(20), 300: grid(30)}
    matcher = LiveMatcher(expected_stamps=gts, total_inputs=4)
    for k, stamp in enumerate((100, 150, 200, 300)):
        matcher.on_input(stamp, t_s=k * 1.0)
    matcher.on_ground_truth(100, gts[100], t_s=0.01)
    matcher.on_output(100, grid(10), t_s=0.25, clock_ns=None)  # after its ground truth
    matcher.on_output(150, grid(5), t_s=1.25, clock_ns=None)  # frame without ground truth
    matcher.on_output(200, grid(20), t_s=2.25, clock_ns=None)  # before its ground truth
    matcher.on_ground_truth(200, gts[200], t_s=2.30)
    matcher.on_output(200, grid(20), t_s=2.40, clock_ns=None)  # duplicate: ignored
    matcher.on_ground_truth(300, gts[300], t_s=3.01)  # its output never comes
    assert not matcher.complete()
    result = matcher.finish()

    assert result["frames"] == {"ground_truth": 3, "evaluated": 2, "missed": 1, "ground_truth_not_received": 0}
    assert result["missed_stamps_ns"] == [300]
    live = result["live"]
    assert live["inputs"] == 4 and live["outputs"] == 3 and live["dropped_frames"] == 1
    assert live["duplicate_outputs"] == 1
    assert live["achieved_rate_hz"] == pytest.approx(2 / 2.0)
    assert live["input_rate_hz"] == pytest.approx(3 / 3.0)
    assert result["latency_ms"]["total"] == pytest.approx([250.0, 250.0, 250.0])

    # Same numbers as scoring the two matched frames and an empty prediction for the third.
    expected = SSCMetrics()
    expected.update(grid(10), gts[100])
    expected.update(grid(20), gts[200])
    expected.update(grid(0), gts[300])
    np.testing.assert_array_equal(matcher.metrics.confusion, expected.confusion)
    assert matcher.metrics.compute().completion_iou == pytest.approx(30 / 60)


def test_complete_only_when_all_ground_truth_and_inputs_have_outputs_and_sim_time_latency():
    matcher = LiveMatcher(expected_stamps=[1_000_000_000], total_inputs=2)
    matcher.on_input(1_000_000_000, 0.0)
    matcher.on_input(1_100_000_000, 0.1)
    matcher.on_ground_truth(1_000_000_000, grid(3), 0.0)
    matcher.on_output(1_000_000_000, grid(3), 0.5, clock_ns=1_050_000_000)
    assert not matcher.complete()
    matcher.on_output(1_100_000_000, grid(3), 0.6, clock_ns=1_150_000_000)
    assert matcher.complete()
    result = matcher.finish()
    assert result["latency_ms"]["sim_time"] == pytest.approx([50.0, 50.0])
    assert result["frames"]["missed"] == 0 and result["live"]["dropped_frames"] == 0


def test_expected_ground_truth_that_never_arrives_is_reported():
    matcher = LiveMatcher(expected_stamps=[5, 6])
    matcher.on_ground_truth(5, grid(1), 0.0)
    matcher.on_output(5, grid(1), 0.1, None)
    matcher.on_output(6, grid(1), 0.2, None)
    result = matcher.finish()
    assert result["not_received_stamps_ns"] == [6]
    assert result["frames"]["evaluated"] == 1 and result["frames"]["ground_truth_not_received"] == 1


def test_unscored_frames_are_one_counted_line_each_kind():
    """A busy node misses most frames at the recorded rate: one line with the count, not 17."""
    from monoocc_ros.evaluation.live import LiveConfig, summarize_unscored

    stamps = [10**9 + k * 10**8 for k in range(20)]
    matcher = LiveMatcher(expected_stamps=stamps, total_inputs=20)
    for k, stamp in enumerate(stamps[:19]):  # the last ground truth never arrives
        matcher.on_ground_truth(stamp, grid(3), t_s=k * 0.1)
    for k, stamp in enumerate(stamps[:3]):
        matcher.on_output(stamp, grid(3), t_s=k * 0.1 + 0.05, clock_ns=None)
    result = matcher.finish()
    lines = summarize_unscored(result, LiveConfig())
    assert len(lines) == 2
    assert lines[0].startswith("/monoocc_node/output/occupancy: no output for 16 of 20 ground-truth frames (at 1.300000000 s")
    assert "..." in lines[0] and "scored as missed (empty)" in lines[0]
    assert lines[1].startswith("/ground_truth/occupancy: 1 of 20 ground-truth frames never arrived (at 2.900000000 s)")
    # nothing lost: every stamp is still in the report's live section
    assert result["live"]["missed_stamps_ns"] == stamps[3:19] and result["live"]["not_received_stamps_ns"] == stamps[19:]
    assert "missed_stamps_ns" not in result and "not_received_stamps_ns" not in result


def test_output_digests_name_each_outputs_labels():
    """`make demo` compares these with the offline predictor's labels of the same frames."""
    from monoocc_ros.evaluation.live import labels_digest

    matcher = LiveMatcher(expected_stamps=[1, 2])
    a = np.zeros(KITTI_GRID.size, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 3
    matcher.on_output(1, a, 0.1, None)
    matcher.on_output(2, b, 0.2, None)
    digests = matcher.finish()["live"]["output_digests"]
    assert digests == {"1": labels_digest(a), "2": labels_digest(b)} and digests["1"] != digests["2"]


def _feed(matcher: LiveMatcher, gts: dict[int, np.ndarray]) -> None:
    """Inputs, ground truth and outputs of three frames, in the replay's order and the other."""
    for k, stamp in enumerate(gts):
        matcher.on_input(stamp, t_s=k * 0.1)
    matcher.on_ground_truth(100, gts[100], t_s=0.01)
    matcher.on_output(100, grid(10), t_s=0.15, clock_ns=None)  # after its ground truth
    matcher.on_output(200, grid(25), t_s=0.28, clock_ns=None)  # before its ground truth
    matcher.on_ground_truth(200, gts[200], t_s=0.30)
    matcher.on_ground_truth(300, gts[300], t_s=0.31)
    matcher.on_output(300, grid(30), t_s=0.40, clock_ns=None)


def test_deferred_scoring_leaves_the_numpy_work_for_drain_with_the_same_report():
    """While the evaluator replays the bag it shares the node's cores: it matches and times each
    grid on arrival, but the confusion update and the digest wait for drain()/finish()."""
    gts = {100: grid(10), 200: grid(20), 300: grid(30)}
    now, later = LiveMatcher(expected_stamps=gts, total_inputs=3), LiveMatcher(
        expected_stamps=gts, total_inputs=3, defer_scoring=True
    )
    _feed(now, gts)
    _feed(later, gts)
    assert later.metrics.confusion.sum() == 0 and later.output_digests == {}  # nothing scored on arrival
    assert now.metrics.confusion.sum() > 0 and len(now.output_digests) == 3
    assert later.complete() and later.matched == now.matched  # matching is not deferred
    assert later.latency_ms == now.latency_ms == pytest.approx([150.0, 180.0, 200.0])
    later.drain()
    np.testing.assert_array_equal(later.metrics.confusion, now.metrics.confusion)
    assert later.output_digests == now.output_digests
    assert later.finish() == now.finish()


def test_deferred_scoring_holds_at_most_max_deferred_grids():
    gts = {100: grid(10), 200: grid(20), 300: grid(30)}
    matcher = LiveMatcher(expected_stamps=gts, total_inputs=3, defer_scoring=True, max_deferred=2)
    _feed(matcher, gts)
    assert len(matcher._deferred) == 2  # the oldest work was done when the third came
    assert matcher.metrics.confusion.sum() == KITTI_GRID.num_voxels and len(matcher.output_digests) == 2
    expected = SSCMetrics()
    for stamp, n in ((100, 10), (200, 25), (300, 30)):
        expected.update(grid(n), gts[stamp])
    matcher.finish()
    np.testing.assert_array_equal(matcher.metrics.confusion, expected.confusion)



def test_live_collect_leaves_deferred_scoring_to_finish():
    """run_live's loop scores nothing, during the replay or after it while the node may still be
    busy with its last frames; finish() scores every frame."""
    from monoocc_ros.evaluation.live import LiveConfig
    from monoocc_ros.ros.live_eval import _collect

    gts = {100: grid(10), 200: grid(20), 300: grid(30)}
    matcher = LiveMatcher(expected_stamps=gts, total_inputs=3, defer_scoring=True)
    scored_while_collecting = []

    class Replay:
        alive = True

        def is_alive(self):
            return self.alive

    replay = Replay()

    class Executor:
        calls = 0

        def spin_once(self, timeout_sec):
            if self.calls == 0:
                _feed(matcher, gts)
            elif self.calls == 3:
                replay.alive = False
            scored_while_collecting.append(int(matcher.metrics.confusion.sum()))
            self.calls += 1

    _collect(Executor(), matcher, LiveConfig(idle_timeout_s=5.0), replay, [])
    assert scored_while_collecting == [0, 0, 0, 0]  # complete once the replay ended
    matcher.finish()
    assert matcher.metrics.confusion.sum() == 3 * KITTI_GRID.num_voxels and len(matcher.output_digests) == 3
