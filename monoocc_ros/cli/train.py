"""``monoocc train ...`` and ``monoocc experiment ablation``: the parsers of the training jobs.

Nothing here imports :mod:`training`: the handlers (:mod:`training.commands`,
:func:`training.experiment._run`) are imported when a job runs, so the ``monoocc`` parser and the
core stay free of it. ``python -m training`` (a torchrun module target) uses
:func:`register_train` too.

Example::

    monoocc train teacher training/configs/teacher_tiny.yaml --set data.train_bags=bags/seq00
    torchrun --nproc_per_node 4 -m training train student student_monoocc_s.yaml --resume
    monoocc experiment ablation --quick --out runs/ablation_quick
"""

from __future__ import annotations

from pathlib import Path

from monoocc_ros.cli.handlers import Handler

__all__ = ["register", "register_experiment", "register_train"]

ABLATION_DEFAULT_CONFIG = "training/configs/ablation_tiny.yaml"
"""Where :data:`training.experiment.DEFAULT_CONFIG` lies in the source tree (named in ``--help``)."""

ABLATION_DESCRIPTION = (
    "MonoOcc's ablation (paper Table I direction) in miniature. On generated streets (training "
    "sequences from some scene seeds, held-out sequences from others) it trains and evaluates, for "
    "each training seed, the student baseline, +ICA, +2D loss, +distillation for every distillation "
    "mode, and the privileged teacher; every run is scored on all ground-truth frames of the held-out "
    "bags after its last epoch. Rerun the same command to resume."
)


def register(subparsers) -> None:
    """Add ``train`` and ``experiment``."""
    register_train(subparsers)
    register_experiment(subparsers)


def register_train(subparsers) -> None:
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
        p.set_defaults(func=Handler("training.commands:_run_job"), train_role=job)
    text = "fit the confidence temperature of a student checkpoint on validation bags (stored in the checkpoint)"
    p = jobs.add_parser("calibrate", help=text, description=text)
    p.add_argument("checkpoint", type=Path, help="student checkpoint (rewritten atomically with a 'calibration' entry)")
    p.add_argument("--val-bags", required=True, help="comma-separated validation bag folders (not the test bags)")
    p.add_argument("--image-scale", type=float, default=1.0, help="resize factor the student was trained at")
    p.add_argument("--max-frames", type=int, default=0, help="use only the first N ground-truth frames (0 = all)")
    p.set_defaults(func=Handler("training.commands:_run_calibrate"))


def register_experiment(subparsers) -> None:
    """Add ``monoocc experiment ablation``."""
    exp = subparsers.add_parser("experiment", help="reproducible experiments (the MonoOcc ablation on generated streets)")
    jobs = exp.add_subparsers(dest="experiment_job", metavar="JOB", required=True)
    p = jobs.add_parser(
        "ablation",
        help="train and score student / +ICA / +2D loss / +distillation / teacher over several seeds",
        description=ABLATION_DESCRIPTION,
    )
    p.add_argument("config", type=Path, nargs="?", default=None,
                   help=f"YAML config (default {ABLATION_DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (e.g. --set seeds=[0,1,2,3] --set model=monoocc_s --set device=cuda)")
    p.add_argument("--quick", action="store_true", help="one short street each, one epoch (< 15 min on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=None, help="results folder (overrides out_dir); rerun to resume")
    p.set_defaults(func=Handler("training.experiment:_run"))
