"""Voxel grid geometry: extent, index order, voxel centres, label downsampling.

The SemanticKITTI scene-completion grid is 256x256x32 voxels of 0.2 m covering
x in [0, 51.2), y in [-25.6, 25.6), z in [-2, 4.4) metres of the LiDAR (velodyne) frame
(x forward, y left, z up). Flat index (x * size_y + y) * size_z + z, as in the dataset files.

A model's grid is part of its config (``ModelConfig.grid``, a :class:`VoxelGrid`); :data:`KITTI_GRID`
and :data:`KITTI_GRID_HALF` are the SemanticKITTI default instances for code that is SemanticKITTI
by nature (dataset files, the official submission format) or has no model config at hand.

Example:
    >>> from monoocc_ros.grid import KITTI_GRID
    >>> KITTI_GRID.num_voxels, KITTI_GRID.half().size
    (2097152, (128, 128, 16))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monoocc_ros.labels import EMPTY, IGNORE

__all__ = ["VoxelGrid", "KITTI_GRID", "KITTI_GRID_HALF", "downsample_labels"]


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned voxel grid in its own frame.

    Attributes:
        size: (X, Y, Z) number of voxels.
        voxel_size_m: edge length of one voxel.
        origin_m: position of the grid's minimum corner (not of a voxel centre).
    """

    size: tuple[int, int, int] = (256, 256, 32)
    voxel_size_m: float = 0.2
    origin_m: tuple[float, float, float] = (0.0, -25.6, -2.0)

    def __post_init__(self):
        if len(self.size) != 3 or any(int(n) != n or n < 1 for n in self.size):
            raise ValueError(f"grid.size must be three positive voxel counts, got {self.size}")
        if not self.voxel_size_m > 0 or len(self.origin_m) != 3:
            raise ValueError(f"grid needs voxel_size_m > 0 and a 3D origin_m, got {self.voxel_size_m}, {self.origin_m}")

    @property
    def num_voxels(self) -> int:
        return self.size[0] * self.size[1] * self.size[2]

    @property
    def extent_m(self) -> tuple[float, float, float]:
        return tuple(n * self.voxel_size_m for n in self.size)  # type: ignore[return-value]

    def half(self) -> VoxelGrid:
        """The grid at half resolution (same extent, voxels twice as large)."""
        return self.downscaled(2)

    def downscaled(self, factor: int) -> VoxelGrid:
        if any(n % factor for n in self.size):
            raise ValueError(f"grid size {self.size} is not divisible by {factor}")
        return VoxelGrid(
            tuple(n // factor for n in self.size), self.voxel_size_m * factor, self.origin_m
        )

    def index_grid(self) -> np.ndarray:
        """(N, 3) int64 voxel indices (i, j, k) in flat order."""
        i, j, k = np.meshgrid(*(np.arange(n) for n in self.size), indexing="ij")
        return np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)

    def centres(self) -> np.ndarray:
        """(N, 3) float64 voxel centres in metres, flat order."""
        return self.index_to_point(self.index_grid())

    def index_to_point(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) integer indices -> (..., 3) float64 voxel centres."""
        return (np.asarray(ijk, dtype=np.float64) + 0.5) * self.voxel_size_m + np.asarray(
            self.origin_m
        )

    def point_to_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel indices of points (floor rule).

        Args:
            points: (P, 3) float positions in the grid frame.

        Returns:
            ijk: (P, 3) int64 indices (meaningless where outside).
            inside: (P,) bool, True where the point lies inside the grid.
        """
        ijk = np.floor(
            (np.asarray(points, dtype=np.float64) - np.asarray(self.origin_m)) / self.voxel_size_m
        ).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(self.size)), axis=1)
        return ijk, inside

    def flat_index(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) indices -> (...,) flat indices (x * Y + y) * Z + z."""
        ijk = np.asarray(ijk)
        return (ijk[..., 0] * self.size[1] + ijk[..., 1]) * self.size[2] + ijk[..., 2]

    def voxelize(self, points: np.ndarray) -> np.ndarray:
        """(P, 3) points -> (X, Y, Z) bool occupancy of the voxels they fall into."""
        ijk, inside = self.point_to_index(points)
        occ = np.zeros(self.num_voxels, dtype=bool)
        occ[self.flat_index(ijk[inside])] = True
        return occ.reshape(self.size)


KITTI_GRID = VoxelGrid()
KITTI_GRID_HALF = KITTI_GRID.half()


def downsample_labels(labels: np.ndarray, factor: int = 2) -> np.ndarray:
    """Downsample a semantic grid with VoxFormer's rule.

    A coarse cell whose children are all empty (0) or unknown (255) becomes 0 if it has
    more empty children than unknown ones, else 255. Otherwise it takes the most frequent
    class among its children in 1..254 (ties to the smaller id).

    Args:
        labels: (X, Y, Z) uint8 train ids, sizes divisible by ``factor``.

    Returns:
        (X/f, Y/f, Z/f) uint8 train ids.
    """
    X, Y, Z = labels.shape
    if X % factor or Y % factor or Z % factor:
        raise ValueError(f"label grid {labels.shape} is not divisible by {factor}")
    # (X/f, f, Y/f, f, Z/f, f) -> (X/f, Y/f, Z/f, f^3)
    blocks = labels.reshape(X // factor, factor, Y // factor, factor, Z // factor, factor)
    blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(-1, factor**3)
    n_empty = (blocks == EMPTY).sum(1)
    n_unknown = (blocks == IGNORE).sum(1)
    out = np.where(n_empty > n_unknown, EMPTY, IGNORE).astype(np.uint8)
    # Mode of the semantic children: sort each block (0 and 255 pushed past the end) and scan the
    # runs of equal values; only a strictly longer run replaces the best, so ties keep the
    # smaller id.
    semantic = np.where((blocks == EMPTY) | (blocks == IGNORE), 256, blocks.astype(np.int16))
    semantic.sort(axis=1)
    run = np.ones(len(semantic), dtype=np.int8)
    best_run = np.where(semantic[:, 0] < 256, 1, 0).astype(np.int8)
    mode = semantic[:, 0].copy()
    for j in range(1, semantic.shape[1]):
        run = np.where(semantic[:, j] == semantic[:, j - 1], run + 1, 1).astype(np.int8)
        better = (run > best_run) & (semantic[:, j] < 256)
        best_run[better] = run[better]
        mode[better] = semantic[better, j]
    has_semantic = best_run > 0
    out[has_semantic] = mode[has_semantic]
    return out.reshape(X // factor, Y // factor, Z // factor)
