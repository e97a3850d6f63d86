"""MonoOcc training losses (spec §2, §5.1) plus the monocular proposal stage's losses.

Terms (each returned by name, plus "loss" = weighted sum of those that apply):
    loss_ce_3d     class-weighted CE over the output grid (256x256x32 for SemanticKITTI; weights from the
                   model's label set), plain mean over valid voxels
    loss_sem_scal  MonoScene semantic scene-class affinity loss
    loss_geo_scal  MonoScene geometric scene-class affinity loss
    loss_sem_2d    2D semantic CE on the stride-4 decoder output (labels resized nearest)
    loss_depth     depth-bin CE of the proposal stage against projected LiDAR depth
    loss_proposal  proposal CE at 128x128x16 against the binarised half-scale labels

Distillation is added by the training code, not here.

Example:
    >>> losses = MonoOccLoss(LossConfig())(model(batch["image"], batch["K"], batch["T_cam_grid"]), batch)
    >>> losses["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI, LabelMap
from monoocc_ros.models.config import ProposalConfig
from monoocc_ros.models.proposals import depth_bin_edges

__all__ = ["LossConfig", "MonoOccLoss", "ce_3d_loss", "sem_scal_loss", "geo_scal_loss", "sem_2d_loss", "depth_bin_loss"]


@dataclass(frozen=True)
class LossConfig:
    """Loss weights. The first four are the official MonoOcc-S ratios (spec §5.1)."""

    ce_3d: float = 2.0
    sem_scal: float = 1.0
    geo_scal: float = 0.5
    sem_2d: float = 2.5
    depth: float = 1.0
    proposal: float = 1.0


def _flat_valid(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K, ...) logits -> log-softmax (M, K) and targets (M,) at the M voxels with label != 255."""
    K = logits.shape[1]
    # (B, K, X, Y, Z) -> (B*X*Y*Z, K); free when the head produced a channel-last tensor
    flat = logits.movedim(1, -1).reshape(-1, K)
    target = labels.reshape(-1)
    valid = target != IGNORE
    return flat[valid].float().log_softmax(-1), target[valid]


def _bce_one(x: Tensor) -> Tensor:
    return F.binary_cross_entropy(x.clamp(0, 1), torch.ones_like(x), reduction="none")


def _ce_3d(log_probs: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    if target.numel() == 0:
        return log_probs.sum() * 0
    picked = log_probs.gather(1, target[:, None])[:, 0]
    return -(picked * class_weights[target]).sum() / target.numel()


def _sem_scal(probs: Tensor, target: Tensor) -> Tensor:
    M, K = probs.shape
    if M == 0:
        return probs.sum() * 0
    # probability of each voxel's own class, summed per class = soft true positives
    tp = torch.zeros(K, dtype=probs.dtype, device=probs.device).index_add(0, target, probs.gather(1, target[:, None])[:, 0])
    pred_sum = probs.sum(0)
    count = torch.bincount(target, minlength=K).to(probs.dtype)
    present = count > 0
    negatives = M - count
    precision = tp / pred_sum.clamp(min=1e-12)
    recall = tp / count.clamp(min=1)
    specificity = (negatives - (pred_sum - tp)) / negatives.clamp(min=1)
    per_class = _bce_one(precision) * (pred_sum > 0) + _bce_one(recall) + _bce_one(specificity) * (negatives > 0)
    return per_class[present].sum() / present.sum()


def _geo_scal(probs: Tensor, target: Tensor) -> Tensor:
    if target.numel() == 0:
        return probs.sum() * 0
    empty = probs[:, EMPTY]
    nonempty = 1 - empty
    occupied = (target != EMPTY).to(probs.dtype)
    inter = (occupied * nonempty).sum()
    precision = inter / nonempty.sum().clamp(min=1e-12)
    recall = inter / occupied.sum().clamp(min=1e-12)
    specificity = ((1 - occupied) * empty).sum() / (1 - occupied).sum().clamp(min=1e-12)
    return _bce_one(precision) + _bce_one(recall) + _bce_one(specificity)


def ce_3d_loss(logits: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
    """Class-weighted CE, summed over voxels with label != 255 and divided by their count.

    This is the official plain mean, not PyTorch's mean normalised by the summed weights.

    Args:
        logits: (B, K, X, Y, Z). labels: (B, X, Y, Z) int64, 255 = ignore. class_weights: (K,).
    """
    log_probs, target = _flat_valid(logits, labels)
    return _ce_3d(log_probs, target, class_weights.to(log_probs.device))


def sem_scal_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """MonoScene sem_scal: for each class present in the valid GT (class 0 included), BCE of
    precision, recall and specificity against 1; averaged over the present classes.

    Args:
        logits: (B, K, X, Y, Z). labels: (B, X, Y, Z) int64, 255 = ignore.
    """
    log_probs, target = _flat_valid(logits, labels)
    return _sem_scal(log_probs.exp(), target)


def geo_scal_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """MonoScene geo_scal: BCE of occupied-vs-empty precision, recall and specificity against 1.

    Args:
        logits: (B, K, X, Y, Z). labels: (B, X, Y, Z) int64, 255 = ignore.
    """
    log_probs, target = _flat_valid(logits, labels)
    return _geo_scal(log_probs.exp(), target)


def sem_2d_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """2D CE: labels (B, H, W) nearest-resized to the logits' (h, w), 255 ignored, mean over valid pixels.

    Args:
        logits: (B, K, h, w). labels: (B, H, W) int64.
    """
    small = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    if not bool((small != IGNORE).any()):
        return logits.sum() * 0
    return F.cross_entropy(logits.float(), small, ignore_index=IGNORE)


def depth_bin_loss(depth_logits: Tensor, depth: Tensor, bin_edges: Tensor) -> Tensor:
    """CE of the depth-bin logits at the feature cells hit by LiDAR points.

    Args:
        depth_logits: (B, D, h, w) at the feature stride. depth: (B, H, W) metres, 0 = no point.
        bin_edges: (D + 1,) metres.
    """
    B, D, h, w = depth_logits.shape
    H, W = depth.shape[-2:]
    b, v, u = (depth > 0).nonzero(as_tuple=True)
    d = depth[b, v, u].contiguous()
    bins = torch.bucketize(d, bin_edges.to(d.dtype)) - 1
    keep = (bins >= 0) & (bins < D)
    if not bool(keep.any()):
        return depth_logits.sum() * 0
    b, v, u, bins = b[keep], v[keep], u[keep], bins[keep]
    row = torch.div(v * h, H, rounding_mode="floor")
    col = torch.div(u * w, W, rounding_mode="floor")
    # (B, D, h, w) -> per-point (P, D) logits of the cell containing the point
    picked = depth_logits.float().permute(0, 2, 3, 1)[b, row, col]
    return F.cross_entropy(picked, bins)


class MonoOccLoss(nn.Module):
    """All student losses in one module; terms whose outputs are absent are skipped.

    ``forward(outputs, batch)``: outputs of :class:`MonoOccStudent` (training mode), batch a
    BagDataset batch ("labels", "labels_half", "sem2d", "depth").

    Args:
        cfg: loss weights. proposal: the model's proposal settings.
        labels: the label set, whose voxel frequencies give the 3D CE class weights.
    """

    def __init__(
        self, cfg: LossConfig = LossConfig(), proposal: ProposalConfig = ProposalConfig(), labels: LabelMap = SEMANTIC_KITTI
    ):
        super().__init__()
        self.cfg = cfg
        self.depth_range_m = (proposal.depth_min_m, proposal.depth_max_m)
        self.register_buffer("class_weights", torch.from_numpy(labels.class_weights()), persistent=False)
        self.register_buffer("proposal_weights", torch.tensor(proposal.class_weights), persistent=False)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        # one log-softmax over the valid voxels feeds the three 3D terms
        log_probs, target = _flat_valid(outputs["ssc_logits"], batch["labels"].long())
        probs = log_probs.exp()
        terms = {
            "loss_ce_3d": (cfg.ce_3d, _ce_3d(log_probs, target, self.class_weights)),
            "loss_sem_scal": (cfg.sem_scal, _sem_scal(probs, target)),
            "loss_geo_scal": (cfg.geo_scal, _geo_scal(probs, target)),
        }
        if "sem2d_logits" in outputs and "sem2d" in batch:
            terms["loss_sem_2d"] = (cfg.sem_2d, sem_2d_loss(outputs["sem2d_logits"], batch["sem2d"].long()))
        if "depth_logits" in outputs and "depth" in batch:
            edges = depth_bin_edges(*self.depth_range_m, outputs["depth_logits"].shape[1]).to(batch["depth"].device)
            terms["loss_depth"] = (cfg.depth, depth_bin_loss(outputs["depth_logits"], batch["depth"].float(), edges))
        if "proposal_logits" in outputs and "labels_half" in batch:
            half = batch["labels_half"].long()
            target = torch.where(half == IGNORE, half, (half != EMPTY).long())
            prop_logits = outputs["proposal_logits"].float()
            if bool((target != IGNORE).any()):
                prop = F.cross_entropy(prop_logits, target, weight=self.proposal_weights, ignore_index=IGNORE)
            else:
                prop = prop_logits.sum() * 0
            terms["loss_proposal"] = (cfg.proposal, prop)
        out = {name: value for name, (_, value) in terms.items()}
        out["loss"] = sum(weight * value for weight, value in terms.values())
        return out

    @classmethod
    def for_model(cls, model: nn.Module, cfg: LossConfig = LossConfig()) -> MonoOccLoss:
        """Loss matching a model's proposal settings (depth range, proposal class weights) and label set."""
        return cls(cfg, model.cfg.proposal, model.cfg.label_set())
