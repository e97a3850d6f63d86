"""Lint gate: ``ruff check .`` with the committed ``ruff.toml`` reports nothing.

ruff is pinned in setup.py's ``dev`` extra, so ``make setup`` installs it; its absence is a
broken environment and fails here rather than skipping the gate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _ruff() -> str:
    # beside the interpreter first: the venv's ruff even when .venv/bin is not on PATH
    here = Path(sys.executable).parent / ("ruff.exe" if os.name == "nt" else "ruff")
    found = str(here) if here.is_file() else shutil.which("ruff")
    assert found, "ruff not installed: run `make setup` (setup.py dev extra pins it)"
    return found


def test_ruff_check_is_clean():
    proc = subprocess.run(
        # --config: a missing ruff.toml is an error, not ruff's defaults; --no-cache: no .ruff_cache/ in the tree
        [_ruff(), "check", ".", "--config", "ruff.toml", "--no-cache", "--output-format", "concise"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"ruff findings (fix them, or explain a noqa):\n{proc.stdout}{proc.stderr}"
