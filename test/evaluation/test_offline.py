"""Offline evaluation of a generated bag: every artifact, exports consistent with the metrics,
and bag problems reported while the rest of the bag is evaluated."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from monoocc_ros import topics
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.evaluation.offline import OfflineConfig, run_offline
from monoocc_ros.evaluation.submission import read_prediction, validate_submission
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI
from monoocc_ros.metrics import SSCMetrics

PAPER_FIRST_COLUMNS = ["Method", "IoU", "mIoU", "road", "sidewalk", "parking"]


@pytest.fixture(scope="module")
def gt_frames(gt_bag):
    """(KITTI index, stamp, ground truth) of the bag, read independently of the evaluation."""
    index = read_bag_frames(gt_bag, require_ground_truth=True)
    assert index.problems == []
    return [(f.index, f.stamp_ns, f.ground_truth) for f in index]


def test_offline_eval_writes_every_artifact(offline_run, gt_frames, gt_bag, tiny_checkpoint):
    report_dir, _ = offline_run
    report = json.loads((report_dir / "metrics.json").read_text())
    assert [i for i, _, _ in gt_frames] == [0, 5]  # KITTI frame ids, not bag positions
    assert report["mode"] == "offline" and report["frames"] == {"ground_truth": 2, "evaluated": 2, "failed": 0}
    assert report["checkpoint"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert report["checkpoint"]["config_name"] == "tiny"
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["problems"] == []
    assert set(report["metrics"]["iou"]) == set(SEMANTIC_KITTI.names)
    for stage in ("total", "backbone_neck", "head"):
        lat = report["latency_ms"][stage]
        assert lat["count"] == 2 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    # Every evaluated voxel of every frame is in the matrix, and the frames' matrices add up to it.
    C = np.asarray(report["confusion"])
    assert C.sum() == sum(int((gt != IGNORE).sum()) for _, _, gt in gt_frames)
    assert C[:, 1:].sum() > 0  # the generated scene has occupied ground truth
    lines = [json.loads(line) for line in (report_dir / "frames.jsonl").read_text().splitlines()]
    assert [(r["index"], r["stamp_ns"]) for r in lines] == [(i, s) for i, s, _ in gt_frames]
    np.testing.assert_array_equal(sum(np.asarray(r["confusion"]) for r in lines), C)

    header = (report_dir / "table.md").read_text().splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][:6] == PAPER_FIRST_COLUMNS
    assert (report_dir / "class_iou.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (report_dir / "renders").iterdir()) == ["000000.png", "000005.png"]
    h, w = read_bag_frames(gt_bag).records[0].image_hw
    panel = cv2.imread(str(report_dir / "renders" / "000005.png"))
    # camera | prediction | ground truth, with a header (frame id, score) above and a legend below
    assert panel.shape[1] == 3 * w and panel.shape[0] > h
    image = next(f.image for f in read_bag_frames(gt_bag, require_ground_truth=True) if f.index == 5)
    assert any(np.array_equal(panel[r:r + h, :w, ::-1], image) for r in range(panel.shape[0] - h + 1))


def test_exported_submission_reproduces_the_reported_metrics(offline_run, gt_frames):
    report_dir, sub = offline_run
    # Sequence "00" comes from the converter's metadata in the bag.
    assert validate_submission(sub, {"00": [0, 5]}) == []
    metrics = SSCMetrics()
    for i, _, gt in gt_frames:
        raw = read_prediction(sub / "sequences" / "00" / "predictions" / f"{i:06d}.label")
        assert raw.dtype == np.uint16 and raw.size == 2_097_152
        metrics.update(SEMANTIC_KITTI.remap_voxel_labels(raw), gt)
    report = json.loads((report_dir / "metrics.json").read_text())
    np.testing.assert_array_equal(metrics.confusion, np.asarray(report["confusion"]))
    assert metrics.compute().miou == pytest.approx(report["metrics"]["miou"])


def test_bag_problems_are_reported_and_the_rest_is_evaluated(
    synthetic_bag, tiny_checkpoint, offline_run, rewrite_bag, eval_cli, tmp_path, capsys
):
    index = read_bag_frames(synthetic_bag)
    stamp = {r.kitti_frame: r.stamp_ns for r in index.records}
    keep_gt = {stamp[0], stamp[5]}  # fewer ground-truth frames keep the test fast

    def edit(topic, t, raw):
        if topic == topics.GROUND_TRUTH and t not in keep_gt:
            return []
        if topic in (topics.POINTS, topics.TF):
            return []  # not read by the evaluation
        if topic == topics.IMAGE and t == stamp[5]:
            return []  # frame 5: ground truth without its image
        if topic == topics.IMAGE and t == stamp[3]:
            return [(topic, stamp[4] + 1, raw)]  # frame 3 written after frame 4: unsorted stamps
        return [(topic, t, raw)]

    broken = rewrite_bag(synthetic_bag, tmp_path / "broken", edit)
    report = run_offline(broken, tiny_checkpoint, tmp_path / "out", OfflineConfig(progress=False))
    problems = "\n".join(report["problems"])
    assert f"{topics.GROUND_TRUTH} at {stamp[5] / 1e9:.6f} s has no image" in problems
    assert f"stamp {stamp[3] / 1e9:.6f} s is not after the previous {stamp[4] / 1e9:.6f} s (unsorted)" in problems
    # Frame 0 is still evaluated, exactly as in the clean bag.
    assert report["frames"] == {"ground_truth": 1, "evaluated": 1, "failed": 0}
    clean = [json.loads(x) for x in (offline_run[0] / "frames.jsonl").read_text().splitlines()]
    assert report["confusion"] == clean[0]["confusion"] and clean[0]["index"] == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["problems"] == report["problems"]

    def drop(name):
        return lambda topic, t, raw: [] if topic in (name, topics.POINTS) else [(topic, t, raw)]

    no_gt = rewrite_bag(synthetic_bag, tmp_path / "no_gt", drop(topics.GROUND_TRUTH))
    rc = eval_cli(["eval", str(no_gt), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert rc == 2
    assert f"topic {topics.GROUND_TRUTH} missing" in capsys.readouterr().err
    no_info = rewrite_bag(synthetic_bag, tmp_path / "no_info", drop(topics.CAMERA_INFO))
    with pytest.raises(ValueError, match=f"topic {topics.CAMERA_INFO} missing"):
        run_offline(no_info, tiny_checkpoint, tmp_path / "o3", OfflineConfig(progress=False))
