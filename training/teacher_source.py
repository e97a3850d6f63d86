"""Where a student's distillation targets come from: the frozen teacher run online, or its cache.

Both sources answer :meth:`TeacherSource.features` for a training batch with the teacher's
voxel features (B, C, 128, 128, 16) float32 on the batch's device; the trainer does not know
which one it has. :func:`open_teacher_source` reads the ``distill`` config and picks one (or
none: teacher runs, and students without a teacher).

* :class:`OnlineTeacher`: runs the teacher on the batch's current and past frames (the dataset
  must load ``temporal_offsets``); it also measures the validation feature distance.
* :class:`CachedTeacher`: reads the fp16 features ``dump-teacher`` wrote for the training bags
  (:mod:`training.feature_cache`), refusing a cache made by another teacher, bags or settings.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.config import TrainConfig
from training.ddp import autocast
from training.errors import TrainingError
from training.feature_cache import TeacherFeatureCache, cache_settings

__all__ = ["TeacherSource", "OnlineTeacher", "CachedTeacher", "open_teacher_source", "teacher_forward"]

log = logging.getLogger(__name__)


def teacher_forward(teacher: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
    """The teacher on a batch: current image, its camera and the past frames the dataset loaded."""
    return teacher(batch["image"], batch["K"], batch["T_cam_grid"], batch["temporal_images"], batch["temporal_T_cam_grid"])


class TeacherSource(ABC):
    """The frozen teacher's voxel features for training batches.

    Attributes:
        temporal_offsets: past frames the dataset must load for this source.
        serves_validation: whether :meth:`features` also answers for validation batches.
    """

    temporal_offsets: tuple[int, ...] = ()
    serves_validation: bool = False

    @abstractmethod
    def features(self, batch: dict[str, Any]) -> Tensor:
        """(B, C, 128, 128, 16) float32 teacher features of ``batch`` (already on the device)."""


class OnlineTeacher(TeacherSource):
    """The teacher network itself, frozen, run on every batch.

    Args:
        teacher: the frozen teacher (eval mode, no gradients) on ``device``.
        meta: its checkpoint's ``meta`` (``temporal_offsets``).
        precision: autocast precision of the run.
        device: where the batches are.
    """

    serves_validation = True

    def __init__(self, teacher: nn.Module, meta: dict[str, Any], precision: str, device: torch.device):
        self.teacher = teacher
        self.meta = meta
        self.precision = precision
        self.device = device
        self.temporal_offsets = tuple(meta["temporal_offsets"])

    @classmethod
    def load(cls, checkpoint: Path, precision: str, device: torch.device) -> OnlineTeacher:
        """Rebuild the teacher from ``checkpoint``; TrainingError names a missing or wrong file."""
        from training.teacher import load_teacher

        try:
            teacher, meta = load_teacher(checkpoint, map_location="cpu")
        except (FileNotFoundError, ValueError) as exc:
            raise TrainingError(f"distill.teacher_checkpoint: {exc}") from None
        return cls(teacher.to(device), meta, precision, device)

    @torch.no_grad()
    def features(self, batch: dict[str, Any]) -> Tensor:
        with autocast(self.precision, self.device):
            out = teacher_forward(self.teacher, batch)
        return out["voxel_features"].float()


class CachedTeacher(TeacherSource):
    """Features ``dump-teacher`` wrote for the training split, looked up by dataset index and stamp."""

    def __init__(self, cache: TeacherFeatureCache, device: torch.device):
        self.cache = cache
        self.device = device

    @classmethod
    def open(cls, cfg: TrainConfig, device: torch.device) -> CachedTeacher:
        """Open ``<distill.cache_dir>/train`` for this run's teacher, bags and image scale.

        Raises:
            TrainingError: no cache_dir, no teacher checkpoint, or a cache that does not match.
        """
        from monoocc_ros.models.checkpoint import load_checkpoint
        from training.feature_cache import CacheMismatchError

        dc = cfg.distill
        if not dc.cache_dir:
            raise TrainingError("distill.source=cached needs distill.cache_dir (written by dump-teacher)")
        checkpoint = Path(dc.teacher_checkpoint)
        if not checkpoint.is_file():
            raise TrainingError(f"distill.teacher_checkpoint: {checkpoint} does not exist")
        meta = load_checkpoint(checkpoint).get("meta") or {}
        try:
            cache = TeacherFeatureCache.open(
                Path(dc.cache_dir) / "train",
                teacher_checkpoint=checkpoint,
                bags=[Path(b) for b in cfg.data.train_bags],
                settings=cache_settings(meta.get("temporal_offsets", []), cfg.data.image_scale),
            )
        except (FileNotFoundError, CacheMismatchError) as exc:
            raise TrainingError(f"distill.cache_dir: {exc}") from None
        return cls(cache, device)

    def features(self, batch: dict[str, Any]) -> Tensor:
        feats = [self.cache.get(int(i), int(s)) for i, s in zip(batch["index"].tolist(), batch["stamp_ns"].tolist())]
        return torch.stack(feats).to(self.device, torch.float32)


def open_teacher_source(cfg: TrainConfig, device: torch.device) -> TeacherSource | None:
    """The student's teacher source from ``cfg.distill``, or None (teacher runs, no teacher configured).

    With ``distill.mode=off`` an existing online teacher checkpoint is still loaded, only to
    measure the student-teacher feature distance for comparison.

    Raises:
        TrainingError: distillation on without a teacher checkpoint, or a bad checkpoint or cache.
    """
    dc = cfg.distill
    if cfg.role == "teacher":
        return None
    if dc.mode == "off":
        if not dc.teacher_checkpoint or dc.source != "online":
            return None
        if not Path(dc.teacher_checkpoint).is_file():
            log.info(
                "[train] distill.mode=off: %s not found, the student-teacher feature distance is not measured",
                dc.teacher_checkpoint,
            )
            return None
    elif not dc.teacher_checkpoint:
        raise TrainingError(f"distill.mode={dc.mode} needs distill.teacher_checkpoint (or set distill.mode=off)")
    if dc.source == "online":
        return OnlineTeacher.load(Path(dc.teacher_checkpoint), cfg.precision, device)
    return CachedTeacher.open(cfg, device)
