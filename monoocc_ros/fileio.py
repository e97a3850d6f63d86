"""Atomic file writes and file hashes.

Every file the project writes (datasets, bags' side files, reports, checkpoints, caches) goes
through :func:`atomic_write`, so a crash or a kill leaves the old file or the new one, never a
half-written one. Files get the mode ``open()`` would give them (0644 under umask 022), folders
``mkdir``'s (0755): the umask decides, not the temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write", "current_umask", "sha256_file", "write_bytes_atomic", "write_json_atomic", "write_text_atomic",
]


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it onto ``path``.

    Example:
        >>> with atomic_write(Path("x.bin")) as f:  # doctest: +SKIP
        ...     f.write(b"data")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            # mkstemp makes the file 0600 whatever the umask; give it the mode a plain open()
            # would (0644 under umask 022), so other users and containers can read our output.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it).

    Linux reports it in ``/proc/self/status``; elsewhere it is set and restored at once, which
    another thread creating a file at that instant could see.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: Path, data: Any, *, indent: int = 2) -> Path:
    """JSON with NaN/inf refused (they are not JSON)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def write_png_atomic(path: Path, rgb) -> Path:
    """An (H, W, 3) uint8 RGB image as a PNG, atomically.

    Raises:
        OSError: naming the file, if OpenCV cannot encode the image.
    """
    import cv2
    import numpy as np

    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    return write_bytes_atomic(path, png.tobytes())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
