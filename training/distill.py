"""Feature distillation from the frozen teacher into the student's ICA voxel features.

MonoOcc distils the (B, C, 128, 128, 16) ICA output, on voxels whose half-resolution ground
truth is non-empty and valid (spec §4). The released loss is
``nn.KLDivLoss(reduction="mean", log_target=True)(s, t)`` on *raw* features, i.e. the mean
of ``exp(t) * (t - s)`` over all masked elements, times 3.5. Its gradient with respect to
the student is ``-exp(t) / numel`` whatever ``s`` is, so the loss has no lower bound: it
keeps pushing the student along ``exp(t)`` instead of pulling it onto ``t``. The head's
LayerNorm hides this from the SSC output. We reproduce it as ``released_kl`` and offer
bounded losses that are zero exactly when the features agree:

- ``mse``: mean squared error of the LayerNorm-ed (no affine) feature vectors, in [0, 4].
- ``cosine``: ``1 - cos(s, t)`` per voxel, in [0, 2].
- ``softmax_kl``: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` over channels, >= 0.

Because ``released_kl`` has no lower bound, the trainer watches the RMS of the distilled
student features (:func:`feature_rms`) and stops with :class:`FeatureDriftError` once it passes
``distill.max_feature_rms`` (:func:`check_feature_drift`). The features are LayerNorm outputs,
so they start at RMS ~1; the released loss then shifts the norm's bias along ``exp(t)`` by
about the learning rate every step, without end.

The teacher-feature cache (``dump-teacher``) lives in :mod:`training.feature_cache`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from monoocc_ros.labels import EMPTY, IGNORE

__all__ = [
    "DISTILL_MODES",
    "distill_mask",
    "masked_voxels",
    "released_kl_loss",
    "normalized_mse_loss",
    "cosine_loss",
    "softmax_kl_loss",
    "feature_distance",
    "feature_rms",
    "FeatureDriftError",
    "check_feature_drift",
    "DistillLoss",
]

DISTILL_MODES = ("released_kl", "mse", "cosine", "softmax_kl")


def distill_mask(labels_half: Tensor) -> Tensor:
    """(B, X, Y, Z) int half-resolution train ids -> (B, X, Y, Z) bool, True on occupied valid voxels."""
    return (labels_half != EMPTY) & (labels_half != IGNORE)


def masked_voxels(features: Tensor, mask: Tensor) -> Tensor:
    """Gather the feature vectors of masked voxels.

    Args:
        features: (B, C, X, Y, Z) voxel features.
        mask: (B, X, Y, Z) bool.

    Returns:
        (N, C) features of the N masked voxels, in (b, x, y, z) order.
    """
    if features.shape[0] != mask.shape[0] or features.shape[2:] != mask.shape[1:]:
        raise ValueError(
            f"features {tuple(features.shape)} and mask {tuple(mask.shape)} do not match"
        )
    # (B, C, X, Y, Z) -> (B, X, Y, Z, C) so that boolean indexing keeps channel vectors
    return features.permute(0, 2, 3, 4, 1)[mask]


def released_kl_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """The official loss: ``KLDivLoss(reduction="mean", log_target=True)`` on raw (N, C) features.

    Written out as ``mean(exp(t) * (t - s))`` because PyTorch announces that ``reduction="mean"``
    of ``kl_div`` will change meaning; the test checks equality with the literal call.
    """
    return (teacher.exp() * (teacher - student)).mean()


def _normalize(x: Tensor) -> Tensor:
    return F.layer_norm(x.float(), x.shape[-1:])


def normalized_mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error of LayerNorm-ed (N, C) features; bounded by 4, zero at equality."""
    return F.mse_loss(_normalize(student), _normalize(teacher))


def cosine_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean of ``1 - cos`` between (N, C) feature vectors; in [0, 2], zero at equality."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def softmax_kl_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` over channels, averaged over voxels; >= 0."""
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    return kl.mean() * temperature**2


def feature_distance(student: Tensor, teacher: Tensor, labels_half: Tensor) -> Tensor:
    """Scale-free student-teacher distance: normalised MSE on the distillation mask (0 if empty)."""
    mask = distill_mask(labels_half)
    if not bool(mask.any()):
        return student.new_zeros(())
    return normalized_mse_loss(masked_voxels(student, mask), masked_voxels(teacher, mask))


def feature_rms(features: Tensor, labels_half: Tensor) -> Tensor:
    """Root mean square of the (B, C, X, Y, Z) features on the distillation mask (0 if empty)."""
    mask = distill_mask(labels_half)
    if not bool(mask.any()):
        return features.new_zeros(())
    return masked_voxels(features.detach().float(), mask).square().mean().sqrt()


class FeatureDriftError(RuntimeError):
    """The distilled student features left the configured range (``distill.max_feature_rms``)."""


def check_feature_drift(rms: float, limit: float, *, mode: str, step: int) -> None:
    """Raise :class:`FeatureDriftError` when ``rms`` exceeds ``limit`` (``limit <= 0`` disables).

    Args:
        rms: RMS of the student's masked voxel features (:func:`feature_rms`).
        limit: ``distill.max_feature_rms``.
        mode: the distillation mode, named in the message.
        step: the global step about to be taken, named in the message.
    """
    if limit > 0 and not rms <= limit:  # `not <=` also catches NaN
        hint = (
            "released_kl has no lower bound and pushes the features along exp(teacher) forever; "
            "use distill.mode=mse, cosine or softmax_kl, or a lower distill.weight / optim.lr"
            if mode == "released_kl"
            else "lower distill.weight or optim.lr"
        )
        raise FeatureDriftError(
            f"student voxel-feature RMS {rms:.4g} exceeds distill.max_feature_rms={limit:g} at global step "
            f"{step} (distill.mode={mode}): {hint}; or raise distill.max_feature_rms (0 disables the check)"
        )


class DistillLoss(nn.Module):
    """Weighted distillation term on masked voxel features.

    Args:
        mode: one of :data:`DISTILL_MODES`.
        weight: multiplier of the loss (3.5 for MonoOcc-S).
        temperature: softmax temperature, used by ``softmax_kl`` only.

    Example:
        >>> loss = DistillLoss("mse", weight=1.0)
        >>> f = torch.randn(1, 8, 4, 4, 2)
        >>> float(loss(f, f, torch.ones(1, 4, 4, 2, dtype=torch.long)))
        0.0
    """

    def __init__(self, mode: str, weight: float, temperature: float = 1.0):
        super().__init__()
        if mode not in DISTILL_MODES:
            raise ValueError(f"distillation mode {mode!r} is not one of {DISTILL_MODES}")
        self.mode = mode
        self.weight = weight
        self.temperature = temperature

    def forward(self, student: Tensor, teacher: Tensor, labels_half: Tensor) -> Tensor:
        """Loss on (B, C, X, Y, Z) student and teacher features with (B, X, Y, Z) half labels.

        Returns the weighted scalar; zero (still attached to the graph) when no voxel is masked.
        """
        if student.shape != teacher.shape:
            raise ValueError(
                f"student features {tuple(student.shape)} and teacher features "
                f"{tuple(teacher.shape)} differ; was the cache made for another model config?"
            )
        mask = distill_mask(labels_half)
        if not bool(mask.any()):
            return student.sum() * 0.0
        s = masked_voxels(student, mask)
        t = masked_voxels(teacher, mask).to(s.dtype)
        if self.mode == "released_kl":
            value = released_kl_loss(s.float(), t.float())
        elif self.mode == "mse":
            value = normalized_mse_loss(s, t)
        elif self.mode == "cosine":
            value = cosine_loss(s, t)
        else:
            value = softmax_kl_loss(s, t, self.temperature)
        return value * self.weight
