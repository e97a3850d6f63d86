"""The ``monoocc`` command: one entry point, one subcommand per job.

Each job's module exposes ``register(subparsers)``, which adds its subcommand and sets
``func`` to the function that runs it; heavy imports happen inside that function so that
``monoocc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from monoocc_ros import __version__, bench
from monoocc_ros.data import commands as data_commands
from monoocc_ros.data import scene
from monoocc_ros.evaluation import commands as eval_commands
from monoocc_ros.models import commands as model_commands
from monoocc_ros.ros import commands as ros_commands
from training import commands as train_commands

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
    model_commands.register(subparsers)
    eval_commands.register(subparsers)
    ros_commands.register(subparsers)
    bench.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
