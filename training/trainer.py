"""The training loop for teacher and student, one process or many (torchrun / DDP).

Read top to bottom: :class:`Trainer` builds data, the teacher source, model, losses and
optimiser, optionally restores ``last.pt``, then :meth:`Trainer.run` does epochs of
:meth:`Trainer.train_step` with validation (:mod:`training.validation`), ``best.pt`` / ``last.pt``
checkpoints and TensorBoard logging at epoch ends. :func:`training.train.run_training` is the
entry that sets up the process group around it.

Exact resume: the sampler's permutation depends only on (seed, epoch); the checkpoint stores
how many steps of the epoch are done, every rank's RNG states and the optimiser, scheduler and
scaler; DataLoaders get their own generator so creating one does not advance the global RNG.
A resumed run therefore repeats the uninterrupted run's losses step for step (on CPU).

Under DDP the logged losses (``losses.jsonl``, TensorBoard, the progress bar, the summary) are
the mean over ranks of each rank's loss terms; :attr:`Trainer.local_losses` keeps this rank's own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import (
    LoopState,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)
from training.config import TrainConfig
from training.data import open_dataset, to_device
from training.ddp import (
    DistEnv,
    ShardedSampler,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_sum,
    autocast,
    broadcast_buffers,
    unwrap,
)
from training.distill import DistillLoss, FeatureDriftError, check_feature_drift, feature_distance, feature_rms
from training.errors import NonFiniteLossError, TrainingError
from training.logs import configure_logging
from training.model_setup import build_model, model_payload, resolve_model_config
from training.schedule import WarmupCosine
from training.teacher_source import open_teacher_source, teacher_forward
from training.validation import render_panel, validate

__all__ = ["LOSS_LOG", "LAST", "BEST", "TrainSummary", "Trainer"]

LOSS_LOG = "losses.jsonl"
LAST = "last.pt"
BEST = "best.pt"

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a finished run did (rank 0's view).

    Attributes:
        role: teacher or student.
        global_step: optimiser steps done in total.
        epochs_done: completed epochs.
        last_losses: loss terms of the last step (mean over ranks).
        val: per validated epoch, the SSC scores (``SSCScores.to_dict``) plus ``feature_distance``.
        best_miou: best validation mIoU (-1 without validation).
        out_dir: where checkpoints and logs are.
        seconds: wall time of this process's run.
        calibration: checkpoint file name -> its fitted temperature record (students with val bags).
    """

    role: str
    global_step: int
    epochs_done: int
    last_losses: dict[str, float]
    val: list[dict[str, float]] = field(default_factory=list)
    best_miou: float = -1.0
    out_dir: str = ""
    seconds: float = 0.0
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Holds everything a run needs; :meth:`run` trains, validates and checkpoints.

    Args:
        cfg: the run's configuration.
        env: this process's place in the (possibly distributed) job.
        resume: continue from ``<out_dir>/last.pt`` when it exists.
    """

    def __init__(self, cfg: TrainConfig, env: DistEnv, resume: bool = False):
        from monoocc_ros.losses import LossConfig, MonoOccLoss

        configure_logging(env.rank)
        self.cfg = cfg
        self.env = env
        self.out_dir = Path(cfg.out_dir)
        if cfg.precision == "fp16" and env.device.type != "cuda":
            raise TrainingError("precision=fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        _seed_everything(cfg.seed + env.rank)
        self.model_cfg = resolve_model_config(cfg)

        # the frozen teacher's features (online or cached), for distillation or just to measure the distance
        self.teacher = open_teacher_source(cfg, env.device)
        self.distill: DistillLoss | None = None
        if cfg.role == "student" and cfg.distill.mode != "off":
            self.distill = DistillLoss(cfg.distill.mode, cfg.distill.weight, cfg.distill.temperature)
        offsets = cfg.data.temporal_offsets if cfg.role == "teacher" else ()
        if self.teacher is not None:
            offsets = self.teacher.temporal_offsets

        d = cfg.data
        self.train_set = open_dataset(
            d.train_bags, "data.train_bags", offsets, d.max_train_frames, d.image_scale, d.queries, self.model_cfg
        )
        self.val_set = (
            open_dataset(d.val_bags, "data.val_bags", offsets, d.max_val_frames, d.image_scale, d.queries, self.model_cfg)
            if d.val_bags and cfg.validate
            else None
        )

        # re-seed: the initial weights depend only on the seed, not on whether a teacher was built
        # (its random init draws from the same stream), so runs with and without distillation start equal
        _seed_everything(cfg.seed + env.rank)
        self.model = build_model(cfg, self.model_cfg).to(env.device)
        self.criterion = MonoOccLoss.for_model(self.model, LossConfig()).to(env.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.sampler = ShardedSampler(len(self.train_set), env.rank, env.world_size, cfg.seed)
        self.steps_per_epoch = -(-self.sampler.shard_size // cfg.batch_size)
        o = cfg.optim
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            WarmupCosine(self.steps_per_epoch, cfg.epochs, o.warmup_iters, o.warmup_ratio, o.min_lr_ratio),
        )
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.precision == "fp16")
        self.loop = LoopState()
        self.history: list[dict[str, float]] = []
        self.local_losses: dict[str, float] = {}  # this rank's terms of the last step, before the mean over ranks
        if resume:
            self._resume()
        if env.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.writer = None  # TensorBoard, rank 0 only, open while run() runs
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, name: str) -> None:
        """Write ``name`` in out_dir (collective: every rank must call it; rank 0 writes)."""
        rng = all_gather_objects(capture_rng_state())
        broadcast_buffers(self.model)
        if not self.env.is_main:
            return
        payload = model_payload(self.cfg, self.model_cfg, self.model)
        payload["meta"]["val_history"] = self.history
        save_training_state(
            self.out_dir / name,
            model_payload=payload,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            rng_per_rank=rng,
            loop=self.loop,
            train_config=dataclasses.asdict(self.cfg),
        )

    def _resume(self) -> None:
        path = self.out_dir / LAST
        if not path.is_file():
            log.info("[train] --resume: no %s yet, starting a new run", path)
            return
        try:
            state = load_training_state(path)
        except ValueError as exc:
            raise TrainingError(f"--resume: {exc}") from None
        saved = state["train_config"]
        if saved.get("role") != self.cfg.role or saved.get("model") != self.cfg.model:
            raise TrainingError(
                f"{path} is a {saved.get('role')}/{saved.get('model')} run, "
                f"this config trains {self.cfg.role}/{self.cfg.model}"
            )
        unwrap(self.model).load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.loop = LoopState(**state["loop"])
        rng = state["rng"]
        if len(rng) == self.env.world_size:
            restore_rng_state(rng[self.env.rank])
        elif self.env.is_main:  # the same on every rank: said once
            log.warning(
                "[train] %s was written by %d ranks, this job has %d: RNG streams are re-seeded, "
                "losses will not repeat exactly",
                path, len(rng), self.env.world_size,
            )
        self.history = list(state.get("meta", {}).get("val_history", []))
        log.info(
            "[train] resumed %s: epoch %d, step %d/%d of that epoch, global step %d",
            path, self.loop.epoch, self.loop.step_in_epoch, self.steps_per_epoch, self.loop.global_step,
        )

    # -- steps -------------------------------------------------------------------------------

    def _forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if self.cfg.role == "teacher":
            return teacher_forward(self.model, batch)
        return self.model(batch["image"], batch["K"], batch["T_cam_grid"], batch.get("proposals"))

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on a batch; returns the loss terms and the learning rate, mean over ranks.

        Raises:
            NonFiniteLossError: some loss term is NaN or infinite on any rank (nothing is updated).
        """
        batch = to_device(batch, self.env.device)
        self.model.train()
        teacher_feats = self.teacher.features(batch) if self.teacher is not None else None
        with autocast(self.cfg.precision, self.env.device):
            outputs = self._forward(batch)
            try:
                terms = self.criterion(outputs, batch)
            except RuntimeError:
                # e.g. BCE refuses NaN probabilities: report the broken outputs like a NaN loss
                broken = [
                    k for k, v in outputs.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
                ]
                if not broken:
                    raise
                terms = {f"{k} (output)": torch.tensor(float("nan")) for k in broken}
            if self.distill is not None and "loss" in terms:
                terms["loss_distill"] = self.distill(
                    outputs["voxel_features"].float(), teacher_feats, batch["labels_half"]
                )
                terms["loss"] = terms["loss"] + terms["loss_distill"]
        values = {k: float(v.detach()) for k, v in terms.items()}
        if teacher_feats is not None and "loss" in terms:
            values["feature_distance"] = float(
                feature_distance(outputs["voxel_features"].detach().float(), teacher_feats, batch["labels_half"])
            )
        finite = torch.tensor([float(all(math.isfinite(v) for v in values.values()))], device=self.env.device)
        if all_reduce_sum(finite).item() < self.env.world_size:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(
                f"non-finite loss at global step {self.loop.global_step + 1} (epoch {self.loop.epoch}) "
                f"on rank {self.env.rank if not all(map(math.isfinite, values.values())) else 'another'}: "
                f"{shown}; stopped without saving, the last good checkpoint is {self.out_dir / LAST}"
            )
        if self.distill is not None:
            self._check_feature_drift(outputs["voxel_features"], batch["labels_half"], values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.local_losses = values
        # every rank has the same terms (same model, same batch keys; a NaN stopped them all above)
        return all_reduce_mean(values, self.env.device)

    def _check_feature_drift(self, features: Tensor, labels_half: Tensor, values: dict[str, float]) -> None:
        """Stop (every rank, before the update) once the distilled features' RMS passes the limit."""
        rms = float(feature_rms(features, labels_half))
        values["feature_rms"] = rms
        dc = self.cfg.distill
        mine = dc.max_feature_rms > 0 and not rms <= dc.max_feature_rms
        if all_reduce_sum(torch.tensor([float(mine)], device=self.env.device)).item() == 0:
            return
        try:
            check_feature_drift(rms if mine else math.inf, dc.max_feature_rms, mode=dc.mode, step=self.loop.global_step + 1)
        except FeatureDriftError as exc:
            where = "" if mine else " (on another rank)"
            raise TrainingError(
                f"{exc}{where}; stopped without saving, the last good checkpoint is {self.out_dir / LAST}"
            ) from None

    # -- validation and logs -----------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """SSC metrics on the validation bags, summed over ranks; also the teacher distance.

        Collective. Rank 0 adds the first frame's prediction picture to TensorBoard when
        ``log_images`` is on and a writer is open.
        """
        result = validate(
            unwrap(self.model),
            self.val_set,
            role=self.cfg.role,
            env=self.env,
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            precision=self.cfg.precision,
            teacher=self.teacher,
        )
        if self.env.is_main and result.first is not None and self.cfg.log_images and self.writer is not None:
            panel = render_panel(*result.first)
            if panel is not None:
                self.writer.add_image("val/prediction_vs_ground_truth", panel, self.loop.epoch, dataformats="HWC")
        return result.scores

    def _log_step(self, values: dict[str, float]) -> None:
        if not self.env.is_main:
            return
        record = {"step": self.loop.global_step, "epoch": self.loop.epoch, **values}
        with open(self.out_dir / LOSS_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.loop.global_step % self.cfg.log_every == 0 or self.loop.global_step == 1:
            for k, v in values.items():
                group = "lr" if k == "lr" else "train"
                self.writer.add_scalar(f"{group}/{k}", v, self.loop.global_step)

    def _log_val(self, scores: dict[str, float]) -> None:
        if not self.env.is_main:
            return
        for k, v in scores.items():
            if k != "epoch":
                self.writer.add_scalar(f"val/{k}", v, self.loop.epoch)
        extra = f", feature distance {scores['feature_distance']:.4f}" if "feature_distance" in scores else ""
        log.info(
            "[val] epoch %d: mIoU %.2f, completion IoU %.2f%s",
            self.loop.epoch, 100 * scores["miou"], 100 * scores["completion_iou"], extra,
        )

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainSummary:
        """Train until ``epochs`` or ``max_steps``; validate and checkpoint at epoch ends."""
        if self.env.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"))
        try:
            return self._run()
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    def _run(self) -> TrainSummary:
        cfg, env, loop = self.cfg, self.env, self.loop
        start = time.time()
        last: dict[str, float] = {}
        stop = cfg.max_steps and loop.global_step >= cfg.max_steps
        while loop.epoch < cfg.epochs and not stop:
            self.sampler.set_epoch(loop.epoch, skip=loop.step_in_epoch * cfg.batch_size)
            loader = DataLoader(
                self.train_set,
                batch_size=cfg.batch_size,
                sampler=self.sampler,
                num_workers=cfg.num_workers,
                generator=torch.Generator().manual_seed(cfg.seed + loop.epoch),
                pin_memory=env.device.type == "cuda",
            )
            bar = tqdm(
                loader,
                total=self.steps_per_epoch,
                initial=loop.step_in_epoch,
                desc=f"{cfg.role} epoch {loop.epoch + 1}/{cfg.epochs}",
                disable=not env.is_main,
                dynamic_ncols=True,
            )
            for batch in bar:
                last = self.train_step(batch)
                loop.step_in_epoch += 1
                loop.global_step += 1
                self._log_step(last)
                bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
                stop = bool(cfg.max_steps) and loop.global_step >= cfg.max_steps
                end_of_epoch = loop.step_in_epoch >= self.steps_per_epoch
                if (cfg.checkpoint_every and loop.global_step % cfg.checkpoint_every == 0 and not end_of_epoch) or (
                    stop and not end_of_epoch
                ):
                    self.save(LAST)
                if stop:
                    break
            bar.close()
            if loop.step_in_epoch < self.steps_per_epoch:
                break
            loop.epoch += 1
            loop.step_in_epoch = 0
            if self.val_set is not None and (loop.epoch % cfg.val_every == 0 or loop.epoch == cfg.epochs):
                scores = self.validate()
                scores["epoch"] = loop.epoch
                self.history.append(scores)
                self._log_val(scores)
                if scores["miou"] > loop.best_miou:
                    loop.best_miou = scores["miou"]
                    self.save(BEST)
            self.save(LAST)
        broadcast_buffers(self.model)
        return TrainSummary(
            role=cfg.role,
            global_step=loop.global_step,
            epochs_done=loop.epoch,
            last_losses=last,
            val=self.history,
            best_miou=loop.best_miou,
            out_dir=str(self.out_dir),
            seconds=time.time() - start,
        )
