"""The ``monoocc`` command: one entry point, one subcommand per job; all argument parsing lives here.

Each module of this package exposes ``register(subparsers)``, which adds its subcommands and sets
``func`` to a :class:`~monoocc_ros.cli.handlers.Handler`: the name of the function that runs the
job, in the job's own module (``monoocc_ros.evaluation.commands:run``, ``training.commands:_run_job``
...), imported only when the job runs. So ``monoocc --help`` stays fast and only the training jobs
import :mod:`training`; the core (``monoocc_ros`` without this package and :mod:`monoocc_ros.ros`)
never does (test/packaging/test_core_imports.py).

Modules, in the order of the workflow (and of ``monoocc --help``):

- :mod:`.data`: ``generate-scene``, ``convert-kitti`` (handlers in :mod:`monoocc_ros.data`);
- :mod:`.train`: ``train teacher|student|dump-teacher|calibrate``, ``experiment ablation``
  (handlers in :mod:`training`; ``python -m training`` uses this parser too);
- :mod:`.models`: ``convert-checkpoint``, ``export`` (:mod:`monoocc_ros.models.commands`);
- :mod:`.eval`: ``eval`` (:mod:`monoocc_ros.evaluation.commands`);
- :mod:`.ros`: ``replay`` (:mod:`monoocc_ros.ros.commands`);
- :mod:`.bench`: ``bench`` (:mod:`monoocc_ros.bench`).

:mod:`.handlers` holds :class:`~monoocc_ros.cli.handlers.Handler`, :mod:`.formatter` the help
formatter that shows only the defaults that say something.
"""

from __future__ import annotations

import argparse
import os
import sys

from monoocc_ros import __version__
from monoocc_ros.cli import bench, data, models, ros, train
from monoocc_ros.cli import eval as eval_cli  # (the module of `monoocc eval`, not the builtin)
from monoocc_ros.errors import UserError, one_line

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monoocc",
        description="MonoOcc semantic occupancy: data conversion, training, evaluation, export.",
    )
    parser.add_argument("--version", action="version", version=f"monoocc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # In the order of the workflow: data, training, weights, evaluation, deployment.
    for module in (data, train, models, eval_cli, ros, bench):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user's mistake is one line on stderr and exit status 2, not a traceback.

    Every subcommand gets this: errors marked :class:`~monoocc_ros.errors.UserError` (a bad
    checkpoint, bag, dataset, config) and ``OSError`` (a missing file, a full disk, no permission;
    its message names the file) are caught here, so no subcommand needs its own copy of the
    handler. Set ``MONOOCC_TRACEBACK=1`` to see the traceback anyway.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, OSError) as exc:
        if os.environ.get("MONOOCC_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"monoocc {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"monoocc {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; its type where the message alone says little."""
    text = one_line(exc)
    if isinstance(exc, UserError) and text:
        return text
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__

