"""Restricted reading of official mmcv checkpoints (MonoOcc, VoxFormer).

mmcv 1.x writes ``{"meta": {..., "hook_msgs": {"best_score": numpy.float64, ...}}, "state_dict": ...,
"optimizer": ...}``. The numpy scalar pickles as ``GLOBAL numpy.core.multiarray scalar`` (numpy 1.x,
which wrote every released file) or ``numpy._core.multiarray scalar`` (numpy 2.x), followed by
``numpy dtype`` and the dtype's class (``numpy.dtypes.Float64DType``) for the BUILD step.
``torch.load(weights_only=True)`` refuses all of them by default.

:func:`load_official_file` loads with ``weights_only=True`` inside :func:`torch.serialization.safe_globals`
with exactly :data:`OFFICIAL_NUMPY_GLOBALS` added, for the one call (the process-wide list is not
touched). Nothing else is allowed and there is no fallback to unrestricted unpickling: a file holding
any other global is refused with that global's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OFFICIAL_NUMPY_GLOBALS", "official_safe_globals", "load_official_file"]

# numpy scalar dtypes a training hook may store (scores, counters, flags)
_SCALAR_DTYPE_CLASSES = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType")

# The fully qualified names a pickle may carry; both numpy module paths name the same function.
OFFICIAL_NUMPY_GLOBALS = (
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    *(f"numpy.dtypes.{name}" for name in _SCALAR_DTYPE_CLASSES),
)


def _numpy_scalar_function():
    # numpy 2 has numpy._core; numpy 1.x has numpy.core (importing numpy.core under numpy 2 warns).
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 1.26
        from numpy.core.multiarray import scalar
    return scalar


def official_safe_globals() -> list:
    """The allow-list in the form :func:`torch.serialization.safe_globals` takes.

    Each entry is ``(object, "module.name")`` so a numpy-1 name resolves to the running numpy's
    object without importing the deprecated ``numpy.core`` path.
    """
    scalar = _numpy_scalar_function()
    entries: list = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    for name in _SCALAR_DTYPE_CLASSES:
        cls = getattr(dtypes, name, None) if dtypes is not None else None
        if cls is not None:
            entries.append((cls, f"numpy.dtypes.{name}"))
    return entries


def _refusal(exc: Exception) -> str:
    """torch's multi-paragraph refusal -> the one fact that matters (the global it met)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"but got <class '([\w.]+)'>", text)
    if found:
        return f"it holds {found.group(1)}, which is not on the allow-list of official checkpoints ({', '.join(OFFICIAL_NUMPY_GLOBALS)})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}"


def load_official_file(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` with the official numpy allow-list, on CPU.

    Args:
        path: the file.
        what: words naming the file in messages ("official MonoOcc checkpoint").

    Raises:
        FileNotFoundError: naming ``what`` and ``path``.
        ValueError: one line naming the file and why it cannot be read (truncated, or the global
            outside the allow-list).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(official_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, zipfile errors
        raise ValueError(
            f"cannot read {what} {path} with weights_only=True: {_refusal(exc)} "
            "(the file is truncated, or holds pickled objects beyond tensors, plain containers and numpy scalars)"
        ) from exc
