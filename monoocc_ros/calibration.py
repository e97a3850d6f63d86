"""Confidence calibration: expected calibration error and temperature scaling.

The published confidence of a voxel is its max softmax probability. Temperature scaling
(Guo et al. 2017) divides the logits by one scalar T > 0 fitted on validation data by
minimising the negative log-likelihood; the argmax (the labels) never changes, only how sure
the model says it is. The expected calibration error (ECE) bins voxels by confidence and
averages |accuracy - mean confidence| over bins, weighted by bin size.

Example:
    >>> hist = ReliabilityHistogram()
    >>> hist.update(np.array([0.9, 0.9, 0.6]), np.array([True, False, True]))
    >>> round(hist.ece(), 3)
    0.4
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ECE_BINS", "CalibrationMeter", "ReliabilityHistogram", "expected_calibration_error", "fit_temperature"]

ECE_BINS = 15


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


class ReliabilityHistogram:
    """Per-confidence-bin counts, summed confidences and correct predictions; mergeable over frames.

    Args:
        bins: equal-width bins over [0, 1].
    """

    def __init__(self, bins: int = ECE_BINS):
        self.bins = bins
        self.count = np.zeros(bins, dtype=np.int64)
        self.confidence = np.zeros(bins, dtype=np.float64)
        self.correct = np.zeros(bins, dtype=np.int64)

    def update(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Add voxels: confidence (N,) in [0, 1] (uint8 is read as value / 255), correct (N,) bool."""
        conf = np.asarray(confidence).reshape(-1)
        conf = conf.astype(np.float64) / 255.0 if conf.dtype == np.uint8 else conf.astype(np.float64)
        ok = np.asarray(correct, dtype=bool).reshape(-1)
        if conf.shape != ok.shape:
            raise ValueError(f"confidence {conf.shape} and correct {ok.shape} differ in length")
        idx = np.clip((conf * self.bins).astype(np.int64), 0, self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.confidence += np.bincount(idx, weights=conf, minlength=self.bins)
        self.correct += np.bincount(idx, weights=ok, minlength=self.bins).astype(np.int64)

    def merge(self, other: ReliabilityHistogram) -> None:
        self.count += other.count
        self.confidence += other.confidence
        self.correct += other.correct

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Expected calibration error in [0, 1]; NaN when empty."""
        if self.total == 0:
            return math.nan
        used = self.count > 0
        gap = np.abs(self.correct[used] - self.confidence[used])  # = count * |accuracy - confidence|
        return float(gap.sum() / self.total)

    def to_dict(self) -> dict:
        """Bin edges' count, per-bin accuracy and mean confidence (None for empty bins) and the ECE."""
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = self.correct / self.count
            conf = self.confidence / self.count
        none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
        return {"bins": self.bins, "count": self.count.tolist(), "accuracy": none(acc), "confidence": none(conf),
                "ece": _none_if_nan(self.ece())}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of (N,) confidences in [0, 1] against (N,) correctness."""
    hist = ReliabilityHistogram(bins)
    hist.update(confidence, correct)
    return hist.ece()


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 100) -> float:
    """The T > 0 minimising the NLL of ``softmax(logits / T)`` (optimised over log T with L-BFGS).

    Args:
        logits: (N, K) float logits of N voxels.
        labels: (N,) int64 ground-truth classes (no ignore entries).

    Returns:
        The temperature (1.0 when N is 0).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        return 1.0
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else 1.0


class CalibrationMeter:
    """ECE of a predictor's published confidence over evaluated frames, before and after scaling.

    "after" scores the confidence the predictor publishes (its model head's ``temperature``);
    "before" the same frames at temperature 1, which costs a second prediction per frame when
    the temperature is not 1. Only voxels with valid ground truth count.

    Args:
        predictor: a :class:`monoocc_ros.predictor.Predictor` built with ``confidence=True``.
    """

    def __init__(self, predictor, bins: int = ECE_BINS):
        self.predictor = predictor
        self.head = getattr(getattr(predictor, "model", None), "head", None)
        self.temperature = float(getattr(self.head, "temperature", 1.0))
        self.before, self.after = ReliabilityHistogram(bins), ReliabilityHistogram(bins)

    def update(self, image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray, prediction, ground_truth: np.ndarray) -> None:
        """Add one frame: its inputs, the published :class:`Prediction` and (256, 256, 32) ground truth."""
        from monoocc_ros.labels import IGNORE

        if prediction.confidence is None:
            raise ValueError("calibration needs a predictor built with confidence=True")
        valid = ground_truth != IGNORE
        self.after.update(prediction.confidence[valid], (prediction.labels == ground_truth)[valid])
        raw = prediction
        if self.temperature != 1.0 and self.head is not None:
            self.head.temperature = 1.0
            try:
                raw = self.predictor.predict(image, K, T_cam_grid)
            finally:
                self.head.temperature = self.temperature
        self.before.update(raw.confidence[valid], (raw.labels == ground_truth)[valid])

    def to_dict(self) -> dict:
        """temperature, ece_before, ece_after (fractions), voxels and both reliability histograms."""
        return {
            "temperature": self.temperature,
            "ece_before": _none_if_nan(self.before.ece()),
            "ece_after": _none_if_nan(self.after.ece()),
            "voxels": self.after.total,
            "reliability_before": self.before.to_dict(),
            "reliability_after": self.after.to_dict(),
        }
