"""Voxel ground truth of a synthetic street: semantic labels, visibility, scan occupancy.

For one frame the 256x256x32 grid lives in that frame's velodyne frame (see
:mod:`monoocc_ros.grid`). The four SemanticKITTI voxel files are produced as follows:

* ``.label`` (uint16 raw ids): the street's solids rasterised into the grid, like the
  accumulated labels of SemanticKITTI, which look solid rather than like one scan. Ground
  bands are slabs from their surface down to 0.2 m below the road, objects are filled, and
  solids thinner than a voxel are widened to half a voxel diagonal so that poles and sign
  plates always occupy at least one voxel per layer. Voxels containing an observed surface
  point that the rasterisation left empty take that point's class, so every scanned voxel
  carries a label.
* ``.bin``: the current scan voxelised (:meth:`VoxelGrid.voxelize`).
* ``.invalid``: voxels observed from none of the sensor poses of this and later frames inside
  the grid (every ``visibility_stride`` frames; the drive continues past the last written frame
  so the last frames are treated like the others). A voxel is observed when a surface point
  seen from a pose falls into it, or when it lies in free space seen from a pose. Free space
  is decided on the half-resolution grid, which is 8x cheaper: a 0.4 m cell is free when its
  centre lies more than 0.2 m in front of the nearest surface that a spherical range image
  around the pose sees in that direction and the eight neighbouring directions (the minimum
  keeps grazing views of the ground conservative); its eight voxels are then free too. This
  approximates the voxelizer's ray traversal of the accumulated scans. Unlike a real LiDAR the
  range image is not limited to the sensor's vertical field of view, which matches the real
  files, whose top layers are never invalid.
* ``.occluded``: voxels not seen in free space from the current pose (so scanned voxels and
  everything behind surfaces are occluded; a superset of ``.invalid`` and ``.bin``, as in the
  real files).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from monoocc_ros.data.scene_layout import PrimitiveKind, Street
from monoocc_ros.data.scene_raycast import SceneMesh, rotate
from monoocc_ros.grid import KITTI_GRID, VoxelGrid

__all__ = ["VoxelTruth", "rasterise_labels", "voxel_truth"]

THIN_HALF_M = KITTI_GRID.voxel_size_m * np.sqrt(0.5) + 1e-3
GROUND_SLAB_BELOW_ROAD_M = 0.2


VISIBILITY_GRID = KITTI_GRID.half()


@cache
def _visibility_centres() -> np.ndarray:
    """(X*Y*Z / 8, 3) float32 centres of the half-resolution grid in flat order."""
    return VISIBILITY_GRID.centres().astype(np.float32)


def _upsample(coarse: np.ndarray) -> np.ndarray:
    """Flat half-resolution bools -> flat full-resolution bools (each cell to its 8 children)."""
    c = coarse.reshape(VISIBILITY_GRID.size)
    return c.repeat(2, 0).repeat(2, 1).repeat(2, 2).reshape(-1)


def _check_planar(T_world_grid: np.ndarray) -> None:
    if not np.allclose(T_world_grid[2, :3], [0.0, 0.0, 1.0], atol=1e-9):
        raise ValueError("the grid frame must be level (rotation about z only)")


def rasterise_labels(street: Street, T_world_grid: np.ndarray, grid: VoxelGrid = KITTI_GRID) -> np.ndarray:
    """Rasterise the street's ground and solids into the grid of one frame.

    Args:
        street: the layout.
        T_world_grid: (4, 4) grid (velodyne) frame -> world; level, yaw only.
        grid: the grid's geometry (another one than the KITTI grid gives the world's voxels over
            any region, e.g. a whole street for scoring a map).

    Returns:
        (X, Y, Z) uint16 raw SemanticKITTI ids, 0 = empty.
    """
    _check_planar(T_world_grid)
    g = grid
    X, Y, Z = g.size
    vs = g.voxel_size_m
    t = T_world_grid[:3, 3]
    labels = np.zeros(g.size, dtype=np.uint16)

    # ground: one class and surface height per column, filled down to below the road
    ij = np.stack(np.meshgrid(np.arange(X), np.arange(Y), indexing="ij"), -1).reshape(-1, 2)
    xy_grid = (ij + 0.5) * vs + np.asarray(g.origin_m[:2])
    xyz_grid = np.c_[xy_grid, np.zeros(len(xy_grid))]
    s, d = street.path.path_coords(rotate(T_world_grid[:3, :3], xyz_grid)[:, :2] + t[:2])
    raw = street.ground_class(s, d).reshape(X, Y)
    top = (street.ground_height(d) - t[2]).reshape(X, Y, 1)
    z_low = g.origin_m[2] + vs * np.arange(Z)
    slab = (z_low < top) & (z_low + vs > -GROUND_SLAB_BELOW_ROAD_M - t[2])
    labels[slab] = np.broadcast_to(raw[..., None], slab.shape)[slab]

    # solids, in street order (things last, so they win shared voxels)
    p = street.primitives
    grid_yaw = np.arctan2(T_world_grid[1, 0], T_world_grid[0, 0])
    centre_g = (p.centre - t) @ T_world_grid[:3, :3]
    reach_xy = np.hypot(p.half_extent[:, 0], p.half_extent[:, 1]) + THIN_HALF_M
    reach = np.c_[reach_xy, reach_xy, p.half_extent[:, 2] + THIN_HALF_M]
    lo = np.floor((centre_g - reach - g.origin_m) / vs).astype(np.int64)
    hi = np.floor((centre_g + reach - g.origin_m) / vs).astype(np.int64) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(g.size))
    half = np.maximum(p.half_extent, THIN_HALF_M)
    for n in np.flatnonzero(np.all(hi > lo, axis=1)):
        axes = [np.arange(lo[n, a], hi[n, a]) for a in range(3)]
        block = np.stack(np.meshgrid(*axes, indexing="ij"), -1)  # (x, y, z, 3) indices
        rel = g.index_to_point(block) - centre_g[n]
        a = p.yaw[n] - grid_yaw
        c, sn = np.cos(a), np.sin(a)
        lx = (c * rel[..., 0] + sn * rel[..., 1]) / half[n, 0]
        ly = (-sn * rel[..., 0] + c * rel[..., 1]) / half[n, 1]
        lz = rel[..., 2] / half[n, 2]
        if p.kind[n] == PrimitiveKind.BOX:
            inside = (np.abs(lx) <= 1) & (np.abs(ly) <= 1) & (np.abs(lz) <= 1)
        elif p.kind[n] == PrimitiveKind.CYLINDER:
            inside = (lx**2 + ly**2 <= 1) & (np.abs(lz) <= 1)
        else:
            inside = lx**2 + ly**2 + lz**2 <= 1
        sub = labels[lo[n, 0]:hi[n, 0], lo[n, 1]:hi[n, 1], lo[n, 2]:hi[n, 2]]
        sub[inside] = p.raw_class[n]
    return labels


@dataclass(frozen=True)
class VoxelTruth:
    """The voxel files of one frame, each (X, Y, Z).

    Attributes:
        labels: uint16 raw ids.
        occupied: bool, the current scan voxelised (``.bin``).
        invalid: bool, never observed (``.invalid``).
        occluded: bool, not seen in free space from the current pose (``.occluded``).
    """

    labels: np.ndarray
    occupied: np.ndarray
    invalid: np.ndarray
    occluded: np.ndarray


class _RangeImage:
    """A spherical range image layout around one sensor position.

    Azimuth steps are uniform. Elevation rows are uniform in a compressed elevation, fine
    within +-12 deg of the horizon (where the far voxels are) and four times coarser beyond
    (only voxels within a few metres of the sensor are seen that steeply).
    """

    FINE_DEG = 12.0
    COMPRESSION = 4.0
    LIMIT_DEG = 80.0

    def __init__(self, resolution_deg: float):
        self.step = np.deg2rad(resolution_deg)
        self.m_max = self._compress(np.deg2rad(self.LIMIT_DEG))
        self.rows = int(np.ceil(2 * self.m_max / self.step)) + 1
        self.cols = int(round(2 * np.pi / self.step))
        m = -self.m_max + self.step * np.arange(self.rows)
        el = self._expand(m)[:, None]
        az = (-np.pi + 2 * np.pi * np.arange(self.cols) / self.cols)[None, :]
        self.directions = np.stack(
            np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1
        ).reshape(-1, 3)

    @classmethod
    def _compress(cls, el):
        fine = np.deg2rad(cls.FINE_DEG)
        return np.where(np.abs(el) <= fine, el,
                        np.sign(el) * (fine + (np.abs(el) - fine) / cls.COMPRESSION))

    @classmethod
    def _expand(cls, m):
        fine = np.deg2rad(cls.FINE_DEG)
        return np.where(np.abs(m) <= fine, m,
                        np.sign(m) * (fine + (np.abs(m) - fine) * cls.COMPRESSION))

    def nearest_surface(self, ranges: np.ndarray) -> np.ndarray:
        """(rows * cols,) ranges -> the smallest range among each pixel and its 8 neighbours.

        A voxel centre is looked up at its nearest pixel; the minimum over the neighbours keeps
        the test conservative where the range changes fast between rays (grazing ground).
        """
        r = ranges.reshape(self.rows, self.cols)
        r = np.minimum(r, np.minimum(np.roll(r, 1, 1), np.roll(r, -1, 1)))
        out = r.copy()
        np.minimum(out[1:], r[:-1], out=out[1:])
        np.minimum(out[:-1], r[1:], out=out[:-1])
        return out.reshape(-1)

    def pixel_of(self, rel: np.ndarray) -> np.ndarray:
        """(V, 3) float32 offsets from the sensor -> (V,) int64 flat pixel index."""
        rho = np.hypot(rel[:, 0], rel[:, 1])
        m = self._compress(np.arctan2(rel[:, 2], rho))
        row = np.clip(np.rint((m + self.m_max) / self.step), 0, self.rows - 1).astype(np.int64)
        col = np.rint((np.arctan2(rel[:, 1], rel[:, 0]) + np.pi) * (self.cols / (2 * np.pi)))
        return row * self.cols + col.astype(np.int64) % self.cols


def voxel_truth(
    mesh: SceneMesh,
    T_world_grid: np.ndarray,
    scan_xyz: np.ndarray,
    scan_raw: np.ndarray,
    view_origins: np.ndarray,
    resolution_deg: float,
) -> VoxelTruth:
    """Compute the four voxel grids of one frame.

    Args:
        mesh: the street mesh (its ``street`` is rasterised).
        T_world_grid: (4, 4) grid frame (this frame's velodyne) -> world.
        scan_xyz: (P, 3) this frame's scan in the grid frame.
        scan_raw: (P,) raw class of each scan point.
        view_origins: (M, 3) sensor positions in the grid frame, the current pose first.
        resolution_deg: angular step of the visibility range images.

    Returns:
        The voxel truth of the frame.
    """
    g = KITTI_GRID
    # a coarse cell counts as free when its centre is half a coarse voxel in front of the
    # surface, which leaves its eight children in free space too
    tol_m = 0.5 * VISIBILITY_GRID.voxel_size_m
    labels = rasterise_labels(mesh.street, T_world_grid).reshape(-1)
    occupied = g.voxelize(scan_xyz).reshape(-1)
    centres = _visibility_centres()

    image = _RangeImage(resolution_deg)
    dirs_grid = image.directions.astype(np.float32)
    dirs_world = rotate(T_world_grid[:3, :3], image.directions)
    lo = np.asarray(g.origin_m, dtype=np.float32)
    size = np.asarray(g.size)
    free_any = np.zeros(VISIBILITY_GRID.num_voxels, dtype=bool)
    seen_surface = occupied.copy()
    free_first = None
    surface_flat, surface_raw = [], []
    for origin in np.asarray(view_origins, dtype=np.float64):
        ranges, raw = mesh.cast_first(T_world_grid[:3, :3] @ origin + T_world_grid[:3, 3],
                                      dirs_world)
        todo = np.flatnonzero(~free_any) if free_first is not None else slice(None)
        rel = centres[todo] - origin.astype(np.float32)
        dist = np.sqrt(np.einsum("ij,ij->i", rel, rel))
        free = dist < image.nearest_surface(ranges)[image.pixel_of(rel)] - tol_m
        if free_first is None:
            free_any = free
            free_first = free.copy()
        else:
            free_any[todo[free]] = True
        # surface points seen from this pose, in the grid frame
        hit = np.flatnonzero(np.isfinite(ranges))
        pts = origin.astype(np.float32) + ranges[hit, None] * dirs_grid[hit]
        ijk = np.floor((pts - lo) / np.float32(g.voxel_size_m)).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < size), axis=1)
        flat = g.flat_index(ijk[inside])
        seen_surface[flat] = True
        surface_flat.append(flat)
        surface_raw.append(raw[hit[inside]])

    # voxels with observed points keep the points' class where the solids left them empty
    ijk, inside = g.point_to_index(scan_xyz)
    surface_flat.append(g.flat_index(ijk[inside]))
    surface_raw.append(np.asarray(scan_raw)[inside])
    flat = np.concatenate(surface_flat)
    raw = np.concatenate(surface_raw)
    empty = labels[flat] == 0
    labels[flat[empty]] = raw[empty]

    invalid = ~(_upsample(free_any) | seen_surface)
    occluded = ~_upsample(free_first) | occupied
    return VoxelTruth(
        labels=labels.reshape(g.size),
        occupied=occupied.reshape(g.size),
        invalid=invalid.reshape(g.size),
        occluded=occluded.reshape(g.size),
    )
