"""Options of the semantic map (:class:`MapConfig`), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monoocc_ros.labels import SEMANTIC_KITTI, LabelMap

__all__ = ["MOVABLE_CLASSES", "MapConfig"]

MOVABLE_CLASSES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
)
"""Classes whose evidence fades with ``movable_tau_s`` (things that move away)."""

@dataclass(frozen=True)
class MapConfig:
    """Options of the semantic map.

    Attributes:
        size: (X, Y, Z) voxels of the rolling window.
        voxel_size_m: edge of a map voxel (the grid's, 0.2 m, for a one-to-one fusion).
        hit_logodds: occupancy evidence of one voxel predicted occupied with confidence 1.
        miss_logodds: evidence of one voxel predicted empty in the frustum (negative).
        min_logodds, max_logodds: clamps, so a voxel can change state in a bounded number of
            frames.
        occupied_logodds: a voxel is occupied above this.
        max_votes: clamp of the class margin (a class can be overturned in bounded time).
        movable_classes: class names that decay with ``movable_tau_s``.
        movable_tau_s, static_tau_s: decay time constants of occupied evidence (inf: none).
        occupied_in_frustum_only: fuse occupied voxels only inside the camera frustum (the
            network also completes the scene outside it).
        max_tilt_deg: refuse poses whose grid z axis tilts more than this from the fixed
            frame's z axis.
        drivable_classes: costmap cells whose occupied voxels are only these classes are free.
        obstacle_band_m: (low, high) heights, relative to the grid frame's origin at the
            latest pose, in which any other occupied voxel makes an obstacle.
    """

    size: tuple[int, int, int] = (512, 512, 32)
    voxel_size_m: float = 0.2
    hit_logodds: float = 0.85
    miss_logodds: float = -0.4
    min_logodds: float = -1.2
    max_logodds: float = 2.0
    occupied_logodds: float = 0.25
    max_votes: float = 5.0
    movable_classes: tuple[str, ...] = MOVABLE_CLASSES
    movable_tau_s: float = 2.0
    static_tau_s: float = float("inf")
    occupied_in_frustum_only: bool = False
    max_tilt_deg: float = 10.0
    drivable_classes: tuple[str, ...] = ("road", "parking")
    obstacle_band_m: tuple[float, float] = (-1.9, 0.6)
    labels: LabelMap = field(default=SEMANTIC_KITTI, repr=False)

    def __post_init__(self):
        if len(self.size) != 3 or any(int(n) < 2 for n in self.size):
            raise ValueError(f"MapConfig.size must be three sizes >= 2, got {self.size!r}")
        object.__setattr__(self, "size", tuple(int(n) for n in self.size))
        if not self.voxel_size_m > 0:
            raise ValueError(f"MapConfig.voxel_size_m must be > 0, got {self.voxel_size_m!r}")
        if not (self.hit_logodds > 0 and self.miss_logodds < 0):
            raise ValueError("MapConfig.hit_logodds must be > 0 and miss_logodds < 0")
        if not self.min_logodds < self.occupied_logodds < self.max_logodds:
            raise ValueError("MapConfig needs min_logodds < occupied_logodds < max_logodds")
        for name in ("movable_tau_s", "static_tau_s", "max_votes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MapConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in (*self.movable_classes, *self.drivable_classes):
            if name not in self.labels.names:
                raise ValueError(f"MapConfig: unknown class name {name!r} (one of {list(self.labels.names)})")
        lo, hi = self.obstacle_band_m
        if not lo < hi:
            raise ValueError(f"MapConfig.obstacle_band_m must be (low, high) with low < high, got {self.obstacle_band_m!r}")

    @property
    def memory_bytes(self) -> int:
        """Bytes of the map state: 12 per voxel, fixed by ``size``."""
        return int(np.prod(self.size)) * 12
