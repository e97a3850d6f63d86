"""Reading the semantic map: the whole window as a plain grid, the map sampled in a prediction grid,
and the BEV costmap.

:class:`MapReadout` holds these methods of :class:`~monoocc_ros.mapping.SemanticMap` (mixed into
it): they only read the state that the fusion in :mod:`monoocc_ros.mapping.semantic_map` writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monoocc_ros.camera import check_rigid
from monoocc_ros.grid import VoxelGrid
from monoocc_ros.labels import EMPTY, IGNORE

__all__ = ["COSTMAP_FREE", "COSTMAP_OBSTACLE", "COSTMAP_UNKNOWN", "MapReadout", "MapSnapshot"]

COSTMAP_UNKNOWN = -1
COSTMAP_FREE = 0
COSTMAP_OBSTACLE = 100
"""Cell values of :meth:`SemanticMap.costmap` (nav_msgs/OccupancyGrid convention)."""


@dataclass(frozen=True)
class MapSnapshot:
    """The map window unrolled into a plain grid at one time.

    Attributes:
        grid: geometry in the fixed frame (origin = window minimum corner).
        labels: (X, Y, Z) uint8 train ids; EMPTY where observed free, IGNORE (255) where
            unknown (never observed, or decayed back to no evidence).
        confidence: (X, Y, Z) uint8, occupancy probability of the voxel * 255.
    """

    grid: VoxelGrid
    labels: np.ndarray
    confidence: np.ndarray


class MapReadout:
    """The read-out methods of :class:`~monoocc_ros.mapping.SemanticMap` (see the module docstring)."""

    def snapshot(self) -> MapSnapshot:
        """The whole window at the latest stamp as a plain grid (for messages and scoring).

        Labels: the class where the decayed log-odds exceed ``occupied_logodds``, EMPTY where
        the map holds any other evidence, IGNORE (255) where it holds none (never observed,
        or forgotten). Confidence: probability of that label * 255 (0 where unknown).
        """
        X, Y, Z = self.cfg.size
        lo = self._decayed_all()
        shift = (-int(self.lo[0] % X), -int(self.lo[1] % Y))

        def unroll(a):
            return np.roll(a.reshape(X, Y, Z), shift, axis=(0, 1))

        lo = unroll(lo)
        occupied = lo > self.cfg.occupied_logodds
        labels = np.where(occupied, unroll(self.label), EMPTY).astype(np.uint8)
        unknown = lo == 0
        labels[unknown] = IGNORE
        p = 1.0 / (1.0 + np.exp(-lo))
        conf = np.round(np.where(occupied, p, 1.0 - p) * 255).astype(np.uint8)
        conf[unknown] = 0
        return MapSnapshot(self.window_grid(), labels, conf)

    def _decayed_all(self) -> np.ndarray:
        lo = self.logodds.copy()
        pos = np.flatnonzero(lo > 0)
        if len(pos):
            rate = (np.float32(self.time_s) - self.stamp[pos]) * self._inv_tau[self.label[pos]]
            lo[pos] *= np.exp(-rate)
        return lo

    def labels_in_grid(self, T_odom_grid: np.ndarray) -> np.ndarray:
        """The map sampled at the voxel centres of a grid at pose ``T_odom_grid`` (nearest).

        Returns:
            (X, Y, Z) uint8 train ids in the grid's layout; EMPTY where the map holds free
            space or nothing (never observed, outside the window).
        """
        T = check_rigid(T_odom_grid, name="T_odom_grid")
        out = np.zeros(self.grid.num_voxels, dtype=np.uint8)
        if self.lo is None:
            return out.reshape(self.grid.size)
        vs = self.cfg.voxel_size_m
        X, Y, Z = self.cfg.size
        world = self.grid.centres() @ T[:3, :3].T + T[:3, 3]
        w = np.floor(world / vs).astype(np.int64)
        rel = w - self.lo
        inside = np.all((rel >= 0) & (rel < np.asarray(self.cfg.size)), axis=1)
        ring = ((w[inside, 0] % X) * Y + (w[inside, 1] % Y)) * Z + rel[inside, 2]
        lo = self._decayed(ring, self.time_s)
        out[inside] = np.where(lo > self.cfg.occupied_logodds, self.label[ring], EMPTY)
        return out.reshape(self.grid.size)

    def costmap(self, snapshot: MapSnapshot | None = None) -> tuple[np.ndarray, VoxelGrid]:
        """BEV costmap of the window at the latest stamp.

        A cell is an obstacle (100) when an occupied voxel of a non-drivable class lies in
        ``obstacle_band_m`` (heights relative to the latest grid pose), free (0) when any of its
        voxels holds evidence otherwise, unknown (-1) when none does.

        Returns:
            cells: (X, Y) int8, x-major (transpose for nav_msgs/OccupancyGrid, whose rows are y).
            grid: the window geometry (origin = window min corner in the fixed frame).
        """
        snap = snapshot if snapshot is not None else self.snapshot()
        vs = self.cfg.voxel_size_m
        z0 = self.T_odom_grid[2, 3]
        zc = snap.grid.origin_m[2] + (np.arange(self.cfg.size[2]) + 0.5) * vs - z0
        band = (zc >= self.cfg.obstacle_band_m[0]) & (zc <= self.cfg.obstacle_band_m[1])
        lab = snap.labels[:, :, band]
        occupied = (lab != EMPTY) & (lab != IGNORE)
        obstacle = np.any(occupied & ~self._drivable[lab], axis=2)
        observed = np.any(snap.labels != IGNORE, axis=2)
        cells = np.full(self.cfg.size[:2], COSTMAP_UNKNOWN, dtype=np.int8)
        cells[observed] = COSTMAP_FREE
        cells[obstacle] = COSTMAP_OBSTACLE
        return cells, snap.grid
