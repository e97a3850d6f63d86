"""SSCMetrics on hand-computed confusion cases (official semantic-kitti-api definitions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monoocc_ros.metrics import SSCMetrics


def test_hand_computed_case():
    # 8 voxels: gt / pred, one ignored.
    gt = np.array([0, 0, 1, 1, 2, 2, 255, 9], dtype=np.uint8)
    pred = np.array([0, 1, 1, 2, 2, 0, 5, 9], dtype=np.uint8)
    m = SSCMetrics()
    m.update(pred, gt)
    C = m.confusion
    assert C.dtype == np.int64 and C.shape == (20, 20) and C.sum() == 7
    assert (
        C[0, 0] == 1
        and C[1, 0] == 1
        and C[1, 1] == 1
        and C[2, 1] == 1
        and C[2, 2] == 1
        and C[0, 2] == 1
    )
    assert C[9, 9] == 1
    s = m.compute()
    # class 1: TP 1, FP 1 (pred 1 on gt 0), FN 1 (gt 1 pred 2) -> 1/3
    assert s.iou[1] == pytest.approx(1 / 3)
    # class 2: TP 1, FP 1 (pred 2 on gt 1), FN 1 (gt 2 pred 0) -> 1/3
    assert s.iou[2] == pytest.approx(1 / 3)
    assert s.iou[9] == pytest.approx(1.0)
    assert s.iou[0] == pytest.approx(1 / 3)  # TP 1, FP 1, FN 1
    # absent classes count as 0 in the mean over 1..19
    assert s.miou == pytest.approx((1 / 3 + 1 / 3 + 1) / 19)
    # completion: occupied gt {1,1,2,2,9} and pred {1,1,2,2,9} at different voxels:
    # TP = 4 (gt 1->1, 1->2, 2->2, 9->9)
    assert s.completion_iou == pytest.approx(4 / 6)  # FP: pred 1 on gt 0; FN: gt 2 pred 0
    assert s.precision == pytest.approx(4 / 5)
    assert s.recall == pytest.approx(4 / 5)
    d = s.to_dict()
    assert d["iou_completion"] == s.completion_iou and d["iou_mean"] == s.miou
    assert (
        d["iou_car"] == pytest.approx(1 / 3)
        and d["iou_road"] == pytest.approx(1.0)
        and len(d) == 23
    )


def test_accumulates_over_frames_not_averages():
    m = SSCMetrics()
    m.update(np.array([1, 1]), np.array([1, 1]))  # frame IoU 1
    m.update(np.array([0, 0, 0]), np.array([1, 1, 1]))  # frame IoU 0
    s = m.compute()
    assert s.iou[1] == pytest.approx(2 / 5) and s.completion_iou == pytest.approx(2 / 5)
    other = SSCMetrics()
    other.update(np.array([1]), np.array([1]))
    m.merge(other)
    assert m.compute().iou[1] == pytest.approx(3 / 6)


def test_all_empty_frame_is_defined():
    m = SSCMetrics()
    m.update(np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 2), np.uint8))
    s = m.compute()
    assert s.completion_iou == 0.0 and s.precision == 0.0 and s.recall == 0.0
    assert s.miou == 0.0 and s.iou[0] == pytest.approx(1.0)
    assert np.all(np.isfinite(s.iou))
    empty = SSCMetrics().compute()  # nothing accumulated at all
    assert empty.completion_iou == 0.0 and empty.miou == 0.0


def test_ignored_voxels_and_tensors():
    gt = torch.full((2, 3), 255, dtype=torch.uint8)
    gt[0, 0] = 4
    pred = torch.tensor([[4, 200, 255], [17, 3, 1]])  # invalid ids only where gt is ignored
    m = SSCMetrics()
    m.update(pred, gt)
    assert m.confusion.sum() == 1 and m.confusion[4, 4] == 1


def test_errors():
    m = SSCMetrics()
    with pytest.raises(ValueError, match="prediction shape"):
        m.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="prediction has id 255 on an evaluated voxel"):
        m.update(np.array([255]), np.array([1]))
    with pytest.raises(ValueError, match="ground truth has id 20"):
        m.update(np.array([1]), np.array([20]))
    with pytest.raises(ValueError, match="cannot merge"):
        m.merge(SSCMetrics(num_classes=3))
    assert m.confusion.sum() == 0


def test_metrics_follow_the_label_set():
    from monoocc_ros.labels import LabelMap

    five = LabelMap(("empty", "a", "b", "c", "d"), np.zeros((5, 3), np.uint8), {}, {}, np.ones(5), (1, 2, 3, 4))
    m = SSCMetrics.for_labels(five)
    assert m.num_classes == 5
    m.update(np.array([0, 1, 4, 4]), np.array([0, 1, 4, 3]))
    scores = m.compute().to_dict(five.names)
    assert scores["iou_a"] == pytest.approx(1.0) and scores["iou_d"] == pytest.approx(0.5) and "iou_road" not in scores
    with pytest.raises(ValueError, match="5 IoUs but 3 class names"):
        m.compute().to_dict(("empty", "a", "b"))
