"""The handlers of ``monoocc train teacher|student|dump-teacher|calibrate`` (parser:
:mod:`monoocc_ros.cli.train`, which imports this module only when a job runs).

Run the same command under ``torchrun --nproc_per_node N`` for DDP. Heavy imports happen
inside the handlers so that ``monoocc --help`` stays fast.

Example:
    monoocc train teacher training/configs/teacher_tiny.yaml --set data.train_bags=bags/seq00
    torchrun --nproc_per_node 4 -m training train student student_monoocc_s.yaml --resume
"""

from __future__ import annotations

import argparse


def _run_job(args: argparse.Namespace) -> int:
    from training.config import ConfigError, load_train_config
    from training.dump import dump_teacher
    from training.errors import TrainingError
    from training.logs import configure_logging
    from training.train import run_training

    log = configure_logging()

    overrides = list(args.overrides)
    if args.train_role in ("teacher", "student"):
        overrides.append(f"role={args.train_role}")
    try:
        cfg = load_train_config(args.config, overrides)
    except ConfigError as exc:
        log.error("monoocc train: %s", exc)
        return 2
    try:
        if args.train_role == "dump-teacher":
            dump_teacher(cfg)
        else:
            run_training(cfg, resume=args.resume, hash_dir=args.hash_dir)
    except TrainingError as exc:
        log.error("monoocc train %s: error: %s", args.train_role, exc)
        return 1
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from monoocc_ros.models.checkpoint import CheckpointError
    from training.calibrate import calibrate_checkpoint
    from training.errors import TrainingError
    from training.logs import configure_logging

    log = configure_logging()
    bags = [b for b in args.val_bags.split(",") if b.strip()]
    try:
        calibrate_checkpoint(args.checkpoint, bags, image_scale=args.image_scale, max_frames=args.max_frames)
    except (TrainingError, CheckpointError, ValueError) as exc:  # e.g. a model that needs query files
        log.error("monoocc train calibrate: error: %s", exc)
        return 1
    return 0
