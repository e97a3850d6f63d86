"""Validation during training: SSC scores over ranks through the predictor's inference path.

The labels come from the same calls :meth:`MonoOccStudent.predict` (what
:class:`~monoocc_ros.predictor.Predictor` runs) makes: the model's encoder, then the head's
chunked argmax, so a validation mIoU is the score the deployed checkpoint gets on those frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.data import to_device
from training.ddp import DistEnv, all_reduce_sum, autocast
from training.distill import feature_distance
from training.teacher_source import TeacherSource, teacher_forward

__all__ = ["ValidationResult", "predict_batch", "validate", "render_panel"]

log = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """Scores summed over ranks, and this rank's first batch with its prediction (for a picture).

    Attributes:
        scores: ``miou``, ``completion_iou``, the per-class scores of ``SSCScores.to_dict`` and,
            with a teacher, ``feature_distance``.
        first: (batch, labels (B, 256, 256, 32) uint8) of the first validation batch, or None.
    """

    scores: dict[str, float]
    first: tuple[dict[str, Any], Tensor] | None


def predict_batch(model: nn.Module, batch: dict[str, Any], role: str) -> tuple[Tensor, Tensor]:
    """Labels (B, 256, 256, 32) uint8 and voxel features (B, C, 128, 128, 16) of an eval-mode model.

    The student runs ``encode`` and ``head.predict`` as :meth:`MonoOccStudent.predict` does; the
    teacher (several views) runs its forward for the features, then the same head prediction.
    """
    if role == "teacher":
        features = teacher_forward(model, batch)["voxel_features"]
    else:
        features = model.encode(batch["image"], batch["K"], batch["T_cam_grid"], batch.get("proposals"))["voxel_features"]
    labels, _ = model.head.predict(features)
    return labels, features


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: Dataset,
    *,
    role: str,
    env: DistEnv,
    batch_size: int,
    num_workers: int,
    precision: str,
    teacher: TeacherSource | None = None,
) -> ValidationResult:
    """SSC metrics of ``model`` (unwrapped) on ``dataset``, each frame counted once over all ranks.

    Collective: every rank must call it. ``teacher`` (if it serves validation) adds the mean
    student-teacher ``feature_distance``.
    """
    from monoocc_ros.metrics import SSCMetrics

    model.eval()
    labels = model.cfg.label_set()  # the model's classes (ModelConfig.labels), not a fixed 20
    metrics = SSCMetrics.for_labels(labels)
    dist_sum = torch.zeros(2, dtype=torch.float64, device=env.device)
    # every rank takes every world_size-th frame, without the padding used in training,
    # so each validation frame is counted exactly once
    indices = list(range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers, generator=torch.Generator()
    )
    measure = teacher is not None and teacher.serves_validation
    first = None
    for batch in tqdm(loader, desc="val", disable=not env.is_main, leave=False):
        batch = to_device(batch, env.device)
        with autocast(precision, env.device):
            pred, features = predict_batch(model, batch, role)
        metrics.update(pred.cpu(), batch["labels"].cpu())
        if measure:
            t = teacher.features(batch)
            dist_sum[0] += float(feature_distance(features.float(), t, batch["labels_half"]))
            dist_sum[1] += 1
        if first is None:
            first = (batch, pred)
    confusion = torch.from_numpy(metrics.confusion).to(env.device)
    metrics.confusion = all_reduce_sum(confusion).cpu().numpy()
    all_reduce_sum(dist_sum)
    official = metrics.compute().to_dict(labels.names)
    scores = {"miou": official.pop("iou_mean"), "completion_iou": official.pop("iou_completion"), **official}
    if dist_sum[1] > 0:
        scores["feature_distance"] = float(dist_sum[0] / dist_sum[1])
    return ValidationResult(scores, first)


def render_panel(batch: dict[str, Any], pred: Tensor) -> np.ndarray | None:
    """Camera image, prediction and ground truth of the batch's first frame side by side (H, W, 3) uint8.

    None (with a warning naming why) where the picture cannot be made, e.g. without a renderer.
    """
    try:
        from monoocc_ros.camera import CameraModel
        from monoocc_ros.render import render_comparison

        image = (batch["image"][0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        camera = CameraModel(
            batch["K"][0].cpu().double().numpy(), batch["T_cam_grid"][0].cpu().double().numpy(), image.shape[:2]
        )
        gt = batch["labels"][0].cpu().numpy().astype(np.uint8)
        return render_comparison(image, pred[0].cpu().numpy().astype(np.uint8), gt, camera)
    except (ImportError, RuntimeError, ValueError) as exc:
        log.warning("[train] skipping the rendered prediction image: %s", exc)
        return None
