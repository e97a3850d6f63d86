"""The network a run trains: its config, construction (with pretrained trunks) and checkpoint payload.

A student's payload is a plain model checkpoint (:mod:`monoocc_ros.models.checkpoint`), so its
``best.pt`` / ``last.pt`` load in the Predictor; a teacher's carries the teacher ``meta``
(:func:`training.teacher.teacher_checkpoint_meta`) that :func:`training.teacher.load_teacher` needs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig
from training.ddp import unwrap
from training.errors import TrainingError

__all__ = ["resolve_model_config", "build_model", "model_payload"]


def resolve_model_config(cfg: TrainConfig):
    """The run's :class:`~monoocc_ros.models.config.ModelConfig`: the named model plus the run's switches.

    Raises:
        TrainingError: unknown model, or query files given to the teacher / missing for an
            external-proposal model.
    """
    from monoocc_ros.models.config import get_model_config

    try:
        model_cfg = get_model_config(cfg.model, cfg.model_overrides)
    except KeyError as exc:
        raise TrainingError(f"model: {exc.args[0]}") from None
    if cfg.grad_checkpointing:
        model_cfg = dataclasses.replace(model_cfg, voxel=dataclasses.replace(model_cfg.voxel, gradient_checkpointing=True))
    if cfg.data.queries:
        # official protocol: DCA queries come from the VoxFormer files, not from the model
        if cfg.role == "teacher":
            raise TrainingError("data.queries: the teacher makes its own queries; set it for the student only")
        model_cfg = dataclasses.replace(model_cfg, proposal=dataclasses.replace(model_cfg.proposal, mode="external"))
    elif model_cfg.proposal.mode == "external":
        raise TrainingError(f'model {cfg.model!r} is in proposal mode "external": set data.queries to the query files')
    return model_cfg


def build_model(cfg: TrainConfig, model_cfg) -> nn.Module:
    """A fresh teacher or student for ``cfg.role``, with the configured torchvision trunk weights.

    Raises:
        TrainingError: a configured backbone weights file that does not exist.
    """
    if cfg.role == "teacher":
        from training.teacher import MonoOccTeacher

        model = MonoOccTeacher(model_cfg, cfg.teacher)
        if cfg.teacher.backbone_weights:
            try:
                model.load_backbone(Path(cfg.teacher.backbone_weights))
            except FileNotFoundError as exc:
                raise TrainingError(str(exc)) from None
        return model
    from monoocc_ros.models.monoocc import MonoOccStudent
    from monoocc_ros.models.trunk import load_torchvision_state_dict

    model = MonoOccStudent(model_cfg)
    if cfg.student_backbone_weights:
        path = Path(cfg.student_backbone_weights)
        if not path.is_file():
            raise TrainingError(f"student_backbone_weights: {path} does not exist")
        load_torchvision_state_dict(model.backbone, torch.load(path, map_location="cpu", weights_only=True))
    return model


def model_payload(cfg: TrainConfig, model_cfg, model: nn.Module) -> dict[str, Any]:
    """The model checkpoint part of a training checkpoint: schema, config, weights, role ``meta``."""
    from monoocc_ros.models.checkpoint import SCHEMA
    from monoocc_ros.models.config import model_config_to_dict

    if cfg.role == "teacher":
        from training.teacher import teacher_checkpoint_meta

        meta = teacher_checkpoint_meta(cfg.teacher, cfg.data.temporal_offsets, cfg.data.image_scale)
    else:
        meta = {"role": "student", "distill_mode": cfg.distill.mode}
    return {
        "schema": SCHEMA,
        "config_name": cfg.model,
        "model_config": model_config_to_dict(model_cfg),
        "model": unwrap(model).state_dict(),
        "meta": meta,
    }
