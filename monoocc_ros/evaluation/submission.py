"""Export predictions in the SemanticKITTI benchmark layout and check them like the validator.

The official ``semantic-kitti-api`` (``evaluate_completion.py``, ``validate_submission.py
--task completion``) reads ``<root>/sequences/SS/predictions/XXXXXX.label``: one file per
ground-truth frame, 256*256*32 = 2,097,152 little-endian uint16 *raw* SemanticKITTI ids in the
flat order (x * 256 + y) * 32 + z. Train ids go back to raw ids through ``learning_map_inv``.

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> from monoocc_ros.evaluation.submission import write_prediction
    >>> root = Path(tempfile.mkdtemp())
    >>> p = write_prediction(root, "08", 5, np.zeros((256, 256, 32), np.uint8))
    >>> p.relative_to(root).as_posix(), p.stat().st_size
    ('sequences/08/predictions/000005.label', 4194304)
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monoocc_ros.fileio import atomic_write, write_bytes_atomic
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI

__all__ = [
    "BENCHMARK_SEQUENCES", "PREDICTION_DTYPE", "SubmissionZip", "prediction_path", "read_prediction",
    "validate_submission", "write_prediction", "write_submission_zip",
]

PREDICTION_DTYPE = np.dtype("<u2")
BENCHMARK_SEQUENCES = tuple(f"{s:02d}" for s in range(11, 22))
"""The hidden test sequences the SemanticKITTI SSC benchmark scores (its zip must hold all of them)."""


def _check_sequence(sequence: str) -> str:
    if not (isinstance(sequence, str) and len(sequence) == 2 and sequence.isdigit()):
        raise ValueError(f"sequence must be two digits like '08', got {sequence!r}")
    return sequence


def prediction_path(root: Path, sequence: str, frame: int) -> Path:
    """``root/sequences/SS/predictions/XXXXXX.label`` of a KITTI frame index."""
    if not 0 <= int(frame) <= 999_999:
        raise ValueError(f"frame index must be in 0..999999, got {frame}")
    return Path(root) / "sequences" / _check_sequence(sequence) / "predictions" / f"{int(frame):06d}.label"


def write_prediction(root: Path, sequence: str, frame: int, labels: np.ndarray) -> Path:
    """Write one predicted grid as raw uint16 ids, atomically.

    Args:
        root: submission root (the folder holding ``sequences/``).
        sequence: two-digit sequence, e.g. "08".
        frame: KITTI frame index (from ``BagFrame.index``).
        labels: (256, 256, 32) uint8 train ids 0..19.

    Raises:
        ValueError: wrong shape or ids that are not classes (the official evaluation would
            crash on them or silently score them as empty).
    """
    labels = np.asarray(labels)
    if labels.shape != KITTI_GRID.size:
        raise ValueError(f"prediction for frame {frame} must have shape {KITTI_GRID.size}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= SEMANTIC_KITTI.num_classes):
        raise ValueError(
            f"prediction for frame {frame} holds ids outside 0..{SEMANTIC_KITTI.num_classes - 1}: "
            f"{np.unique(labels[(labels < 0) | (labels >= SEMANTIC_KITTI.num_classes)])[:10].tolist()}"
        )
    path = prediction_path(root, sequence, frame)
    raw = SEMANTIC_KITTI.to_raw(labels.astype(np.uint8)).astype(PREDICTION_DTYPE).ravel()
    return write_bytes_atomic(path, raw.tobytes())


def read_prediction(path: Path) -> np.ndarray:
    """(256, 256, 32) uint16 raw ids of one prediction file."""
    path = Path(path)
    data = np.fromfile(path, dtype=PREDICTION_DTYPE)
    if data.size != KITTI_GRID.num_voxels:
        raise ValueError(f"{path}: {data.size} uint16 values, expected {KITTI_GRID.num_voxels}")
    return data.reshape(KITTI_GRID.size)


def validate_submission(root: Path, expected: Mapping[str, Iterable[int]]) -> list[str]:
    """Check a submission folder the way ``validate_submission.py --task completion`` does.

    Args:
        root: submission root.
        expected: sequence -> KITTI frame indices that need a prediction.

    Returns:
        Human-readable problems (missing files, extra files, wrong sizes, unknown raw ids);
        empty when the submission is valid.
    """
    root = Path(root)
    problems: list[str] = []
    size = KITTI_GRID.num_voxels * PREDICTION_DTYPE.itemsize
    valid_raw = set(SEMANTIC_KITTI.learning_map_inv.values())
    for sequence, frames in expected.items():
        want = {prediction_path(root, sequence, f).name for f in frames}
        folder = root / "sequences" / _check_sequence(sequence) / "predictions"
        have = {p.name for p in folder.glob("*")} if folder.is_dir() else set()
        for name in sorted(want - have):
            problems.append(f"sequence {sequence}: missing prediction {folder / name}")
        for name in sorted(have - want):
            problems.append(f"sequence {sequence}: unexpected file {folder / name}")
        for name in sorted(want & have):
            path = folder / name
            if path.stat().st_size != size:
                problems.append(f"{path}: {path.stat().st_size} bytes, expected {size}")
                continue
            unknown = set(np.unique(np.fromfile(path, dtype=PREDICTION_DTYPE)).tolist()) - valid_raw
            if unknown:
                problems.append(f"{path}: raw ids {sorted(unknown)[:10]} are not in learning_map_inv")
    return problems


@dataclass(frozen=True)
class SubmissionZip:
    """What :func:`write_submission_zip` packed.

    Attributes:
        path: the zip written.
        predictions: sequence -> prediction files packed (only sequences 11-21 that have any).
        missing: benchmark sequences without a single prediction: the benchmark will refuse the
            zip until they are exported too.
        left_out: sequences in the folder that the benchmark does not score (e.g. 08).
    """

    path: Path
    predictions: dict[str, int]
    missing: tuple[str, ...]
    left_out: tuple[str, ...]


def write_submission_zip(root: Path, zip_path: Path, *, description: str | None = None) -> SubmissionZip:
    """Pack ``root/sequences/{11..21}/predictions/*.label`` into the zip the benchmark takes.

    The layout is what ``validate_submission.py --task completion`` of semantic-kitti-api checks:
    explicit folder entries ``sequences/``, ``sequences/SS/`` and ``sequences/SS/predictions/``
    for all eleven sequences, the ``.label`` files, an optional ``description.txt``, and nothing
    else, so predictions of other sequences (validation 08) are left out. Written atomically.

    Raises:
        ValueError: ``zip_path`` does not end in ``.zip`` (the benchmark refuses it) or a
            prediction file has the wrong size (names the file).
    """
    root, zip_path = Path(root), Path(zip_path)
    if zip_path.suffix != ".zip":
        raise ValueError(f"{zip_path}: the benchmark takes only files ending in .zip")
    size = KITTI_GRID.num_voxels * PREDICTION_DTYPE.itemsize
    files: dict[str, list[Path]] = {}
    for sequence in BENCHMARK_SEQUENCES:
        labels = sorted((root / "sequences" / sequence / "predictions").glob("*.label"))
        for path in labels:
            if path.stat().st_size != size:
                raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {size}")
        if labels:
            files[sequence] = labels
    present = sorted(p.name for p in (root / "sequences").iterdir() if p.is_dir()) if (root / "sequences").is_dir() else []
    with atomic_write(zip_path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sequences/", b"")
        for sequence in BENCHMARK_SEQUENCES:
            zf.writestr(f"sequences/{sequence}/", b"")
            zf.writestr(f"sequences/{sequence}/predictions/", b"")
            for path in files.get(sequence, []):
                zf.write(path, f"sequences/{sequence}/predictions/{path.name}")
        if description:
            zf.writestr("description.txt", description)
    return SubmissionZip(
        path=zip_path,
        predictions={s: len(v) for s, v in files.items()},
        missing=tuple(s for s in BENCHMARK_SEQUENCES if s not in files),
        left_out=tuple(s for s in present if s not in BENCHMARK_SEQUENCES),
    )
