"""The library entry of a training run: :func:`run_training` (``monoocc train teacher|student``).

It joins the torchrun process group if there is one, runs a :class:`~training.trainer.Trainer`,
prints the end-of-run summary and, for students with validation bags, fits the confidence
temperature of the saved checkpoints. The parts live in their own modules:

* :mod:`training.trainer`: the step, validation, checkpoints and the loop;
* :mod:`training.teacher_source`: the online or cached teacher behind one interface;
* :mod:`training.model_setup`: the network, its config and checkpoint payload;
* :mod:`training.data`: bags as datasets; :mod:`training.validation`: scores and pictures;
* :mod:`training.dump`: ``dump-teacher``; :mod:`training.errors`: what a run reports;
* :mod:`training.logs`: log output per rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from torch import nn

from monoocc_ros.fileio import write_text_atomic
from training.config import TrainConfig
from training.ddp import init_distributed, shutdown_distributed, unwrap
from training.logs import configure_logging
from training.trainer import BEST, LAST, Trainer, TrainSummary

__all__ = ["run_training", "format_summary", "weights_sha256"]

log = logging.getLogger(__name__)


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (sorted keys), to compare ranks and runs."""
    digest = hashlib.sha256()
    for key, value in sorted(unwrap(model).state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def format_summary(summary: TrainSummary) -> str:
    """A short human-readable end-of-run report."""
    lines = [
        f"{summary.role} training finished: {summary.epochs_done} epoch(s), {summary.global_step} step(s) "
        f"in {summary.seconds:.1f} s",
        "last step: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary.last_losses.items())),
    ]
    if summary.val:
        v = summary.val[-1]
        lines.append(
            f"last validation: mIoU {100 * v['miou']:.2f}, completion IoU {100 * v['completion_iou']:.2f}; "
            f"best mIoU {100 * summary.best_miou:.2f}"
        )
    lines.append(f"checkpoints and TensorBoard logs: {summary.out_dir}")
    return "\n".join(lines)


def run_training(cfg: TrainConfig, *, resume: bool = False, hash_dir: Path | None = None) -> TrainSummary:
    """Train ``cfg.role`` in this process (and its torchrun peers).

    Args:
        cfg: the run.
        resume: continue from ``<out_dir>/last.pt`` if present.
        hash_dir: write ``rank<r>.json`` with the final weights' sha256 and this rank's own loss
            terms of the last step (to check that ranks agree and that the logged losses are their mean).

    Raises:
        TrainingError: bad data, teacher, cache or checkpoint (message names what and where);
            :class:`~training.errors.NonFiniteLossError` for NaN/inf losses.
    """
    env = init_distributed(cfg.device)
    configure_logging(env.rank)
    try:
        trainer = Trainer(cfg, env, resume=resume)
        summary = trainer.run()
        if hash_dir is not None:
            hash_dir.mkdir(parents=True, exist_ok=True)
            record = {
                "rank": env.rank,
                "step": summary.global_step,
                "sha256": weights_sha256(trainer.model),
                "local_losses": trainer.local_losses,
            }
            write_text_atomic(hash_dir / f"rank{env.rank}.json", json.dumps(record))
        log.info("%s", format_summary(summary))
        if env.is_main and cfg.calibrate and cfg.role == "student" and trainer.val_set is not None:
            from training.calibrate import calibrate_checkpoint

            d = cfg.data
            for name in (LAST, BEST):
                if (trainer.out_dir / name).is_file():
                    summary.calibration[name] = calibrate_checkpoint(
                        trainer.out_dir / name, d.val_bags, image_scale=d.image_scale, max_frames=d.max_val_frames,
                        device=str(env.device), queries=d.queries,
                    )
        return summary
    finally:
        shutdown_distributed()
