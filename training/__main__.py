"""``python -m training train ...``: the training subcommands without the full ``monoocc`` CLI.

Useful as a torchrun module target: ``torchrun --nproc_per_node 2 -m training train teacher cfg.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from monoocc_ros.cli.train import register_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    register_train(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
