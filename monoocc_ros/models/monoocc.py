"""The MonoOcc-S student network: image -> semantic occupancy logits on ``cfg.grid`` (256x256x32).

Pieces: ResNet trunk (to layer3) -> single-level FPN -> [monocular proposals] -> OccupancyBlock
(DCA + mask token + DSA + ICA) -> OccupancyHead; a 2D semantic decoder for training.

Example:
    >>> model = MonoOccStudent(get_model_config("tiny")).eval()
    >>> out = model(torch.rand(1, 3, 96, 320), K, T_cam_grid)
    >>> out["ssc_logits"].shape
    torch.Size([1, 20, 256, 256, 32])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monoocc_ros.models.config import ModelConfig, TrunkConfig
from monoocc_ros.models.fpn import FPN
from monoocc_ros.models.heads import OccupancyHead, SemDecoder
from monoocc_ros.models.precision import autocast_off
from monoocc_ros.models.proposals import MonocularProposals
from monoocc_ros.models.trunk import FrozenBatchNorm2d, build_trunk
from monoocc_ros.models.voxel_transformer import OccupancyBlock, stage_timer

__all__ = ["OccupancyNetwork", "MonoOccStudent", "lidar2img_from", "count_parameters", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lidar2img_from(K: Tensor, T_cam_grid: Tensor) -> Tensor:
    """(..., 3, 3) intrinsics and (..., 4, 4) grid->camera -> (..., 4, 4) K4 @ T_cam_grid, in float32
    whatever the caller's autocast (:mod:`~monoocc_ros.models.precision`)."""
    T_cam_grid = T_cam_grid.to(torch.float32)
    K4 = torch.zeros(*K.shape[:-2], 4, 4, dtype=torch.float32, device=K.device)
    K4[..., :3, :3] = K.to(torch.float32)
    K4[..., 3, 3] = 1
    with autocast_off(K4):
        return K4 @ T_cam_grid


def count_parameters(module: nn.Module) -> int:
    """Parameters plus the affine terms of frozen BatchNorms (buffers, but weights of the model)."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n += m.weight.numel() + m.bias.numel()
    return n


class OccupancyNetwork(nn.Module):
    """The parts the student and the privileged teacher share: trunk, FPN neck, monocular
    proposals, occupancy block, occupancy head and 2D semantic decoder (built from ``cfg``).

    Args:
        cfg: the model config (sections, output grid, label set).
        trunk: the image trunk's config when it differs from ``cfg.trunk`` (the teacher's deeper one).
    """

    def __init__(self, cfg: ModelConfig, trunk: TrunkConfig | None = None):
        super().__init__()
        self.cfg = cfg
        c = cfg.voxel.embed_dim
        self.backbone = build_trunk(cfg.trunk if trunk is None else trunk)
        self.neck = FPN(self.backbone.out_channels, cfg.neck.out_channels)
        self.proposals = MonocularProposals(c, cfg.proposal, cfg.grid) if cfg.proposal.mode == "monocular" else None
        self.occupancy = OccupancyBlock(cfg.voxel, cfg.coarse_grid)
        self.head = OccupancyHead(c, cfg.head.num_classes, cfg.head.chunk_x)
        self.sem_decoder = SemDecoder(c, cfg.head.num_classes) if cfg.sem_decoder.enabled else None
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def _coarse(self) -> str:
        """The coarse grid's size as text for messages, e.g. "128, 128, 16"."""
        return ", ".join(map(str, self.occupancy.grid_size))

    def image_features(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, C, H/16, W/16) FPN features (ImageNet-normalised inside)."""
        return self.neck(self.backbone((image - self.pixel_mean) / self.pixel_std))


class MonoOccStudent(OccupancyNetwork):
    """MonoOcc student. See :meth:`forward` for inputs and outputs."""

    def encode(
        self,
        image: Tensor,
        K: Tensor,
        T_cam_grid: Tensor,
        proposals: Tensor | None = None,
        timings: dict[str, float] | None = None,
    ) -> dict[str, Tensor]:
        """Everything up to the voxel features (no occupancy head); see :meth:`forward`."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        B, _, H, W = image.shape
        dev = image.device
        out: dict[str, Tensor] = {}
        with stage_timer(timings, "backbone_neck", dev):
            feats = self.image_features(image)
        lidar2img = lidar2img_from(K.to(torch.float32), T_cam_grid.to(torch.float32))
        mode = self.cfg.proposal.mode
        with stage_timer(timings, "proposals", dev):
            if mode == "monocular":
                out.update(self.proposals(feats, lidar2img, (H, W)))
                logits = out["proposal_logits"]
                # argmax over the two classes (ties go to "empty", as argmax's first maximum); a
                # comparison, because argmax over a size-2 middle axis runs a slow generic loop
                proposals = logits[:, 1] > logits[:, 0]
            elif mode == "all":
                proposals = None
            elif proposals is None:
                raise ValueError(f'proposal mode "external" needs proposals (B, {self._coarse}) bool')
        if proposals is not None and tuple(proposals.shape) != (B, *self.occupancy.grid_size):
            raise ValueError(f"proposals must be (B, {self._coarse}) bool, got {tuple(proposals.shape)}")
        # External (official) protocol: DCA runs on exactly the proposed voxels, however few, as
        # the official head does (none: every voxel keeps the mask token). Only the project's own
        # monocular stage falls back to the visible voxels below min_queries; that is reported.
        min_queries = self.cfg.proposal.min_queries if mode == "monocular" else 0
        if proposals is not None and min_queries > 0:
            out["query_fallback"] = proposals.flatten(1).sum(1) < min_queries
        out["voxel_features"] = self.occupancy(
            feats[:, None],
            lidar2img[:, None],
            (H, W),
            proposals,
            min_queries=min_queries,
            timings=timings,
        )
        if self.sem_decoder is not None and self.training:
            out["sem2d_logits"] = self.sem_decoder(feats)
        return out

    def forward(
        self, image: Tensor, K: Tensor, T_cam_grid: Tensor, proposals: Tensor | None = None
    ) -> dict[str, Tensor]:
        """
        Args:
            image: (B, 3, H, W) float RGB in [0, 1].
            K: (B, 3, 3) intrinsics of that image.
            T_cam_grid: (B, 4, 4) grid (velodyne) frame -> camera optical frame.
            proposals: (B, X/2, Y/2, Z/2) bool on the coarse grid, required in proposal mode
                "external", else ignored.

        Shapes below are for the SemanticKITTI grid, (X, Y, Z) = ``cfg.grid.size`` = (256, 256, 32),
        and 20 classes (``cfg.head.num_classes``).

        Returns:
            "voxel_features" (B, C, 128, 128, 16) ICA output (distillation target);
            "ssc_logits" (B, 20, 256, 256, 32);
            in training with the 2D decoder: "sem2d_logits" (B, 20, 4*Hf, 4*Wf), Hf = ceil(H/16);
            in monocular proposal mode: "depth_logits" (B, D, Hf, Wf), "depth" (B, 1, Hf, Wf) metres,
            "proposal_logits" (B, 2, 128, 128, 16), "query_fallback" (B,) bool: fewer than
            ``min_queries`` proposals, so DCA queried every visible voxel instead.
        """
        out = self.encode(image, K, T_cam_grid, proposals)
        out["ssc_logits"] = self.head(out["voxel_features"])
        return out

    @torch.no_grad()
    def predict(
        self,
        image: Tensor,
        K: Tensor,
        T_cam_grid: Tensor,
        proposals: Tensor | None = None,
        with_confidence: bool = False,
        timings: dict[str, float] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Inference path with the chunked argmax head.

        Returns:
            labels (B, 256, 256, 32) uint8 and confidence (same shape, uint8) or None.
        """
        out = self.encode(image, K, T_cam_grid, proposals, timings)
        with stage_timer(timings, "head", image.device):
            return self.head.predict(out["voxel_features"], with_confidence)
