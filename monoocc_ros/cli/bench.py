"""``monoocc bench``: the parser (handler: :func:`monoocc_ros.bench.run_command`).

Example::

    monoocc bench --quick --only inference --json-out bench.json
"""

from __future__ import annotations

from pathlib import Path

from monoocc_ros.bench import BENCH_DIR
from monoocc_ros.cli.handlers import Handler

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``monoocc bench``."""
    p = subparsers.add_parser(
        "bench",
        help="run the benchmarks in bench/ and print a JSON document and a Markdown table",
        description="Run bench/bench_*.py, each in a fresh subprocess, and collect their JSON.",
    )
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only bench_NAME.py (repeatable), e.g. --only inference")
    p.add_argument("--quick", action="store_true", help="CI-size runs (passed to scripts that support it)")
    p.add_argument("--json-out", type=Path, default=None, help="write the JSON document here")
    p.add_argument("--markdown-out", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=f"folder of bench scripts (default {BENCH_DIR})")
    p.add_argument("--timeout-s", type=float, default=None, help="per-script time limit")
    p.set_defaults(func=Handler("monoocc_ros.bench:run_command"))
