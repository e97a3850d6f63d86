"""Persistent semantic map in a fixed frame (``odom``) and a BEV costmap, ROS-free.

Each frame's 256x256x32 prediction (labels + confidence, grid frame) is fused into a rolling
window of voxels centred on the vehicle, expressed in the fixed frame through the grid's pose
at the image stamp (``T_odom_grid``).

Per map voxel (flat arrays over the window, ring-buffer addressed in x and y):

* ``logodds`` (float32): occupancy evidence. A voxel predicted occupied adds
  ``hit_logodds * conf``; a voxel predicted empty inside the camera frustum adds
  ``miss_logodds * conf`` (negative); clamped to ``[min_logodds, max_logodds]``. Occupied
  above ``occupied_logodds``; 0 = no evidence (never observed): "unknown".
* ``label`` / ``votes`` (uint8 / float16): the class, by a confidence-weighted majority vote
  (Boyer-Moore): the same class adds ``conf`` to the margin, another class removes it and
  takes over when the margin drops below zero. One class per voxel instead of a histogram
  keeps memory at a few bytes per voxel.
* ``stamp`` (float32, seconds since the first frame): time of the last update. Occupied
  evidence decays exponentially towards 0 with the time constant of the voxel's class
  (``movable_tau_s`` for car, person, bicyclist ..., ``static_tau_s`` otherwise), lazily:
  when the voxel is next updated or read, so a frame only touches the voxels it observes. A
  car that drives away inside the view is cleared by free-space evidence; one that leaves
  the view fades. Free-space evidence does not decay (a later hit overrides it).
* ``sat`` (uint8): the voxel's saturated state, one code per state a repeated identical
  observation cannot change: free at ``min_logodds``, or a non-decaying class at
  ``max_logodds``. A frame skips voxels whose observation equals it, so a static scene
  seen again costs little.

Memory and speed:

* The window is a fixed array of ``size`` voxels (default 512 x 512 x 32 at 0.2 m =
  102.4 x 102.4 x 6.4 m, 12 bytes per voxel = 96 MiB), whatever the driven distance or time:
  memory does not grow as the vehicle drives. When the vehicle moves, the window origin moves
  by whole voxels; in x and y only the slabs that leave the window are cleared (ring
  addressing, no copy); in z (climbing or descending a voxel) the layers are shifted. What
  leaves the window is forgotten.
* A frame is fused column by column: for every map column under the grid's footprint the
  nearest grid column (2D rotation by the pose's yaw) and a per-column height offset are
  computed (about 10^5 columns); three row-wise passes compare the frame's observation codes
  with ``sat`` and only the differing voxels are gathered and updated (a few 10^5 of the 2M).
  Pulling each map voxel from its nearest grid voxel (instead of pushing grid voxels to
  their nearest map voxel) leaves no holes and no double writes under rotation. Roll and
  pitch enter only through the per-column height offset (exact for a level pose; tilts above
  ``max_tilt_deg`` are refused). ``bench/bench_map.py`` measures the time per frame.
* The comparison and update run in one C pass over the footprint's columns
  (:mod:`monoocc_ros.map_kernel`, compiled on first use, bit-identical to the numpy path that is
  kept as the fallback: ``use_kernel = False`` or no compiler); about 3-4x less CPU per frame.
  Its scratch buffers for the decaying voxels are sized for a whole grid but only the pages
  written (a few thousand entries per frame) are ever resident.

Example:
    >>> from monoocc_ros.mapping import MapConfig, SemanticMap
    >>> m = SemanticMap(MapConfig())
    >>> m.integrate(labels, confidence, T_odom_grid, stamp_s, camera)   # doctest: +SKIP
    >>> costmap = m.costmap()                                           # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from monoocc_ros import map_kernel
from monoocc_ros.camera import CameraModel, check_rigid
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI, LabelMap

__all__ = [
    "COSTMAP_FREE",
    "COSTMAP_OBSTACLE",
    "COSTMAP_UNKNOWN",
    "MOVABLE_CLASSES",
    "MapConfig",
    "MapSnapshot",
    "SemanticMap",
    "frustum_mask",
]

MOVABLE_CLASSES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
)
"""Classes whose evidence fades with ``movable_tau_s`` (things that move away)."""

COSTMAP_UNKNOWN = -1
COSTMAP_FREE = 0
COSTMAP_OBSTACLE = 100
"""Cell values of :meth:`SemanticMap.costmap` (nav_msgs/OccupancyGrid convention)."""


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


FREE_CODE = 0xE0
"""Observation / saturation code of free space; ``FREE_CODE & CLASS_MASK == 0``."""
CLASS_MASK = 0x1F
"""Bits of a class id in the codes (20 SemanticKITTI classes fit)."""


@lru_cache(maxsize=4)
def _code_mask_cached(key: bytes, grid: VoxelGrid, occupied_in_frustum_only: bool) -> np.ndarray:
    inside = _frustum_cached(key, grid)
    outside = 0 if occupied_in_frustum_only else CLASS_MASK
    mask = np.where(inside, np.uint8(0xFF), np.uint8(outside)).astype(np.uint8)
    mask.setflags(write=False)
    return mask


def _code_mask(camera: CameraModel, grid: VoxelGrid, occupied_in_frustum_only: bool) -> np.ndarray:
    """(X*Y*Z,) uint8 AND-mask of observation codes: all bits in the frustum; outside it only
    the class bits (free space outside the view is no evidence), or none."""
    return _code_mask_cached(_camera_key(camera), grid, occupied_in_frustum_only)


def _ptr(a: np.ndarray | None) -> int | None:
    """Address of a C-contiguous array's data for ctypes (None stays NULL)."""
    return None if a is None else a.ctypes.data


def _camera_key(camera: CameraModel) -> bytes:
    return np.concatenate(
        [camera.K.ravel(), camera.T_cam_grid.ravel(), np.asarray(camera.image_hw, dtype=np.float64)]
    ).astype(np.float64).tobytes()


@lru_cache(maxsize=4)
def _frustum_cached(key: bytes, grid: VoxelGrid) -> np.ndarray:
    K, T, hw = _frustum_key_decode(key)
    camera = CameraModel(K=K, T_cam_grid=T, image_hw=hw)
    visible = camera.project(grid.centres())[2]
    visible.setflags(write=False)
    return visible


def _frustum_key_decode(key: bytes):
    values = np.frombuffer(key, dtype=np.float64)
    return values[:9].reshape(3, 3), values[9:25].reshape(4, 4), (int(values[25]), int(values[26]))


def frustum_mask(camera: CameraModel, grid: VoxelGrid = KITTI_GRID) -> np.ndarray:
    """(X*Y*Z,) bool, flat grid order: voxel centres inside the camera's field of view.

    Cached per calibration (a projection of the 2M voxel centres takes about 0.1 s; the
    calibration rarely changes).
    """
    return _frustum_cached(_camera_key(camera), grid)


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


class SemanticMap:
    """Rolling semantic voxel map; see the module docstring.

    Args:
        cfg: options.
        grid: geometry of the per-frame prediction grid (its frame is the one ``T_odom_grid``
            maps from).

    Attributes:
        logodds, label, votes, stamp: flat per-voxel state in ring order (see module docstring).
        lo: (3,) int64 world voxel index of the window's minimum corner (None before the first
            frame).
    """

    def __init__(self, cfg: MapConfig = MapConfig(), grid: VoxelGrid = KITTI_GRID):
        self.cfg = cfg
        self.grid = grid
        if abs(grid.voxel_size_m - cfg.voxel_size_m) > 1e-9:
            # nearest-voxel gathers assume one grid voxel per map voxel
            raise ValueError(
                f"map voxel size {cfg.voxel_size_m} m differs from the grid's {grid.voxel_size_m} m"
            )
        n = int(np.prod(cfg.size))
        self.logodds = np.zeros(n, dtype=np.float32)
        self.label = np.zeros(n, dtype=np.uint8)
        self.votes = np.zeros(n, dtype=np.float16)
        self.stamp = np.zeros(n, dtype=np.float32)
        self.sat = np.zeros(n, dtype=np.uint8)
        self.lo: np.ndarray | None = None
        self.epoch_s: float | None = None
        self.time_s = 0.0  # latest stamp, relative to epoch_s
        self.frames = 0
        self.T_odom_grid: np.ndarray | None = None
        self.use_kernel = True  # the C kernel of monoocc_ros.map_kernel where it builds; else numpy
        # the kernel's deferred decaying voxels (at most one per grid voxel): exponents, (src, dst)
        self._decay_buf: np.ndarray | None = None
        self._defer_buf: np.ndarray | None = None
        names = cfg.labels.names
        tau = np.full(256, cfg.static_tau_s, dtype=np.float64)
        for name in cfg.movable_classes:
            tau[names.index(name)] = cfg.movable_tau_s
        self._inv_tau = (1.0 / tau).astype(np.float32)  # per class; 0 where tau is inf
        self._decays = self._inv_tau > 0  # per class
        self._static_code = np.where(self._inv_tau == 0, np.arange(256), 0).astype(np.uint8)
        self._static_code[EMPTY] = 0
        self._weight_lut = (np.arange(256) / 255).astype(np.float32)  # confidence byte -> weight
        self._step_lut = np.full(256, cfg.hit_logodds, dtype=np.float32)  # train id -> evidence
        self._step_lut[EMPTY] = cfg.miss_logodds
        self._drivable = np.zeros(256, dtype=bool)
        for name in cfg.drivable_classes:
            self._drivable[names.index(name)] = True
        if cfg.labels.num_classes > CLASS_MASK + 1:
            raise ValueError(f"the map codes classes in 5 bits: at most {CLASS_MASK + 1} classes")
        # train id -> observation code inside the frustum (255 = no prediction -> 0)
        self._obs_lut = np.arange(256, dtype=np.uint8)
        self._obs_lut[EMPTY] = FREE_CODE
        self._obs_lut[cfg.labels.num_classes:] = 0

    # ------------------------------------------------------------------ geometry
    @property
    def nbytes(self) -> int:
        """Bytes of the map state (fixed by ``cfg.size``)."""
        return sum(arr.nbytes for arr, _ in self._state())

    def window_grid(self) -> VoxelGrid:
        """Geometry of the current window in the fixed frame."""
        if self.lo is None:
            raise ValueError("the map is empty: integrate a frame first")
        vs = self.cfg.voxel_size_m
        return VoxelGrid(self.cfg.size, vs, tuple(float(v) * vs for v in self.lo))

    def _window_lo_for(self, T: np.ndarray) -> np.ndarray:
        """Window min corner that centres x, y on the grid origin and holds the grid's layers."""
        vs = self.cfg.voxel_size_m
        X, Y, Z = self.cfg.size
        t = T[:3, 3]
        lo_z = np.floor((t[2] + self.grid.origin_m[2]) / vs + 0.5) - (Z - self.grid.size[2]) // 2
        return np.array([np.floor(t[0] / vs) - X // 2, np.floor(t[1] / vs) - Y // 2, lo_z],
                        dtype=np.int64)

    def _state(self):
        return ((self.logodds, 0), (self.label, 0), (self.votes, 0), (self.stamp, 0), (self.sat, 0))

    def _recentre(self, new_lo: np.ndarray) -> None:
        """Move the window by whole voxels.

        x, y: ring addressing, only the slabs that left the window are cleared (no copy).
        z: the layers are shifted in place (a copy of the state), which happens only when the
        vehicle climbs or descends by a voxel.
        """
        if self.lo is None:
            self.lo = new_lo
            return
        X, Y, Z = self.cfg.size
        shift = new_lo - self.lo
        if np.any(np.abs(shift) >= np.asarray(self.cfg.size)):
            for arr, value in self._state():
                arr[:] = value
            self.lo = new_lo
            return
        for axis in (0, 1):
            d = int(shift[axis])
            if d == 0:
                continue
            n = self.cfg.size[axis]
            # world indices lo..lo+d-1 (d > 0) or lo+n+d..lo+n-1 (d < 0) leave the window; they
            # share their ring positions with the indices that enter
            start = self.lo[axis] if d > 0 else self.lo[axis] + n + d
            rows = (start + np.arange(abs(d))) % n
            for arr, value in self._state():
                view = arr.reshape(self.cfg.size)
                if axis == 0:
                    view[rows] = value
                else:
                    view[:, rows] = value
        dz = int(shift[2])
        if dz:
            for arr, value in self._state():
                view = arr.reshape(X * Y, Z)
                if dz > 0:
                    view[:, : Z - dz] = view[:, dz:].copy()
                    view[:, Z - dz:] = value
                else:
                    view[:, -dz:] = view[:, : Z + dz].copy()
                    view[:, :-dz] = value
        self.lo = new_lo

    def _columns(self, T: np.ndarray, lib=None):
        """Map columns under the grid's footprint, each with its nearest grid column (with ``lib``,
        the map kernel, computed in C).

        Returns:
            ring_col: (C,) int64 ring index (x * Y + y) of map columns inside the window.
            src_col: (C,) int64 flat grid column (i * size_y + j).
            offset: (C,) int64 map layer of the grid's layer 0 in that column (level: constant).
        """
        vs = self.cfg.voxel_size_m
        X, Y, _ = self.cfg.size
        g = self.grid
        gx, gy, _ = g.size
        R, t = T[:3, :3], T[:3, 3]
        yaw = np.arctan2(R[1, 0], R[0, 0])
        c, s = np.cos(yaw), np.sin(yaw)
        ox, oy = g.origin_m[0], g.origin_m[1]
        ex, ey = g.extent_m[0], g.extent_m[1]
        corners = np.array([[ox, oy], [ox + ex, oy], [ox, oy + ey], [ox + ex, oy + ey]])
        world = corners @ np.array([[c, s], [-s, c]]) + t[:2]
        lo_w = np.maximum(np.floor(world.min(0) / vs).astype(np.int64), self.lo[:2])
        hi_w = np.minimum(np.floor(world.max(0) / vs).astype(np.int64) + 1, self.lo[:2] + [X, Y])
        if np.any(hi_w <= lo_w):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        if lib is not None:  # the same operations below, in C (map_kernel.map_columns)
            cap = int(np.prod(hi_w - lo_w))
            out = [np.empty(cap, dtype=np.int64) for _ in range(3)]
            n = lib.map_columns(
                int(lo_w[0]), int(hi_w[0]), int(lo_w[1]), int(hi_w[1]), float(vs), float(t[0]), float(t[1]),
                float(t[2]), float(c), float(s), float(ox), float(oy),
                float(R[2, 2] * (g.origin_m[2] + 0.5 * vs)), float(R[2, 0]), float(R[2, 1]),
                gx, gy, X, Y, int(self.lo[2]), *(_ptr(a) for a in out),
            )
            return tuple(a[:n] for a in out)
        wi = np.arange(lo_w[0], hi_w[0])
        wj = np.arange(lo_w[1], hi_w[1])
        cx = ((wi + 0.5) * vs - t[0])[:, None]
        cy = ((wj + 0.5) * vs - t[1])[None, :]
        # inverse yaw into the grid frame, then the grid column the map column centre lies in
        gi = np.floor((c * cx + s * cy - ox) / vs).astype(np.int64)
        gj = np.floor((-s * cx + c * cy - oy) / vs).astype(np.int64)
        ii, jj = np.nonzero((gi >= 0) & (gi < gx) & (gj >= 0) & (gj < gy))
        gi, gj = gi[ii, jj], gj[ii, jj]
        ring_col = (wi[ii] % X) * Y + (wj[jj] % Y)
        src_col = gi * gy + gj
        # height of the grid's lowest voxel centre in this column (tilt enters here only)
        xg = ox + (gi + 0.5) * vs
        yg = oy + (gj + 0.5) * vs
        z0 = R[2, 0] * xg + R[2, 1] * yg + R[2, 2] * (g.origin_m[2] + 0.5 * vs) + t[2]
        offset = np.floor(z0 / vs).astype(np.int64) - self.lo[2]
        return ring_col, src_col, offset

    # ------------------------------------------------------------------ fusion
    def integrate(
        self,
        labels: np.ndarray,
        confidence: np.ndarray | None,
        T_odom_grid: np.ndarray,
        stamp_s: float,
        camera: CameraModel,
    ) -> int:
        """Fuse one frame.

        Args:
            labels: (X, Y, Z) uint8 train ids of the grid (255 = no prediction).
            confidence: same shape uint8 (probability * 255), or None for confidence 1.
            T_odom_grid: (4, 4) grid frame -> fixed frame at the image stamp.
            stamp_s: image stamp in seconds (any epoch; must not go back in time).
            camera: the frame's camera, for the frustum of the free-space evidence.

        Returns:
            Number of map voxels updated.

        Raises:
            ValueError: wrong shapes, a non-rigid or too tilted pose, or a stamp older than
                the latest one.
        """
        cfg = self.cfg
        g = self.grid
        labels = np.asarray(labels)
        if labels.shape != g.size or labels.dtype != np.uint8:
            raise ValueError(f"labels must be uint8 of shape {g.size}, got {labels.dtype} {labels.shape}")
        if confidence is not None and np.shape(confidence) != g.size:
            raise ValueError(f"confidence must have shape {g.size}, got {np.shape(confidence)}")
        T = check_rigid(T_odom_grid, name="T_odom_grid")
        if np.degrees(np.arccos(np.clip(T[2, 2], -1.0, 1.0))) > cfg.max_tilt_deg:
            raise ValueError(
                f"T_odom_grid tilts the grid by more than max_tilt_deg={cfg.max_tilt_deg} degrees"
            )
        if not np.isfinite(stamp_s):
            raise ValueError(f"stamp must be finite, got {stamp_s}")
        if self.epoch_s is None:
            self.epoch_s = float(stamp_s)
        now = float(stamp_s) - self.epoch_s
        if now < self.time_s:
            raise ValueError(
                f"stamp {stamp_s} s is {self.time_s - now:.3f} s older than the map's latest frame"
            )
        self.time_s = now
        self.T_odom_grid = T
        self.frames += 1
        self._recentre(self._window_lo_for(T))
        lib = map_kernel.load() if self.use_kernel else None
        if confidence is not None and np.asarray(confidence).dtype != np.uint8:
            lib = None  # the kernel reads confidence bytes
        ring_col, src_col, offset = self._columns(T, lib)
        if len(ring_col) == 0:  # the grid lies outside the window (a window smaller than it)
            return 0
        if lib is not None:
            return self._fuse_kernel(lib, labels, confidence, camera, ring_col, src_col, offset, now)
        src, dst = self._candidates(labels, camera, ring_col, src_col, offset)
        if len(src) == 0:
            return 0
        return self._update(labels, confidence, src, dst, now)

    def _fuse_kernel(self, lib, labels, confidence, camera, ring_col, src_col, offset, now: float) -> int:
        """:meth:`_candidates` and :meth:`_update` in one C pass (bit-identical, see
        :mod:`monoocc_ros.map_kernel`); numpy only exponentiates the decay factors."""
        cfg = self.cfg
        mask = _code_mask(camera, self.grid, cfg.occupied_in_frustum_only)
        labels = np.ascontiguousarray(labels)
        conf = None if confidence is None else np.ascontiguousarray(confidence)
        if self._decay_buf is None:
            self._decay_buf = np.empty(self.grid.num_voxels, dtype=np.float32)
            self._defer_buf = np.empty((self.grid.num_voxels, 2), dtype=np.int64)
        buf, defer = self._decay_buf, self._defer_buf
        n_defer = np.zeros(1, dtype=np.int64)
        cols = [np.ascontiguousarray(a, dtype=np.int64) for a in (ring_col, src_col, offset)]
        ptr = _ptr

        def run(mode: int) -> int:
            return lib.map_fuse(
                mode, ptr(labels), ptr(conf), ptr(mask), ptr(self._obs_lut), *map(ptr, cols),
                len(cols[0]), self.grid.size[2], cfg.size[2],
                ptr(self.logodds), ptr(self.label), ptr(self.votes), ptr(self.stamp), ptr(self.sat),
                ptr(self._decays), ptr(self._inv_tau), ptr(self._static_code), ptr(self._weight_lut),
                ptr(self._step_lut), float(np.float32(cfg.min_logodds)), float(np.float32(cfg.max_logodds)),
                float(np.float32(cfg.max_votes)), float(np.float32(now)), ptr(buf), ptr(defer), ptr(n_defer),
            )

        updated = run(0)
        k = int(n_defer[0])
        if k:  # the voxels whose evidence decays first: numpy's exp, as the numpy path
            np.exp(buf[:k], out=buf[:k])
            updated += run(1)
        return int(updated)

    def _observation(self, labels: np.ndarray, camera: CameraModel) -> np.ndarray:
        """(X*Y, Z) uint8 observation code of the grid: 0 = no evidence (unknown, or empty
        outside the frustum), 1..N-1 = predicted class, FREE_CODE = empty inside the frustum."""
        mask = _code_mask(camera, self.grid, self.cfg.occupied_in_frustum_only)
        code = self._obs_lut[labels.reshape(-1)]
        np.bitwise_and(code, mask, out=code)
        return code.reshape(-1, self.grid.size[2])

    def _candidates(self, labels, camera, ring_col, src_col, offset):
        """Voxels a frame must update: those whose observation differs from the map's saturated
        state (``sat``). The dense work is three passes over the footprint's columns."""
        gz = self.grid.size[2]
        Z = self.cfg.size[2]
        obs2d = self._observation(labels, camera)
        sat2d = self.sat.reshape(-1, Z)
        values = np.unique(offset) if offset.min() != offset.max() else offset[:1]
        srcs, dsts = [], []
        for o in values.tolist():  # one value for a level pose
            rows = np.flatnonzero(offset == o) if len(values) > 1 else slice(None)
            k0, k1 = max(0, -o), min(gz, Z - o)
            if k1 <= k0:
                continue
            sc, rc = src_col[rows], ring_col[rows]
            go = obs2d[sc, k0:k1]
            cand = (go != 0) & (go != sat2d[rc, k0 + o:k1 + o])
            flat = np.flatnonzero(cand)
            width = k1 - k0
            if width & (width - 1) == 0:  # the usual 32 layers: shifts, not divisions
                d, k = flat >> (width.bit_length() - 1), flat & (width - 1)
            else:
                d, k = np.divmod(flat, width)
            srcs.append(sc[d] * gz + (k + k0))
            dsts.append(rc[d] * Z + (k + k0 + o))
        if not srcs:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(srcs), np.concatenate(dsts)

    def _update(self, labels, confidence, src, dst, now: float) -> int:
        """Apply a frame's evidence to the map voxels ``dst`` from grid voxels ``src``.

        One gather and one scatter per state array: the voxels' labels are read once and
        carry the vote, the clearing and the saturation code."""
        cfg = self.cfg
        lab = labels.reshape(-1)[src]
        w = (np.ones(len(src), dtype=np.float32) if confidence is None
             else self._weight_lut[np.asarray(confidence).reshape(-1)[src]])
        cur = self.label[dst]
        lo = self.logodds[dst]
        # lazy decay of occupied evidence since the voxel's last update (static classes: none)
        p = np.flatnonzero(self._decays[cur] & (lo > 0))
        if p.size:
            lo[p] *= np.exp((self.stamp[dst[p]] - np.float32(now)) * self._inv_tau[cur[p]])
        lo += self._step_lut[lab] * w
        np.clip(lo, cfg.min_logodds, cfg.max_logodds, out=lo)
        # class vote of the occupied observations (Boyer-Moore, confidence-weighted); a voxel
        # without a class has no margin
        o = np.flatnonzero(lab != EMPTY)
        od, ol, ow, oc = dst[o], lab[o], w[o], cur[o]
        v = np.where(oc == EMPTY, np.float32(0), self.votes[od].astype(np.float32))
        v += np.where(oc == ol, ow, -ow)
        flip = v < 0
        oc[flip] = ol[flip]
        cur[o] = oc
        self.votes[od] = np.minimum(np.abs(v), np.float32(cfg.max_votes))
        cur[lo <= 0] = EMPTY  # evidence turned to free: the class is gone
        # saturated states that a repeated identical observation cannot change are skipped by
        # _candidates: free at the clamp, or a class that never decays at the clamp
        sat = self._static_code[cur]
        sat[lo < cfg.max_logodds] = 0
        sat[lo <= cfg.min_logodds] = FREE_CODE
        self.logodds[dst] = lo
        self.label[dst] = cur
        self.sat[dst] = sat
        self.stamp[dst] = now
        return len(dst)

    def _decayed(self, ring: np.ndarray, now: float) -> np.ndarray:
        """(N,) float32 log-odds of ring voxels at time ``now``: positive (occupied) evidence
        decays with its class's time constant since the voxel's last update."""
        lo = self.logodds[ring]
        pos = np.flatnonzero(lo > 0)
        if len(pos):
            r = ring[pos]
            rate = (np.float32(now) - self.stamp[r]) * self._inv_tau[self.label[r]]
            lo[pos] *= np.exp(-rate)
        return lo

    # ------------------------------------------------------------------ read-out
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
