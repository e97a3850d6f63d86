"""The training loop for teacher and student, one process or many (torchrun / DDP).

Read top to bottom: :func:`run_training` builds data, model, losses and optimiser
(:class:`Trainer`), optionally restores ``last.pt``, then runs epochs of :meth:`Trainer.train_step`
with validation, ``best.pt`` / ``last.pt`` checkpoints and TensorBoard logging at epoch ends.
:func:`dump_teacher` writes the frozen teacher's voxel features for cached distillation.

Exact resume: the sampler's permutation depends only on (seed, epoch); the checkpoint stores
how many steps of the epoch are done, every rank's RNG states and the optimiser, scheduler and
scaler; DataLoaders get their own generator so creating one does not advance the global RNG.
A resumed run therefore repeats the uninterrupted run's losses step for step (on CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from monoocc_ros.fileio import write_text_atomic
from training.checkpoint import (
    LoopState,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)
from training.config import TrainConfig
from training.ddp import (
    DistEnv,
    ShardedSampler,
    all_gather_objects,
    all_reduce_sum,
    broadcast_buffers,
    init_distributed,
    shutdown_distributed,
    unwrap,
)
from training.distill import DistillLoss, FeatureDriftError, check_feature_drift, feature_distance, feature_rms
from training.feature_cache import TeacherFeatureCache
from training.schedule import WarmupCosine

__all__ = [
    "TrainingError",
    "NonFiniteLossError",
    "TrainSummary",
    "FrameDataset",
    "Trainer",
    "run_training",
    "dump_teacher",
    "weights_sha256",
    "format_summary",
]

LOSS_LOG = "losses.jsonl"
LAST = "last.pt"
BEST = "best.pt"


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message names the config key, file or step."""


class NonFiniteLossError(TrainingError):
    """A loss term became NaN or infinite; the last good checkpoint is left untouched."""


@dataclass
class TrainSummary:
    """What a finished run did (rank 0's view).

    Attributes:
        role: teacher or student.
        global_step: optimiser steps done in total.
        epochs_done: completed epochs.
        last_losses: loss terms of the last step.
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


class FrameDataset(Dataset):
    """A :class:`~monoocc_ros.data.bag_dataset.BagDataset` with images resized by ``scale``.

    Intrinsics follow the resize so that projections normalised by the image size are
    unchanged; the sparse LiDAR maps are resized with nearest neighbour. ``index`` is the
    position in this dataset (the teacher cache's key).
    """

    def __init__(self, base: Dataset, scale: float):
        self.base = base
        self.scale = scale

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.base[i])
        sample["index"] = i
        if self.scale == 1.0:
            return sample
        _, H, W = sample["image"].shape
        h, w = max(round(H * self.scale), 16), max(round(W * self.scale), 16)
        sample["image"] = _resize_images(sample["image"][None], (h, w))[0]
        if sample["temporal_images"].shape[0]:
            sample["temporal_images"] = _resize_images(sample["temporal_images"], (h, w))
        else:
            sample["temporal_images"] = sample["temporal_images"].new_zeros((0, 3, h, w))
        K = sample["K"].clone()
        K[0] *= w / W
        K[1] *= h / H
        sample["K"] = K
        for key in ("sem2d", "depth"):
            # (H, W) -> (1, 1, H, W) for interpolate
            sample[key] = F.interpolate(sample[key][None, None].float(), size=(h, w), mode="nearest")[0, 0].to(
                sample[key].dtype
            )
        return sample


def _resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 3, H, W) float in [0, 1] -> (N, 3, h, w), antialiased."""
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def _open_dataset(
    bags: tuple[str, ...], key: str, temporal_offsets, max_frames: int, scale: float, queries: str = ""
) -> FrameDataset:
    from monoocc_ros.data.bag_dataset import BagDataset
    from monoocc_ros.data.bag_io import BagReadError

    if not bags:
        raise TrainingError(f"{key} is empty: list at least one converted bag folder")
    for i, bag in enumerate(bags):
        if not Path(bag).exists():
            raise TrainingError(f"{key}[{i}]: bag {bag} not found")
    try:
        base = BagDataset(
            [Path(b) for b in bags],
            temporal_offsets=temporal_offsets,
            frames=slice(0, max_frames) if max_frames else None,
            queries=Path(queries) if queries else None,
        )
    except (BagReadError, ValueError) as exc:
        raise TrainingError(f"{key}: {exc}") from None
    return FrameDataset(base, scale)


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (sorted keys), to compare ranks and runs."""
    digest = hashlib.sha256()
    for key, value in sorted(unwrap(model).state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
        from monoocc_ros.models.config import get_model_config

        self.cfg = cfg
        self.env = env
        self.out_dir = Path(cfg.out_dir)
        if cfg.precision == "fp16" and env.device.type != "cuda":
            raise TrainingError("precision=fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        _seed_everything(cfg.seed + env.rank)

        try:
            model_cfg = get_model_config(cfg.model)
        except KeyError as exc:
            raise TrainingError(f"model: {exc.args[0]}") from None
        if cfg.grad_checkpointing:
            model_cfg = dataclasses.replace(
                model_cfg, voxel=dataclasses.replace(model_cfg.voxel, gradient_checkpointing=True)
            )
        if cfg.data.queries:
            # official protocol: DCA queries come from the VoxFormer files, not from the model
            if cfg.role == "teacher":
                raise TrainingError("data.queries: the teacher makes its own queries; set it for the student only")
            model_cfg = dataclasses.replace(model_cfg, proposal=dataclasses.replace(model_cfg.proposal, mode="external"))
        elif model_cfg.proposal.mode == "external":
            raise TrainingError(f'model {cfg.model!r} is in proposal mode "external": set data.queries to the query files')
        self.model_cfg = model_cfg

        # teacher (frozen) and its feature source for distillation
        self.teacher: nn.Module | None = None
        self.teacher_meta: dict[str, Any] = {}
        self.cache: TeacherFeatureCache | None = None
        self.distill: DistillLoss | None = None
        self._use_cache = False
        offsets: tuple[int, ...] = ()
        if cfg.role == "teacher":
            offsets = cfg.data.temporal_offsets
        elif cfg.distill.mode != "off":
            offsets = self._setup_teacher()
        elif cfg.distill.teacher_checkpoint and cfg.distill.source == "online":
            # no distillation, but a teacher at hand: measure the feature distance for comparison
            if Path(cfg.distill.teacher_checkpoint).is_file():
                offsets = self._setup_teacher()
            elif env.is_main:
                print(
                    f"[train] distill.mode=off: {cfg.distill.teacher_checkpoint} not found, "
                    "the student-teacher feature distance is not measured",
                    file=sys.stderr,
                )
        if cfg.role == "student" and cfg.distill.mode != "off":
            self.distill = DistillLoss(cfg.distill.mode, cfg.distill.weight, cfg.distill.temperature)

        d = cfg.data
        self.train_set = _open_dataset(d.train_bags, "data.train_bags", offsets, d.max_train_frames, d.image_scale, d.queries)
        self.val_set = (
            _open_dataset(d.val_bags, "data.val_bags", offsets, d.max_val_frames, d.image_scale, d.queries)
            if d.val_bags and cfg.validate
            else None
        )
        if self._use_cache:
            self._open_cache()

        # re-seed: the initial weights depend only on the seed, not on whether a teacher was built
        # (its random init draws from the same stream), so runs with and without distillation start equal
        _seed_everything(cfg.seed + env.rank)
        self.model = self._build_model().to(env.device)
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

    # -- setup -------------------------------------------------------------------------------

    def _setup_teacher(self) -> tuple[int, ...]:
        from training.teacher import load_teacher

        dc = self.cfg.distill
        if not dc.teacher_checkpoint:
            raise TrainingError(
                f"distill.mode={dc.mode} needs distill.teacher_checkpoint (or set distill.mode=off)"
            )
        path = Path(dc.teacher_checkpoint)
        if dc.source == "online":
            try:
                teacher, meta = load_teacher(path, map_location="cpu")
            except (FileNotFoundError, ValueError) as exc:
                raise TrainingError(f"distill.teacher_checkpoint: {exc}") from None
            self.teacher = teacher.to(self.env.device)
            self.teacher_meta = meta
            return tuple(meta["temporal_offsets"])
        if not dc.cache_dir:
            raise TrainingError("distill.source=cached needs distill.cache_dir (written by dump-teacher)")
        if not path.is_file():
            raise TrainingError(f"distill.teacher_checkpoint: {path} does not exist")
        self._use_cache = True  # opened in _open_cache, once the dataset exists
        return ()

    def _open_cache(self) -> None:
        from training.feature_cache import CacheMismatchError

        dc = self.cfg.distill
        try:
            self.cache = TeacherFeatureCache.open(
                Path(dc.cache_dir) / "train",
                teacher_checkpoint=Path(dc.teacher_checkpoint),
                bags=[Path(b) for b in self.cfg.data.train_bags],
                settings=_cache_settings_from_checkpoint(Path(dc.teacher_checkpoint), self.cfg),
            )
        except (FileNotFoundError, CacheMismatchError) as exc:
            raise TrainingError(f"distill.cache_dir: {exc}") from None

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        if cfg.role == "teacher":
            from training.teacher import MonoOccTeacher

            model = MonoOccTeacher(self.model_cfg, cfg.teacher)
            if cfg.teacher.backbone_weights:
                model.load_backbone(Path(cfg.teacher.backbone_weights))
            return model
        from monoocc_ros.models.monoocc import MonoOccStudent
        from monoocc_ros.models.trunk import load_torchvision_state_dict

        model = MonoOccStudent(self.model_cfg)
        if cfg.student_backbone_weights:
            path = Path(cfg.student_backbone_weights)
            if not path.is_file():
                raise TrainingError(f"student_backbone_weights: {path} does not exist")
            load_torchvision_state_dict(model.backbone, torch.load(path, map_location="cpu", weights_only=True))
        return model

    def _model_payload(self) -> dict[str, Any]:
        from monoocc_ros.models.checkpoint import SCHEMA
        from monoocc_ros.models.config import model_config_to_dict

        if self.cfg.role == "teacher":
            from training.teacher import teacher_checkpoint_meta

            meta = teacher_checkpoint_meta(self.cfg.teacher, self.cfg.data.temporal_offsets, self.cfg.data.image_scale)
        else:
            meta = {"role": "student", "distill_mode": self.cfg.distill.mode}
        return {
            "schema": SCHEMA,
            "config_name": self.cfg.model,
            "model_config": model_config_to_dict(self.model_cfg),
            "model": unwrap(self.model).state_dict(),
            "meta": meta,
        }

    def _resume(self) -> None:
        path = self.out_dir / LAST
        if not path.is_file():
            if self.env.is_main:
                print(f"[train] --resume: no {path} yet, starting a new run", file=sys.stderr)
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
        elif self.env.is_main:
            print(
                f"[train] {path} was written by {len(rng)} ranks, this job has {self.env.world_size}: "
                "RNG streams are re-seeded, losses will not repeat exactly",
                file=sys.stderr,
            )
        self.history = list(state.get("meta", {}).get("val_history", []))
        if self.env.is_main:
            print(
                f"[train] resumed {path}: epoch {self.loop.epoch}, step {self.loop.step_in_epoch}/"
                f"{self.steps_per_epoch} of that epoch, global step {self.loop.global_step}",
                file=sys.stderr,
            )

    # -- steps -------------------------------------------------------------------------------

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        if self.cfg.role == "teacher":
            return model(
                batch["image"], batch["K"], batch["T_cam_grid"], batch["temporal_images"], batch["temporal_T_cam_grid"]
            )
        return model(batch["image"], batch["K"], batch["T_cam_grid"], batch.get("proposals"))

    @torch.no_grad()
    def _teacher_features(self, batch: dict[str, Any]) -> Tensor | None:
        if self.teacher is not None:
            with _autocast(self.cfg, self.env.device):
                out = self.teacher(
                    batch["image"], batch["K"], batch["T_cam_grid"], batch["temporal_images"], batch["temporal_T_cam_grid"]
                )
            return out["voxel_features"].float()
        if self.cache is not None:
            feats = [
                self.cache.get(int(i), int(s)) for i, s in zip(batch["index"].tolist(), batch["stamp_ns"].tolist())
            ]
            return torch.stack(feats).to(self.env.device, torch.float32)
        return None

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on a batch; returns the loss terms and the learning rate.

        Raises:
            NonFiniteLossError: some loss term is NaN or infinite on any rank (nothing is updated).
        """
        batch = _to_device(batch, self.env.device)
        self.model.train()
        teacher_feats = self._teacher_features(batch)
        with _autocast(self.cfg, self.env.device):
            outputs = self._forward(self.model, batch)
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
        return values

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

    # -- validation --------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """SSC metrics on the validation bags, summed over ranks; also the teacher distance."""
        from monoocc_ros.metrics import SSCMetrics

        model = unwrap(self.model).eval()
        metrics = SSCMetrics()
        dist_sum = torch.zeros(2, dtype=torch.float64, device=self.env.device)
        # every rank takes every world_size-th frame, without the padding used in training,
        # so each validation frame is counted exactly once
        indices = list(range(self.env.rank, len(self.val_set), self.env.world_size))
        loader = DataLoader(
            self.val_set,
            batch_size=self.cfg.batch_size,
            sampler=indices,
            num_workers=self.cfg.num_workers,
            generator=torch.Generator(),
        )
        first = None
        for batch in tqdm(loader, desc="val", disable=not self.env.is_main, leave=False):
            batch = _to_device(batch, self.env.device)
            with _autocast(self.cfg, self.env.device):
                out = self._forward(model, batch)
            pred = out["ssc_logits"].argmax(1)
            metrics.update(pred.cpu(), batch["labels"].cpu())
            if self.teacher is not None:
                t = self._teacher_features(batch)
                dist_sum[0] += float(feature_distance(out["voxel_features"].float(), t, batch["labels_half"]))
                dist_sum[1] += 1
            if first is None:
                first = (batch, pred)
        confusion = torch.from_numpy(metrics.confusion).to(self.env.device)
        metrics.confusion = all_reduce_sum(confusion).cpu().numpy()
        all_reduce_sum(dist_sum)
        official = metrics.compute().to_dict()
        scores = {"miou": official.pop("iou_mean"), "completion_iou": official.pop("iou_completion"), **official}
        if dist_sum[1] > 0:
            scores["feature_distance"] = float(dist_sum[0] / dist_sum[1])
        if self.env.is_main and first is not None and self.cfg.log_images:
            self._log_render(*first)
        return scores

    def _log_render(self, batch: dict[str, Any], pred: Tensor) -> None:
        try:
            from monoocc_ros.camera import CameraModel
            from monoocc_ros.render import render_comparison

            image = (batch["image"][0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            camera = CameraModel(
                batch["K"][0].cpu().double().numpy(), batch["T_cam_grid"][0].cpu().double().numpy(), image.shape[:2]
            )
            gt = batch["labels"][0].cpu().numpy().astype(np.uint8)
            panel = render_comparison(image, pred[0].cpu().numpy().astype(np.uint8), gt, camera)
        except (ImportError, RuntimeError, ValueError) as exc:
            print(f"[train] skipping the rendered prediction image: {exc}", file=sys.stderr)
            return
        self.writer.add_image("val/prediction_vs_ground_truth", panel, self.loop.epoch, dataformats="HWC")

    # -- checkpoints and logs ----------------------------------------------------------------

    def save(self, name: str) -> None:
        """Write ``name`` in out_dir (collective: every rank must call it; rank 0 writes)."""
        rng = all_gather_objects(capture_rng_state())
        broadcast_buffers(self.model)
        if not self.env.is_main:
            return
        payload = self._model_payload()
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

    def _log_val(self, scores: dict[str, float]) -> None:
        if not self.env.is_main:
            return
        for k, v in scores.items():
            if k != "epoch":
                self.writer.add_scalar(f"val/{k}", v, self.loop.epoch)
        extra = f", feature distance {scores['feature_distance']:.4f}" if "feature_distance" in scores else ""
        print(
            f"[val] epoch {self.loop.epoch}: mIoU {100 * scores['miou']:.2f}, completion IoU "
            f"{100 * scores['completion_iou']:.2f}{extra}",
            file=sys.stderr,
        )


def _cache_settings_from_checkpoint(teacher_checkpoint: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Settings that define the cached features: the teacher's offsets and the image scale."""
    from monoocc_ros.models.checkpoint import load_checkpoint

    meta = load_checkpoint(teacher_checkpoint).get("meta") or {}
    return {"temporal_offsets": list(meta.get("temporal_offsets", [])), "image_scale": cfg.data.image_scale}


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
        hash_dir: write ``rank<r>.json`` with the final weights' sha256 (to check ranks agree).

    Raises:
        TrainingError: bad data, teacher, cache or checkpoint (message names what and where);
            :class:`NonFiniteLossError` for NaN/inf losses.
    """
    env = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, env, resume=resume)
        summary = trainer.run()
        if hash_dir is not None:
            hash_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                hash_dir / f"rank{env.rank}.json",
                json.dumps({"rank": env.rank, "step": summary.global_step, "sha256": weights_sha256(trainer.model)}),
            )
        if env.is_main:
            print(format_summary(summary), file=sys.stderr)
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


@torch.no_grad()
def dump_teacher(cfg: TrainConfig) -> list[Path]:
    """Write the frozen teacher's voxel features for the train (and val) bags as fp16 files.

    Uses ``distill.teacher_checkpoint`` and writes ``<distill.cache_dir>/{train,val}/``. Under
    torchrun each rank computes its share and writes those frames' files; rank 0 writes the
    manifests, which make a split usable.
    """
    from training.teacher import load_teacher

    dc = cfg.distill
    if not dc.teacher_checkpoint or not dc.cache_dir:
        raise TrainingError("dump-teacher needs distill.teacher_checkpoint and distill.cache_dir")
    env = init_distributed(cfg.device)
    try:
        try:
            teacher, meta = load_teacher(Path(dc.teacher_checkpoint))
        except (FileNotFoundError, ValueError) as exc:
            raise TrainingError(f"distill.teacher_checkpoint: {exc}") from None
        teacher = teacher.to(env.device)
        offsets = tuple(meta["temporal_offsets"])
        settings = {"temporal_offsets": list(offsets), "image_scale": cfg.data.image_scale}
        written = []
        d = cfg.data
        splits = [("train", d.train_bags, d.max_train_frames)]
        if d.val_bags:
            splits.append(("val", d.val_bags, d.max_val_frames))
        for split, bags, limit in splits:
            dataset = _open_dataset(bags, f"data.{split}_bags", offsets, limit, d.image_scale)
            folder = Path(dc.cache_dir) / split
            feature_shape = [teacher.cfg.voxel.embed_dim, *teacher.occupancy.grid_size]
            cache = TeacherFeatureCache.create(
                folder,
                teacher_checkpoint=Path(dc.teacher_checkpoint),
                bags=[Path(b) for b in bags],
                settings=settings,
                feature_shape=feature_shape,
            )
            indices = list(range(env.rank, len(dataset), env.world_size))
            loader = DataLoader(dataset, batch_size=1, sampler=indices, num_workers=cfg.num_workers)
            for batch in tqdm(loader, desc=f"dump-teacher {split}", disable=not env.is_main):
                batch = _to_device(batch, env.device)
                with _autocast(cfg, env.device):
                    out = teacher(
                        batch["image"], batch["K"], batch["T_cam_grid"], batch["temporal_images"], batch["temporal_T_cam_grid"]
                    )
                cache.put(int(batch["index"][0]), int(batch["stamp_ns"][0]), out["voxel_features"][0])
            stamps = all_gather_objects(cache.manifest.stamps)
            if env.is_main:
                for part in stamps:
                    cache.manifest.stamps.update(part)
                cache.finish()
                written.append(folder)
                print(f"[dump-teacher] {split}: {len(dataset)} frames -> {folder}", file=sys.stderr)
        return written
    finally:
        shutdown_distributed()
