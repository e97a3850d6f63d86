"""Project checkpoints: one dict with a schema tag, the model config and the state dict.

Layout::

    {"schema": "monoocc_ros/checkpoint/1", "config_name": str, "model_config": dict,
     "model": state_dict, "meta": dict (optional),
     "calibration": {"temperature": float, ...} (optional, see training.calibrate),
     ...anything training adds}

Saved atomically (temporary file, fsync, ``os.replace``); loaded with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from monoocc_ros.errors import UserError
from monoocc_ros.fileio import atomic_write
from monoocc_ros.models.config import ModelConfig, model_config_from_dict
from monoocc_ros.models.state_dict import clean_state_dict

__all__ = ["SCHEMA", "CheckpointError", "save_checkpoint", "load_checkpoint", "build_model_from_checkpoint", "make_payload"]

SCHEMA = "monoocc_ros/checkpoint/1"


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, unreadable, truncated or not a project checkpoint."""


def make_payload(model: torch.nn.Module, config_name: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The minimal checkpoint dict for a :class:`MonoOccStudent`."""
    payload = {
        "schema": SCHEMA,
        "config_name": config_name,
        "model_config": dataclasses.asdict(model.cfg),
        "model": model.state_dict(),
    }
    if meta is not None:
        payload["meta"] = meta
    return payload


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    for key in ("schema", "config_name", "model_config", "model"):
        if key not in payload:
            raise CheckpointError(f"checkpoint payload for {path} lacks required key {key!r}")
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a project checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: naming the file when it is missing, truncated or corrupt, not loadable
            as weights only, or lacks the project schema.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors
        size = path.stat().st_size
        raise CheckpointError(
            f"cannot read checkpoint {path} ({size} bytes): it is truncated, corrupt or holds "
            f"objects other than tensors and plain containers ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a monoocc_ros checkpoint (top level is {type(ckpt).__name__})")
    if ckpt.get("schema") != SCHEMA:
        hint = " (an official mmcv checkpoint: run `monoocc convert-checkpoint` first)" if "state_dict" in ckpt else ""
        raise CheckpointError(f"{path} has schema {ckpt.get('schema')!r}, expected {SCHEMA!r}{hint}")
    for key in ("model_config", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks required key {key!r}")
    return ckpt


def build_model_from_checkpoint(ckpt: dict[str, Any]):
    """(MonoOccStudent with the checkpoint's weights loaded strictly, its ModelConfig)."""
    from monoocc_ros.models.monoocc import MonoOccStudent

    try:
        # configs stored before a field existed (grid, labels, trunk.depth ...) take its default
        cfg: ModelConfig = model_config_from_dict(ckpt["model_config"])
    except ValueError as exc:  # ConfigError and the configs' own checks
        raise CheckpointError(f"checkpoint config {ckpt.get('config_name')!r} is invalid: {exc}") from None
    model = MonoOccStudent(cfg)
    state = clean_state_dict(ckpt["model"])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"checkpoint weights do not fit config {ckpt.get('config_name')!r}: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint weights do not fit config {ckpt.get('config_name')!r}: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    # published confidence uses the temperature fitted on validation bags (training.calibrate)
    model.head.temperature = float((ckpt.get("calibration") or {}).get("temperature", 1.0))
    return model, cfg
