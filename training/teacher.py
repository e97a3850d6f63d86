"""The privileged (teacher) branch: several frames, a larger backbone, the Cross View Transformer.

MonoOcc's teacher (spec §3) sees the current frame and past frames. Each frame is another
"camera" with its own ``lidar2img = K @ T_cam_grid`` built from the bag's poses (the dataset's
``temporal_T_cam_grid`` maps the *current* grid frame into each past camera). Per-view
features come from a ResNet-101 trunk (torchvision names, so ``resnet101-*.pth`` loads) and
the student's FPN; the :class:`~training.cvt.CrossViewTransformer` exchanges information
between consecutive views; then the student's :class:`OccupancyBlock` averages its DCA/ICA
over the views that see each voxel, and the student's head predicts the 256x256x32 grid.
``voxel_features`` (B, C, 128, 128, 16) is the distillation target.

Queries follow the base model config: ``monocular`` proposals are made from the current
view (as in the student), ``all`` uses every voxel.

Example:
    >>> teacher = MonoOccTeacher(get_model_config("tiny"), TeacherConfig(cvt_layers=2))
    >>> out = teacher(img, K, T, temporal_images, temporal_T)  # img (1,3,96,320), 4 past views
    >>> out["voxel_features"].shape
    torch.Size([1, 32, 128, 128, 16])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monoocc_ros.models.config import ModelConfig, model_config_from_dict
from monoocc_ros.models.monoocc import OccupancyNetwork, lidar2img_from
from monoocc_ros.models.trunk import load_torchvision_state_dict
from training.config import TeacherConfig
from training.cvt import CrossViewTransformer

__all__ = ["MonoOccTeacher", "load_teacher", "teacher_checkpoint_meta", "TEACHER_ROLE"]

TEACHER_ROLE = "teacher"


class MonoOccTeacher(OccupancyNetwork):
    """Multi-frame privileged MonoOcc branch: the student's parts on a deeper trunk, plus the CVT.

    Args:
        model_cfg: the student-sized base config (voxel stage, head, proposals, trunk width).
            The trunk is built from ``teacher_cfg.trunk(model_cfg.trunk)`` (same width and cut,
            ``backbone_depth`` deep); ``self.cfg`` stays the base config.
        teacher_cfg: backbone depth and CVT settings.
    """

    def __init__(self, model_cfg: ModelConfig, teacher_cfg: TeacherConfig):
        if model_cfg.proposal.mode == "external":
            raise ValueError('the teacher makes its own queries; proposal mode "external" is not supported')
        super().__init__(model_cfg, trunk=teacher_cfg.trunk(model_cfg.trunk))
        self.teacher_cfg = teacher_cfg
        # the deeper trunk runs on every view: its activations are what checkpointing saves most on
        self.backbone.gradient_checkpointing = model_cfg.voxel.gradient_checkpointing
        self.cvt = CrossViewTransformer(
            model_cfg.voxel.embed_dim, teacher_cfg.cvt_layers, teacher_cfg.cvt_splits, teacher_cfg.cvt_ffn_expansion
        )

    def forward(
        self,
        image: Tensor,
        K: Tensor,
        T_cam_grid: Tensor,
        temporal_images: Tensor,
        temporal_T_cam_grid: Tensor,
    ) -> dict[str, Tensor]:
        """
        Args:
            image: (B, 3, H, W) float RGB in [0, 1], the current frame.
            K: (B, 3, 3) intrinsics (shared by all frames of the camera).
            T_cam_grid: (B, 4, 4) current grid frame -> current camera.
            temporal_images: (B, T, 3, H, W) the extra frames (T may be 0).
            temporal_T_cam_grid: (B, T, 4, 4) current grid frame -> each extra frame's camera.

        Returns:
            "voxel_features" (B, C, 128, 128, 16), "ssc_logits" (B, 20, 256, 256, 32); in training
            "sem2d_logits" of the current view; in monocular proposal mode the proposal outputs
            ("depth_logits", "depth", "proposal_logits") as the student's.
        """
        B, _, H, W = image.shape
        if temporal_images.shape[0] != B or temporal_images.shape[2:] != image.shape[1:]:
            raise ValueError(
                f"temporal_images {tuple(temporal_images.shape)} do not fit image {tuple(image.shape)}"
            )
        T = temporal_images.shape[1]
        if tuple(temporal_T_cam_grid.shape) != (B, T, 4, 4):
            raise ValueError(f"temporal_T_cam_grid must be ({B}, {T}, 4, 4), got {tuple(temporal_T_cam_grid.shape)}")
        views = torch.cat([image[:, None], temporal_images.to(image.dtype)], 1)  # (B, V, 3, H, W)
        V = views.shape[1]
        feats = self.image_features(views.flatten(0, 1))  # (B*V, C, Hf, Wf)
        feats = feats.view(B, V, *feats.shape[1:])
        poses = torch.cat([T_cam_grid[:, None], temporal_T_cam_grid], 1).to(torch.float32)  # (B, V, 4, 4)
        lidar2img = lidar2img_from(K.to(torch.float32)[:, None].expand(B, V, 3, 3), poses)
        out: dict[str, Tensor] = {}
        current = feats[:, 0]
        fused = self.cvt(feats)
        proposals = None
        if self.proposals is not None:
            out.update(self.proposals(fused[:, 0], lidar2img[:, 0], (H, W)))
            proposals = out["proposal_logits"].argmax(1).to(torch.bool)
        out["voxel_features"] = self.occupancy(
            fused, lidar2img, (H, W), proposals, min_queries=self.cfg.proposal.min_queries
        )
        out["ssc_logits"] = self.head(out["voxel_features"])
        if self.sem_decoder is not None and self.training:
            out["sem2d_logits"] = self.sem_decoder(current)
        return out

    def load_backbone(self, path: Path) -> dict[str, list[str]]:
        """Load a torchvision ResNet state dict file (e.g. ``resnet101-63fe2227.pth``) into the trunk."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher.backbone_weights: {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return load_torchvision_state_dict(self.backbone, state)


def teacher_checkpoint_meta(teacher_cfg: TeacherConfig, temporal_offsets, image_scale: float) -> dict[str, Any]:
    """The ``meta`` block that marks a checkpoint as a teacher and records how it sees data."""
    return {
        "role": TEACHER_ROLE,
        "teacher_config": dataclasses.asdict(teacher_cfg),
        "temporal_offsets": list(temporal_offsets),
        "image_scale": float(image_scale),
    }


def load_teacher(path: Path, map_location: str | torch.device = "cpu") -> tuple[MonoOccTeacher, dict[str, Any]]:
    """Rebuild a frozen teacher from its checkpoint.

    Returns:
        (teacher in eval mode with ``requires_grad`` off, the checkpoint's ``meta``).

    Raises:
        FileNotFoundError / ValueError: missing file, or a checkpoint that is not a teacher.
    """
    from monoocc_ros.models.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train a teacher first")
    ckpt = load_checkpoint(path, map_location=map_location)
    meta = ckpt.get("meta") or {}
    if meta.get("role") != TEACHER_ROLE:
        raise ValueError(f"{path} is not a teacher checkpoint (meta.role={meta.get('role')!r})")
    teacher_cfg = TeacherConfig(**meta["teacher_config"])
    model = MonoOccTeacher(model_config_from_dict(ckpt["model_config"]), teacher_cfg)
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval().requires_grad_(False)
    return model, meta
