"""Per-stage wall-clock timing of a forward pass (the ``timings`` dicts of predict and the benchmarks).

Example:
    >>> timings = {}
    >>> with stage_timer(timings, "head", torch.device("cpu")):
    ...     pass
    >>> list(timings)
    ['head']
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["stage_timer"]


@contextmanager
def stage_timer(timings: dict[str, float] | None, name: str, device: torch.device) -> Iterator[None]:
    """Add the block's wall time in ms to ``timings[name]`` (synchronising CUDA); no-op without timings."""
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[name] = timings.get(name, 0.0) + 1000.0 * (time.perf_counter() - start)
