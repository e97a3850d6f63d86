"""``monoocc eval --map``: the fused map against single frames on each frame's observed region."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from monoocc_ros import topics
from monoocc_ros.camera import CameraModel
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.evaluation.map_eval import MapEvalConfig, evaluate_map
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI
from monoocc_ros.mapping import frustum_mask
from monoocc_ros.metrics import SSCMetrics
from monoocc_ros.predictor import Prediction


class _GroundTruthPredictor:
    """Predicts each frame's ground truth (in call order), with a fraction of voxels replaced
    by random classes or empty, differently in every frame."""

    def __init__(self, truths: list[np.ndarray], noise: float, seed: int = 0):
        self.truths, self.noise = truths, noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.predicted: list[np.ndarray] = []

    def predict(self, image, K, T_cam_grid) -> Prediction:
        labels = np.where(self.truths[self.calls] == IGNORE, 0, self.truths[self.calls]).astype(np.uint8)
        self.calls += 1
        hit = self.rng.random(labels.shape) < self.noise
        labels[hit] = self.rng.integers(0, SEMANTIC_KITTI.num_classes, int(hit.sum()), dtype=np.uint8)
        self.predicted.append(labels)
        return Prediction(labels, np.full(labels.shape, 230, dtype=np.uint8))


def test_scores_single_frames_and_the_map_on_the_same_voxels(gt_bag, tmp_path):
    gt_only = read_bag_frames(gt_bag, require_ground_truth=True)
    predictor = _GroundTruthPredictor([gt_only.load_ground_truth(i) for i in gt_only.selected], noise=0.1)
    report = evaluate_map(gt_bag, predictor, tmp_path, MapEvalConfig(progress=False))
    assert report["frames"] == {"fused": 2, "scored": 2, "failed": 0} and report["problems"] == []
    # the single-frame scores are the official metrics of the predictions on the region
    expected = SSCMetrics(num_classes=20)
    for i, labels in zip(gt_only.selected, predictor.predicted):
        rec = gt_only.records[i]
        seen = frustum_mask(CameraModel(K=rec.K, T_cam_grid=rec.T_cam_grid, image_hw=rec.image_hw))
        expected.update(labels, np.where(seen.reshape(KITTI_GRID.size), gt_only.load_ground_truth(i), IGNORE))
    assert report["single_frame"] == pytest.approx(expected.compute().to_dict())
    assert report["voxels_scored"]["single_frame"] == report["voxels_scored"]["fused"] > 100_000
    assert json.loads((tmp_path / "map_metrics.json").read_text()) == report
    assert (tmp_path / "map_table.md").read_text().count("|") > 10
    picture = cv2.imread(str(tmp_path / "map_topview.png"))
    assert picture is not None and picture.shape[1] > 3 * 100


def test_exact_predictions_score_perfect_and_the_fused_map_keeps_them(synthetic_bag, rewrite_bag, tmp_path):
    """Predictions equal to the ground truth: single frames score 100 %, and the map, which
    also holds the three earlier views of the drive at their /tf poses, loses almost nothing."""
    bag = _ground_truth_frames_only(synthetic_bag, rewrite_bag, tmp_path / "bag")
    index = read_bag_frames(bag, require_ground_truth=True)
    assert len(index.records) == len(index.selected) == 4  # frames 0, 5, 10, 15 of the drive
    predictor = _GroundTruthPredictor([index.load_ground_truth(i) for i in index.selected], noise=0.0)
    report = evaluate_map(bag, predictor, tmp_path / "out", MapEvalConfig(progress=False))
    single, fused = report["single_frame"], report["fused"]
    assert single["iou_completion"] == pytest.approx(1.0) and single["precision"] == pytest.approx(1.0)
    assert fused["iou_completion"] > 0.9  # the files differ where scan points fill voxels
    assert fused["iou_mean"] > 0.9 * single["iou_mean"]


def _ground_truth_frames_only(bag, rewrite_bag, out):
    """The bag without the images of frames that have no ground truth (the fake predictor
    answers in call order with the ground truth)."""
    from monoocc_ros.msgs.bagtypes import typestore
    from monoocc_ros.stamps import stamp_to_ns

    store = typestore()
    index = read_bag_frames(bag, require_ground_truth=True)
    keep = {index.records[i].stamp_ns for i in index.selected}

    def edit(topic, t, raw):
        if topic == topics.IMAGE and stamp_to_ns(store.deserialize_cdr(raw, "sensor_msgs/msg/Image").header.stamp) not in keep:
            return []
        return [(topic, t, raw)]

    return rewrite_bag(bag, out, edit)


def test_cli_map_eval(gt_bag, tiny_checkpoint, eval_cli, tmp_path, capsys):
    rc = eval_cli(["eval", str(gt_bag), "--map", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
                   "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| single frame |" in out and "| fused map |" in out and "map_topview.png" in out
    report = json.loads((tmp_path / "map_metrics.json").read_text())
    assert report["checkpoint"]["config_name"] == "tiny" and report["frames"]["fused"] == 2


def test_cli_map_eval_needs_poses(gt_bag, tiny_checkpoint, eval_cli, rewrite_bag, tmp_path, capsys):
    no_tf = rewrite_bag(gt_bag, tmp_path / "no_tf", lambda topic, t, raw: [] if topic == topics.TF else [(topic, t, raw)])
    rc = eval_cli(["eval", str(no_tf), "--map", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no frame with both ground truth and a /tf odom -> base_link pose" in err
    assert "Traceback" not in err
