"""The ``monoocc`` command: one entry point, one subcommand per job.

Each job's module exposes ``register(subparsers)``, which adds its subcommand and sets
``func`` to the function that runs it; heavy imports happen inside that function so that
``monoocc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from monoocc_ros import __version__, bench
from monoocc_ros.data import commands as data_commands
from monoocc_ros.data import scene
from monoocc_ros.errors import UserError
from monoocc_ros.evaluation import commands as eval_commands
from monoocc_ros.models import commands as model_commands
from monoocc_ros.ros import commands as ros_commands
from training import commands as train_commands
from training import experiment as experiment_commands

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monoocc",
        description="MonoOcc semantic occupancy: data conversion, training, evaluation, export.",
    )
    parser.add_argument("--version", action="version", version=f"monoocc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # In the order of the workflow: data, training, weights, evaluation, deployment.
    scene.register(subparsers)
    data_commands.register(subparsers)
    train_commands.register(subparsers)
    experiment_commands.register(subparsers)
    model_commands.register(subparsers)
    eval_commands.register(subparsers)
    ros_commands.register(subparsers)
    bench.register(subparsers)
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
    text = " ".join(str(exc).split())
    if isinstance(exc, UserError) and text:
        return text
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
