"""Typed training configuration, YAML loading and ``--set`` overrides.

A run is described by one frozen :class:`TrainConfig`. YAML files mirror its nesting and are read
by the project's one typed loader (:mod:`monoocc_ros.config_io`): unknown keys are rejected with
the file, the dotted key and the closest allowed name in the message. Overrides
(``data.image_scale=0.25``) are parsed by the type of the field they set, never evaluated.

Example:
    >>> cfg = load_train_config(Path("training/configs/student_tiny.yaml"), ["epochs=2"])
    >>> cfg.epochs
    2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# the project's one typed loader (monoocc_ros.config_io); ConfigError is re-exported from here
from monoocc_ros.config_io import ConfigError, from_mapping, read_yaml_mapping
from monoocc_ros.config_io import apply_overrides as _apply_overrides
from monoocc_ros.models.config import TrunkConfig

__all__ = [
    "DataConfig",
    "OptimConfig",
    "DistillConfig",
    "TeacherConfig",
    "TrainConfig",
    "ConfigError",
    "load_train_config",
    "train_config_from_dict",
    "apply_overrides",
    "BUILTIN_CONFIG_DIR",
]

BUILTIN_CONFIG_DIR = Path(__file__).with_name("configs")

Role = Literal["teacher", "student"]
Precision = Literal["fp32", "bf16", "fp16"]
DistillMode = Literal["off", "released_kl", "mse", "cosine", "softmax_kl"]
TeacherSource = Literal["online", "cached"]


@dataclass(frozen=True)
class DataConfig:
    """Which bags to read and how.

    Attributes:
        train_bags: rosbag2 folders with ground truth for training.
        val_bags: rosbag2 folders with ground truth for validation (may be empty).
        temporal_offsets: frame offsets of the teacher's extra views (past frames by default).
        image_scale: resize factor applied to images (K follows); 1.0 keeps full resolution.
        max_train_frames: use only the first N training frames (0 = all).
        max_val_frames: use only the first N validation frames (0 = all).
        queries: VoxFormer query files (``DIR/sequences/SS/queries/NNNNNN.query_<tag>``): the student
            trains in proposal mode "external" on them, as the paper did (empty = its own proposals).
    """

    train_bags: tuple[str, ...] = ()
    val_bags: tuple[str, ...] = ()
    temporal_offsets: tuple[int, ...] = (-4, -3, -2, -1)
    image_scale: float = 1.0
    max_train_frames: int = 0
    max_val_frames: int = 0
    queries: str = ""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then per-epoch cosine annealing (MonoOcc spec §5.2).

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: max L2 norm of all gradients (0 disables clipping).
        warmup_iters: linear warm-up length in optimiser steps.
        warmup_ratio: warm-up starts at ``lr * warmup_ratio``.
        min_lr_ratio: cosine floor as a fraction of ``lr``.
    """

    lr: float = 2e-4
    weight_decay: float = 0.01
    grad_clip: float = 35.0
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3.0
    min_lr_ratio: float = 1e-3


@dataclass(frozen=True)
class DistillConfig:
    """Teacher -> student feature distillation (student runs only).

    Attributes:
        mode: ``released_kl`` (official, unbounded), ``mse`` / ``cosine`` (on LayerNorm-ed
            features), ``softmax_kl`` (channel softmax with temperature) or ``off``.
        weight: loss weight (3.5 in MonoOcc-S).
        temperature: softmax temperature of ``softmax_kl``.
        teacher_checkpoint: the frozen teacher's checkpoint file.
        source: ``online`` runs the frozen teacher each step; ``cached`` reads ``cache_dir``.
        cache_dir: folder written by ``monoocc train dump-teacher``.
        max_feature_rms: stop the run when the RMS of the distilled student features exceeds
            this (they start near 1 as LayerNorm outputs; ``released_kl`` drifts them without
            bound); 0 disables the check.
    """

    mode: DistillMode = "released_kl"
    weight: float = 3.5
    temperature: float = 1.0
    teacher_checkpoint: str = ""
    source: TeacherSource = "online"
    cache_dir: str = ""
    max_feature_rms: float = 10.0


@dataclass(frozen=True)
class TeacherConfig:
    """The privileged branch on top of a student model config.

    Attributes:
        backbone_depth: ResNet depth of the larger image backbone (50 or 101).
        backbone_weights: torchvision ResNet state-dict file (``resnet101-*.pth``); empty = random init.
        cvt_layers: Cross View Transformer blocks (6 in the official TVT).
        cvt_splits: window splits per axis (2 = 2x2 windows).
        cvt_ffn_expansion: MLP width factor of the CVT's cross-attention block.
    """

    backbone_depth: int = 101
    backbone_weights: str = ""
    cvt_layers: int = 6
    cvt_splits: int = 2
    cvt_ffn_expansion: int = 4

    def trunk(self, student: TrunkConfig) -> TrunkConfig:
        """The teacher's image trunk: the student trunk's width and cut at ``backbone_depth``."""
        return dataclasses.replace(student, depth=self.backbone_depth)


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        role: ``teacher`` (privileged multi-frame branch) or ``student``.
        model: model config name (``tiny``, ``monoocc_s``).
        model_overrides: dotted overrides of that model config, e.g. ``grid.voxel_size_m=0.4``,
            ``labels=path/to/labels.yaml``, ``head.num_classes=5`` (another grid or label set).
        student_backbone_weights: torchvision ResNet state dict for the student trunk (empty = none).
        epochs: training epochs.
        batch_size: samples per rank and step.
        precision: ``fp32``, or autocast ``bf16`` / ``fp16`` (fp16 uses a GradScaler; GPU only).
        grad_checkpointing: recompute activations of the image trunk to save memory.
        out_dir: checkpoints, TensorBoard logs and ``losses.jsonl`` go here (rank 0 only).
        seed: base seed; rank r uses ``seed + r`` for its RNG streams.
        num_workers: DataLoader worker processes.
        log_every: TensorBoard scalar interval in steps.
        checkpoint_every: also write ``last.pt`` every N steps inside an epoch (0 = epoch ends only).
        max_steps: stop after this many optimiser steps in total (0 = run all epochs).
        validate: run validation with SSC metrics at epoch ends.
        val_every: validate every N epochs (and always after the last one).
        log_images: render a prediction vs ground truth image to TensorBoard at validation.
        calibrate: after a student run with validation bags, fit the confidence temperature on
            them and store it in ``last.pt`` / ``best.pt`` (:mod:`training.calibrate`).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    role: Role = "student"
    model: str = "tiny"
    model_overrides: tuple[str, ...] = ()
    student_backbone_weights: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    epochs: int = 20
    batch_size: int = 1
    precision: Precision = "fp32"
    grad_checkpointing: bool = False
    out_dir: str = "runs/train"
    seed: int = 42
    num_workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 0
    max_steps: int = 0
    validate: bool = True
    val_every: int = 1
    log_images: bool = True
    calibrate: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        _check_values(self)


def _check_values(cfg: TrainConfig) -> None:
    problems = []
    if cfg.epochs < 1:
        problems.append(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.val_every < 1:
        problems.append(f"val_every must be >= 1, got {cfg.val_every}")
    if cfg.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {cfg.batch_size}")
    if not 0 < cfg.data.image_scale <= 1:
        problems.append(f"data.image_scale must be in (0, 1], got {cfg.data.image_scale}")
    if cfg.optim.lr <= 0:
        problems.append(f"optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.distill.max_feature_rms < 0:
        problems.append(f"distill.max_feature_rms must be >= 0 (0 disables), got {cfg.distill.max_feature_rms}")
    if cfg.distill.temperature <= 0:
        problems.append(f"distill.temperature must be > 0, got {cfg.distill.temperature}")
    if cfg.teacher.backbone_depth not in (50, 101):
        problems.append(f"teacher.backbone_depth must be 50 or 101, got {cfg.teacher.backbone_depth}")
    if problems:
        raise ConfigError("; ".join(problems))


def train_config_from_dict(values: dict, *, source: str = "<dict>") -> TrainConfig:
    """Build a :class:`TrainConfig` from nested plain values; errors name ``source`` and the key."""
    try:
        return from_mapping(TrainConfig, values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``dotted.key=value`` overrides, each parsed by the type of its field."""
    return _apply_overrides(cfg, overrides)


def load_train_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (relative bag paths resolve against the working directory).

    Raises:
        ConfigError: missing file, invalid YAML, unknown key or wrongly typed value.
    """
    path = Path(path)
    if not path.is_file():
        builtin = BUILTIN_CONFIG_DIR / f"{path.name}"
        if path.parent == Path(".") and builtin.with_suffix(".yaml").is_file():
            path = builtin.with_suffix(".yaml")
        else:
            raise ConfigError(f"config file {path} does not exist")
    cfg = train_config_from_dict(read_yaml_mapping(path), source=str(path))
    return apply_overrides(cfg, overrides or [])
