"""The one place that sets up training's log output: stdlib ``logging``, filtered per rank.

Training modules log through ``logging.getLogger(__name__)`` (all below the ``training``
logger). :func:`configure_logging` gives that logger one handler on stderr that prints the bare
message, as the CLI always has; under torchrun rank 0 prints INFO and above, the other ranks
only warnings and errors, prefixed with their rank, so N ranks do not print every line N times.
tqdm progress bars are separate (rank 0 only).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging"]

ROOT = "training"


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at set-up time: pytest and callers swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _RankFormatter(logging.Formatter):
    def __init__(self, rank: int):
        super().__init__("%(message)s")
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if self.rank == 0 else f"[rank {self.rank}] {text}"


def configure_logging(rank: int | None = None, level: int = logging.INFO) -> logging.Logger:
    """Route the ``training`` loggers to stderr for this rank (idempotent; the last call's rank wins).

    Args:
        rank: this process's global rank (default: torchrun's ``RANK``, else 0); ranks other than 0
            print warnings and errors only.
        level: the lowest level rank 0 prints.

    Returns:
        The ``training`` logger.
    """
    if rank is None:
        raw = os.environ.get("RANK", "0")
        rank = int(raw) if raw.isdigit() else 0
    logger = logging.getLogger(ROOT)
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(_RankFormatter(rank))
    logger.setLevel(level if rank == 0 else max(level, logging.WARNING))
    # the CLI's lines are printed once, here; an application's root handlers would repeat them
    logger.propagate = False
    return logger
