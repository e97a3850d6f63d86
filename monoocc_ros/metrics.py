"""Semantic scene completion metrics exactly as the official semantic-kitti-api computes them.

One confusion matrix ``C[pred, gt]`` is summed over all frames; every score comes from it:

* IoU_c = TP / (TP + FP + FN + 1e-15); mIoU = mean over classes 1..19 (absent classes count 0).
* Completion (occupied = classes 1..19): precision, recall with float32 eps, IoU without eps.

Where the official script crashes the behaviour is defined: an all-empty evaluation gives
completion IoU 0.0; a prediction outside 0..num_classes-1 inside the mask raises ValueError.

Example:
    >>> m = SSCMetrics(); m.update(np.ones((2, 2, 2), np.uint8), np.ones((2, 2, 2), np.uint8))
    >>> round(m.compute().completion_iou, 3)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI, LabelMap

__all__ = ["SSCMetrics", "SSCScores"]

IOU_EPS = 1e-15
PR_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class SSCScores:
    """Scores of an accumulated confusion matrix (fractions in [0, 1]).

    Attributes:
        iou: (num_classes,) float64 per-class IoU, index = train id (0 = empty).
        miou: mean IoU over classes 1..num_classes-1.
        completion_iou: geometry IoU (occupied vs empty).
        precision: completion precision.
        recall: completion recall.
    """

    iou: np.ndarray
    miou: float
    completion_iou: float
    precision: float
    recall: float

    def to_dict(self, class_names: tuple[str, ...] = SEMANTIC_KITTI.names) -> dict[str, float]:
        """The official ``scores.txt`` keys plus precision and recall.

        Args:
            class_names: the label set's names (``LabelMap.names``), one per entry of ``iou``.
        """
        if len(class_names) < len(self.iou):
            raise ValueError(f"{len(self.iou)} IoUs but {len(class_names)} class names: pass the label set's names")
        out = {
            "iou_completion": self.completion_iou,
            "iou_mean": self.miou,
            "precision": self.precision,
            "recall": self.recall,
        }
        for c in range(1, len(self.iou)):
            out[f"iou_{class_names[c]}"] = float(self.iou[c])
        return out


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class SSCMetrics:
    """Accumulates a (num_classes, num_classes) int64 confusion matrix ``C[pred, gt]``.

    Args:
        num_classes: number of train ids including empty (0).
    """

    def __init__(self, num_classes: int = 20):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    @classmethod
    def for_labels(cls, labels: LabelMap) -> SSCMetrics:
        """Metrics over a label set's classes (``ModelConfig.label_set()``)."""
        return cls(labels.num_classes)

    def reset(self) -> None:
        self.confusion[:] = 0

    def update(self, pred, gt) -> None:
        """Add one frame (or a batch).

        Args:
            pred: integer train ids (array or tensor), same shape as ``gt``.
            gt: integer train ids; 255 marks voxels that are not evaluated.

        Raises:
            ValueError: shapes differ, a ground-truth id is neither a class nor 255, or a
                prediction inside the evaluated voxels is not a class id.
        """
        pred, gt = _to_numpy(pred), _to_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        gt = gt.reshape(-1).astype(np.int64)
        pred = pred.reshape(-1).astype(np.int64)
        mask = gt != IGNORE
        gt, pred = gt[mask], pred[mask]
        n = self.num_classes
        if gt.size and (gt.min() < 0 or gt.max() >= n):
            raise ValueError(
                f"ground truth has id {int(gt.max() if gt.max() >= n else gt.min())}, "
                f"expected 0..{n - 1} or {IGNORE}"
            )
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            bad = int(pred.max() if pred.max() >= n else pred.min())
            raise ValueError(f"prediction has id {bad} on an evaluated voxel, expected 0..{n - 1}")
        self.confusion += np.bincount(pred * n + gt, minlength=n * n).reshape(n, n)

    def merge(self, other: SSCMetrics) -> None:
        """Add another accumulator's counts (e.g. from another rank)."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge {other.num_classes}-class metrics into {self.num_classes}"
            )
        self.confusion += other.confusion

    def compute(self) -> SSCScores:
        C = self.confusion.astype(np.float64)
        tp = np.diag(C)
        fp = C.sum(1) - tp
        fn = C.sum(0) - tp
        iou = tp / (tp + fp + fn + IOU_EPS)
        comp_tp = C[1:, 1:].sum()
        union = C.sum() - C[0, 0]
        return SSCScores(
            iou=iou,
            miou=float(iou[1:].mean()),
            completion_iou=float(comp_tp / union) if union > 0 else 0.0,
            precision=float(comp_tp / (C[1:, :].sum() + PR_EPS)),
            recall=float(comp_tp / (C[:, 1:].sum() + PR_EPS)),
        )
