"""On-disk cache of frozen-teacher voxel features (``monoocc train dump-teacher``).

Layout of one cached split (``<cache_dir>/<split>/``)::

    manifest.json      teacher checkpoint sha256, bag identities, feature shape, frame stamps
    000000.pt ...      one (C, 128, 128, 16) float16 tensor per dataset index (torch.save)

The official code loads precomputed ``bev_feat`` files with nothing tying them to the teacher
that wrote them. Here student training opens the cache with the teacher checkpoint it is
configured with and refuses a cache made by another checkpoint, for other bags or with other
image settings, naming the mismatch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from monoocc_ros.errors import UserError
from monoocc_ros.fileio import atomic_write, sha256_file, write_json_atomic
from torch import Tensor

__all__ = [
    "CACHE_FORMAT",
    "CacheMismatchError",
    "CacheManifest",
    "bag_identity",
    "cache_settings",
    "TeacherFeatureCache",
]

CACHE_FORMAT = "monoocc_ros/teacher_cache/1"
MANIFEST = "manifest.json"


class CacheMismatchError(UserError, RuntimeError):
    """The teacher cache was not made from this teacher checkpoint, these bags or settings."""


def bag_identity(bag: Path) -> dict[str, str]:
    """A rosbag2 folder's identity: resolved path and sha256 of its ``metadata.yaml``.

    The metadata lists the storage files, message counts and time range, so a re-recorded or
    re-converted bag gets a new identity without hashing gigabytes of data.
    """
    bag = Path(bag)
    meta = bag / "metadata.yaml"
    if not meta.is_file():
        raise FileNotFoundError(f"bag {bag} has no metadata.yaml; is it a rosbag2 folder?")
    return {"path": str(bag.resolve()), "metadata_sha256": sha256_file(meta)}


def cache_settings(temporal_offsets: Sequence[int], image_scale: float) -> dict:
    """The data settings that change the cached features: the teacher's past frames and the image scale."""
    return {"temporal_offsets": list(temporal_offsets), "image_scale": image_scale}


@dataclass
class CacheManifest:
    """What a cached split was made from.

    Attributes:
        teacher_sha256: sha256 of the teacher checkpoint file.
        bags: :func:`bag_identity` of each bag, in dataset order.
        settings: data settings that change the features (temporal offsets, image scale).
        feature_shape: (C, X, Y, Z) of every stored tensor.
        stamps: dataset index (as a string, JSON keys) -> image stamp in ns.
        format: cache format version.
    """

    teacher_sha256: str
    bags: list[dict[str, str]]
    settings: dict
    feature_shape: list[int]
    stamps: dict[str, int] = field(default_factory=dict)
    format: str = CACHE_FORMAT


class TeacherFeatureCache:
    """Read or write one cached split.

    Args:
        folder: the split folder (``<cache_dir>/train``).
        manifest: what the cache holds (validated against the run by :meth:`open`).
    """

    def __init__(self, folder: Path, manifest: CacheManifest):
        self.folder = Path(folder)
        self.manifest = manifest

    @staticmethod
    def _file(folder: Path, index: int) -> Path:
        return folder / f"{index:06d}.pt"

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        teacher_checkpoint: Path,
        bags: Sequence[Path],
        settings: dict,
        feature_shape: Sequence[int],
    ) -> TeacherFeatureCache:
        """Start a new cache (any existing manifest is replaced when :meth:`finish` runs)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stale = folder / MANIFEST
        if stale.exists():
            stale.unlink()  # a half-rewritten cache must never look complete
        manifest = CacheManifest(
            teacher_sha256=sha256_file(Path(teacher_checkpoint)),
            bags=[bag_identity(Path(b)) for b in bags],
            settings=dict(settings),
            feature_shape=list(feature_shape),
        )
        return cls(folder, manifest)

    def put(self, index: int, stamp_ns: int, features: Tensor) -> None:
        """Store (C, X, Y, Z) features of dataset item ``index`` as float16 (atomic per file)."""
        if list(features.shape) != self.manifest.feature_shape:
            raise ValueError(
                f"teacher features {tuple(features.shape)} do not match the cache's "
                f"{tuple(self.manifest.feature_shape)}"
            )
        path = self._file(self.folder, index)
        with atomic_write(path) as f:
            torch.save(features.detach().to("cpu", torch.float16).contiguous(), f)
        self.manifest.stamps[str(index)] = int(stamp_ns)

    def finish(self) -> None:
        """Write the manifest; only now is the cache usable."""
        write_json_atomic(self.folder / MANIFEST, asdict(self.manifest), indent=1)

    @classmethod
    def open(
        cls, folder: Path, *, teacher_checkpoint: Path, bags: Sequence[Path], settings: dict
    ) -> TeacherFeatureCache:
        """Open a cache and check it was made by ``teacher_checkpoint`` from ``bags``.

        Raises:
            FileNotFoundError: no cache (or an unfinished one) at ``folder``.
            CacheMismatchError: teacher checkpoint, bags or settings differ; the message says which.
        """
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"no teacher cache at {folder} ({MANIFEST} missing); run `monoocc train dump-teacher` first"
            )
        try:
            manifest = CacheManifest(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise CacheMismatchError(f"teacher cache manifest {path} is unreadable: {exc}") from None
        if manifest.format != CACHE_FORMAT:
            raise CacheMismatchError(f"{path}: format {manifest.format!r}, expected {CACHE_FORMAT!r}")
        teacher_sha = sha256_file(Path(teacher_checkpoint))
        if manifest.teacher_sha256 != teacher_sha:
            raise CacheMismatchError(
                f"teacher cache {folder} was made by a teacher checkpoint with sha256 "
                f"{manifest.teacher_sha256[:12]}..., but distill.teacher_checkpoint={teacher_checkpoint} "
                f"has sha256 {teacher_sha[:12]}...; re-run dump-teacher with this checkpoint"
            )
        wanted = [bag_identity(Path(b)) for b in bags]
        if manifest.bags != wanted:
            raise CacheMismatchError(
                f"teacher cache {folder} was made from bags {[b['path'] for b in manifest.bags]} "
                f"but this run reads {[b['path'] for b in wanted]} (or a bag changed since); "
                "re-run dump-teacher"
            )
        if manifest.settings != dict(settings):
            raise CacheMismatchError(
                f"teacher cache {folder} was made with {manifest.settings}, this run uses {dict(settings)}"
            )
        return cls(folder, manifest)

    def get(self, index: int, stamp_ns: int) -> Tensor:
        """(C, X, Y, Z) float16 features of dataset item ``index``; the stamp must match."""
        cached = self.manifest.stamps.get(str(index))
        if cached is None:
            raise CacheMismatchError(f"teacher cache {self.folder} has no features for item {index}")
        if cached != int(stamp_ns):
            raise CacheMismatchError(
                f"teacher cache {self.folder}: item {index} was stored for stamp {cached} ns, "
                f"the dataset now gives {int(stamp_ns)} ns"
            )
        return torch.load(self._file(self.folder, index), map_location="cpu", weights_only=True)
