"""Training state on top of the project checkpoint format.

A training checkpoint is a model checkpoint (``schema``, ``config_name``, ``model_config``,
``model``, ``meta``; see :mod:`monoocc_ros.models.checkpoint`) plus the loop state needed to
continue exactly: optimiser, scheduler, GradScaler, the RNG states of every rank, epoch,
steps done in that epoch, global step, best validation mIoU and the training config. A student
``best.pt`` / ``last.pt`` therefore loads directly in :class:`monoocc_ros.predictor.Predictor`.
Writes are atomic (``save_checkpoint``: temp file, fsync, ``os.replace``), so a run killed while
saving keeps the previous file.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monoocc_ros.models.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "LoopState",
    "capture_rng_state",
    "restore_rng_state",
    "save_training_state",
    "load_training_state",
    "TRAINING_KEYS",
]

TRAINING_KEYS = ("optimizer", "scheduler", "rng", "loop", "train_config")


@dataclass
class LoopState:
    """Where the loop stands.

    Attributes:
        epoch: current epoch (0-based).
        step_in_epoch: optimiser steps already done in ``epoch``.
        global_step: optimiser steps done in total.
        best_miou: best validation mIoU so far (-1 before the first validation).
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_miou: float = -1.0


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states as weights-only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """``random.setstate`` needs tuples; a round trip may have turned them into lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def save_training_state(
    path: Path,
    *,
    model_payload: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    rng_per_rank: list[dict[str, Any]],
    loop: LoopState,
    train_config: dict[str, Any],
) -> None:
    """Write a resumable checkpoint atomically.

    Args:
        path: destination (``last.pt``, ``best.pt``).
        model_payload: the model checkpoint part: schema, config_name, model_config, model, meta.
        optimizer / scheduler / scaler: their ``state_dict`` is stored.
        rng_per_rank: :func:`capture_rng_state` of every rank, in rank order.
        loop: epoch, step counters and best metric.
        train_config: ``dataclasses.asdict`` of the run's :class:`~training.config.TrainConfig`.
    """
    payload = dict(model_payload)
    payload.update(
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler is not None else {},
        rng=rng_per_rank,
        loop=dataclasses.asdict(loop),
        train_config=train_config,
    )
    save_checkpoint(Path(path), payload)


def load_training_state(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_training_state` (weights only).

    Raises:
        FileNotFoundError / ValueError: from ``load_checkpoint`` (missing, truncated, wrong schema).
        ValueError: a model-only checkpoint without the training state.
    """
    ckpt = load_checkpoint(Path(path))
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise ValueError(
            f"{path} is a model checkpoint without training state (missing {missing}); "
            "it cannot be resumed, start a new run from it instead"
        )
    return ckpt
