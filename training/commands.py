"""``monoocc train teacher|student|dump-teacher``: the training subcommands.

Run the same command under ``torchrun --nproc_per_node N`` for DDP. Heavy imports happen
inside the handlers so that ``monoocc --help`` stays fast.

Example:
    monoocc train teacher training/configs/teacher_tiny.yaml --set data.train_bags=bags/seq00
    torchrun --nproc_per_node 4 -m training train student student_monoocc_s.yaml --resume
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    """Add the ``train`` subcommand with its ``teacher``, ``student`` and ``dump-teacher`` jobs."""
    train = subparsers.add_parser(
        "train",
        help="train the privileged teacher or the distilled student; dump teacher features",
        description="Training from converted SemanticKITTI bags; the same command runs under torchrun.",
    )
    jobs = train.add_subparsers(dest="train_job", metavar="JOB", required=True)
    for job, text in (
        ("teacher", "train the multi-frame privileged teacher (ResNet-101 + Cross View Transformer)"),
        ("student", "train the monocular student, distilled from a frozen teacher if configured"),
        ("dump-teacher", "write the frozen teacher's voxel features (fp16) for cached distillation"),
    ):
        p = jobs.add_parser(job, help=text, description=text)
        p.add_argument(
            "config",
            type=Path,
            help="YAML config file, or the name of a shipped one (e.g. student_tiny.yaml)",
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, typed by the field (e.g. --set optim.lr=1e-4 --set data.train_bags=a,b)",
        )
        if job != "dump-teacher":
            p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt if it exists")
            p.add_argument(
                "--hash-dir",
                type=Path,
                default=None,
                help="write each rank's final weights sha256 to <dir>/rank<r>.json (to check DDP ranks agree)",
            )
        p.set_defaults(func=_run_job, train_role=job)
    text = "fit the confidence temperature of a student checkpoint on validation bags (stored in the checkpoint)"
    p = jobs.add_parser("calibrate", help=text, description=text)
    p.add_argument("checkpoint", type=Path, help="student checkpoint (rewritten atomically with a 'calibration' entry)")
    p.add_argument("--val-bags", required=True, help="comma-separated validation bag folders (not the test bags)")
    p.add_argument("--image-scale", type=float, default=1.0, help="resize factor the student was trained at")
    p.add_argument("--max-frames", type=int, default=0, help="use only the first N ground-truth frames (0 = all)")
    p.set_defaults(func=_run_calibrate)


def _run_job(args: argparse.Namespace) -> int:
    from training.config import ConfigError, load_train_config
    from training.train import TrainingError, dump_teacher, run_training

    overrides = list(args.overrides)
    if args.train_role in ("teacher", "student"):
        overrides.append(f"role={args.train_role}")
    try:
        cfg = load_train_config(args.config, overrides)
    except ConfigError as exc:
        print(f"monoocc train: {exc}", file=sys.stderr)
        return 2
    try:
        if args.train_role == "dump-teacher":
            dump_teacher(cfg)
        else:
            run_training(cfg, resume=args.resume, hash_dir=args.hash_dir)
    except TrainingError as exc:
        print(f"monoocc train {args.train_role}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from monoocc_ros.models.checkpoint import CheckpointError
    from training.calibrate import calibrate_checkpoint
    from training.train import TrainingError

    bags = [b for b in args.val_bags.split(",") if b.strip()]
    try:
        calibrate_checkpoint(args.checkpoint, bags, image_scale=args.image_scale, max_frames=args.max_frames)
    except (TrainingError, CheckpointError, ValueError) as exc:  # e.g. a model that needs query files
        print(f"monoocc train calibrate: error: {exc}", file=sys.stderr)
        return 1
    return 0
