"""The semantic map's state, its rolling window and the fusion of one frame (see :mod:`monoocc_ros.mapping`)."""

from __future__ import annotations

import numpy as np

from monoocc_ros.camera import CameraModel, check_rigid
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.labels import EMPTY
from monoocc_ros.mapping import kernel as map_kernel
from monoocc_ros.mapping.config import MapConfig
from monoocc_ros.mapping.frustum import CLASS_MASK, FREE_CODE, code_mask
from monoocc_ros.mapping.readout import MapReadout

__all__ = ["SemanticMap"]


def _ptr(a: np.ndarray | None) -> int | None:
    """Address of a C-contiguous array's data for ctypes (None stays NULL)."""
    return None if a is None else a.ctypes.data


class SemanticMap(MapReadout):
    """Rolling semantic voxel map; see :mod:`monoocc_ros.mapping`.

    Args:
        cfg: options.
        grid: geometry of the per-frame prediction grid (its frame is the one ``T_odom_grid``
            maps from).

    Attributes:
        logodds, label, votes, stamp: flat per-voxel state in ring order (see :mod:`monoocc_ros.mapping`).
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
        self.use_kernel = True  # the C kernel of monoocc_ros.mapping.kernel where it builds; else numpy
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
        :mod:`monoocc_ros.mapping.kernel`); numpy only exponentiates the decay factors."""
        cfg = self.cfg
        mask = code_mask(camera, self.grid, cfg.occupied_in_frustum_only)
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
        mask = code_mask(camera, self.grid, self.cfg.occupied_in_frustum_only)
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
