"""Ray casting of a synthetic street: triangle mesh, camera images and LiDAR scans.

The street's ground bands and solids become one triangle mesh in Open3D's CPU
``RaycastingScene`` (Embree: deterministic, headless, no GPU stack). Every triangle carries the
raw SemanticKITTI class and instance of what it belongs to, so one ray cast yields geometry and
semantics together. The camera image is shaded per pixel from the hit: a per-class base colour,
a cheap procedural texture per class (asphalt grain, paving, grass, foliage, bark, windows,
fence slats, sign rims), Lambertian sun light on the hit normal and distance haze, with a sky
gradient where nothing is hit.

Why one file of about 500 lines: the mesh, the camera shading and the LiDAR scan share one
contract (a ray hit's triangle -> class, instance and normal); splitting them would spread that
contract over three modules.

Example:
    >>> mesh = SceneMesh(street)                                     # doctest: +SKIP
    >>> image = render_image(mesh, K, T_world_cam, (370, 1226), rng)  # doctest: +SKIP
    >>> image.shape, image.dtype                                     # doctest: +SKIP
    ((370, 1226, 3), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from monoocc_ros.data.scene_layout import PrimitiveKind, RawClass, Street

__all__ = [
    "LIDAR_ELEVATIONS_DEG",
    "RayHits",
    "SceneMesh",
    "camera_directions",
    "lidar_directions",
    "render_image",
    "rotate",
    "scan_lidar",
]

GROUND_STEP_M = 2.0
CYLINDER_SIDES = 12
SPHERE_RINGS, SPHERE_SEGMENTS = 6, 12

LIDAR_ELEVATIONS_DEG = np.linspace(2.0, -24.8, 64)
"""HDL-64E-like beam elevations, top to bottom (evenly spread over the sensor's 26.8 deg)."""

SUN_DIRECTION = np.array([0.45, 0.30, 0.84]) / np.linalg.norm([0.45, 0.30, 0.84])
AMBIENT, DIFFUSE = 0.45, 0.65
HAZE_RGB = np.array([0.78, 0.82, 0.88])
HAZE_DISTANCE_M = 220.0
SKY_HORIZON_RGB = np.array([0.80, 0.85, 0.92])
SKY_ZENITH_RGB = np.array([0.38, 0.55, 0.82])
SENSOR_NOISE = 0.01

GROUND_RGB = {
    RawClass.ROAD: (0.27, 0.27, 0.29),
    RawClass.LANE_MARKING: (0.90, 0.90, 0.86),
    RawClass.PARKING: (0.47, 0.38, 0.40),
    RawClass.SIDEWALK: (0.62, 0.63, 0.65),
    RawClass.TERRAIN: (0.50, 0.56, 0.26),
}
GLASS_RGB = np.array([0.13, 0.16, 0.24])
SIGN_RIM_RGB = np.array([0.95, 0.95, 0.95])

REMISSION = {
    RawClass.ROAD: 0.22, RawClass.LANE_MARKING: 0.65, RawClass.PARKING: 0.25,
    RawClass.SIDEWALK: 0.30, RawClass.TERRAIN: 0.38, RawClass.BUILDING: 0.20,
    RawClass.FENCE: 0.28, RawClass.VEGETATION: 0.42, RawClass.TRUNK: 0.30, RawClass.POLE: 0.35,
    RawClass.TRAFFIC_SIGN: 0.85, RawClass.CAR: 0.12, RawClass.TRUCK: 0.18,
    RawClass.OTHER_VEHICLE: 0.15, RawClass.PERSON: 0.25, RawClass.BICYCLIST: 0.25,
    RawClass.BICYCLE: 0.20,
}


def rotate(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``v @ R.T`` for (N, 3) vectors and a (3, 3) matrix.

    Written out per column: a BLAS matmul with such a thin operand is no faster, and its
    thread pool stalls badly when the CPU cores are shared.
    """
    R = np.asarray(R, dtype=v.dtype)
    return v[:, 0:1] * R[:, 0] + v[:, 1:2] * R[:, 1] + v[:, 2:3] * R[:, 2]


def _unit_box() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return v, np.array(tris, dtype=np.int64)


def _unit_cylinder(n: int = CYLINDER_SIDES) -> tuple[np.ndarray, np.ndarray]:
    ang = 2 * np.pi * np.arange(n) / n
    ring = np.stack([np.cos(ang), np.sin(ang)], 1)
    v = np.concatenate([np.c_[ring, -np.ones(n)], np.c_[ring, np.ones(n)], [[0, 0, -1], [0, 0, 1]]])
    tris = []
    for k in range(n):
        k1 = (k + 1) % n
        tris += [(k, k1, n + k1), (k, n + k1, n + k), (2 * n, k1, k), (2 * n + 1, n + k, n + k1)]
    return v, np.array(tris, dtype=np.int64)


def _unit_sphere(rings: int = SPHERE_RINGS, segments: int = SPHERE_SEGMENTS):
    phi = np.pi * np.arange(1, rings) / rings
    ang = 2 * np.pi * np.arange(segments) / segments
    body = np.stack(
        [np.outer(np.sin(phi), np.cos(ang)), np.outer(np.sin(phi), np.sin(ang)),
         np.repeat(np.cos(phi)[:, None], segments, 1)], -1
    ).reshape(-1, 3)
    top, bottom = len(body), len(body) + 1
    v = np.concatenate([body, [[0, 0, 1], [0, 0, -1]]])
    tris = []
    for j in range(segments):
        j1 = (j + 1) % segments
        tris.append((top, j, j1))
        last = (rings - 2) * segments
        tris.append((bottom, last + j1, last + j))
        for i in range(rings - 2):
            a, b = i * segments + j, i * segments + j1
            tris += [(a, a + segments, b + segments), (a, b + segments, b)]
    return v, np.array(tris, dtype=np.int64)


UNIT_MESHES = {
    PrimitiveKind.BOX: _unit_box(),
    PrimitiveKind.CYLINDER: _unit_cylinder(),
    PrimitiveKind.ELLIPSOID: _unit_sphere(),
}


@dataclass(frozen=True)
class RayHits:
    """The rays of a cast that hit something (M of N).

    Attributes:
        index: (M,) int64 indices of the rays that hit, ascending.
        t: (M,) float64 ray parameter of the first hit (the distance for unit directions).
        point: (M, 3) float64 world hit points.
        normal: (M, 3) float32 unit surface normals facing the ray's origin.
        raw_class: (M,) uint16 raw SemanticKITTI id (lane markings resolved on the road).
        instance: (M,) uint16 instance id.
        primitive: (M,) int64 index into ``street.primitives``, -1 for the ground.
    """

    index: np.ndarray
    t: np.ndarray
    point: np.ndarray
    normal: np.ndarray
    raw_class: np.ndarray
    instance: np.ndarray
    primitive: np.ndarray


class SceneMesh:
    """The street as one ray-castable triangle mesh with per-triangle semantics.

    Args:
        street: the layout to triangulate.
    """

    def __init__(self, street: Street):
        self.street = street
        parts = [self._ground(street), self._solids(street)]
        vertices, offset, triangles, prim, raw, inst = [], 0, [], [], [], []
        for v, f, p, r, i in parts:
            vertices.append(v)
            triangles.append(f + offset)
            offset += len(v)
            prim.append(p)
            raw.append(r)
            inst.append(i)
        self.triangle_primitive = np.concatenate(prim).astype(np.int64)
        self.triangle_class = np.concatenate(raw).astype(np.uint16)
        self.triangle_instance = np.concatenate(inst).astype(np.uint16)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(np.concatenate(vertices).astype(np.float32)),
            o3d.core.Tensor(np.concatenate(triangles).astype(np.uint32)),
        )

    @property
    def num_triangles(self) -> int:
        return len(self.triangle_class)

    @staticmethod
    def _ground(street: Street):
        """Top faces of every ground band plus the vertical curb faces between bands."""
        s0, s1 = street.s_range_m
        s = np.arange(s0, s1 + GROUND_STEP_M, GROUND_STEP_M)
        n = len(s)
        verts, tris, raw = [], [], []
        count = 0

        def strip(d_a: float, z_a: float, d_b: float, z_b: float, cls: int) -> None:
            nonlocal count
            a = np.c_[street.path.point(s, np.full(n, d_a)), np.full(n, z_a)]
            b = np.c_[street.path.point(s, np.full(n, d_b)), np.full(n, z_b)]
            verts.append(np.concatenate([a, b]))
            k = np.arange(n - 1)
            tris.append(np.concatenate([np.stack([k, k + 1, n + k + 1], 1),
                                        np.stack([k, n + k + 1, n + k], 1)]) + count)
            raw.append(np.full(2 * (n - 1), cls))
            count += 2 * n

        for side in (1, -1):
            bands = sorted((b for b in street.bands if b.side == side), key=lambda b: b.inner_m)
            for prev, band in zip([None, *bands[:-1]], bands):
                strip(side * band.inner_m, band.height_m, side * band.outer_m, band.height_m,
                      band.raw_class)
                if prev is not None and prev.height_m != band.height_m:
                    upper = band if band.height_m > prev.height_m else prev
                    strip(side * band.inner_m, prev.height_m, side * band.inner_m, band.height_m,
                          upper.raw_class)
        raw_all = np.concatenate(raw)
        zeros = np.zeros(len(raw_all), dtype=np.int64)
        return np.concatenate(verts), np.concatenate(tris), zeros - 1, raw_all, zeros

    @staticmethod
    def _solids(street: Street):
        p = street.primitives
        verts, tris, prim = [], [], []
        count = 0
        for kind, (unit_v, unit_f) in UNIT_MESHES.items():
            idx = np.flatnonzero(p.kind == kind)
            if not len(idx):
                continue
            # (N, V, 3) scaled template, rotated by yaw about z, moved to the centre
            local = unit_v[None] * p.half_extent[idx, None, :]
            c, s = np.cos(p.yaw[idx])[:, None], np.sin(p.yaw[idx])[:, None]
            world = np.stack([c * local[..., 0] - s * local[..., 1],
                              s * local[..., 0] + c * local[..., 1], local[..., 2]], -1)
            world += p.centre[idx, None, :]
            verts.append(world.reshape(-1, 3))
            offsets = count + len(unit_v) * np.arange(len(idx))
            tris.append((unit_f[None] + offsets[:, None, None]).reshape(-1, 3))
            prim.append(np.repeat(idx, len(unit_f)))
            count += len(idx) * len(unit_v)
        prim_all = np.concatenate(prim)
        return (np.concatenate(verts), np.concatenate(tris), prim_all,
                p.raw_class[prim_all], p.instance[prim_all])

    def _cast(self, origins: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        rays = np.empty((len(directions), 6), dtype=np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = directions
        out = self._scene.cast_rays(o3d.core.Tensor(rays))
        return {k: v.numpy() for k, v in out.items()}

    def cast_first(
        self, origin: np.ndarray, directions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and classes only, for many rays from one origin.

        Args:
            origin: (3,) world ray origin.
            directions: (N, 3) ray directions.

        Returns:
            t: (N,) float32 ray parameter of the first hit, inf if none.
            raw_class: (N,) uint16 raw class of the hit triangle (ground bands without lane
                markings), 0 if none.
        """
        out = self._cast(origin, directions)
        t = out["t_hit"]
        tri = out["primitive_ids"].astype(np.int64)
        raw = np.zeros(len(t), dtype=np.uint16)
        hit = np.isfinite(t)
        raw[hit] = self.triangle_class[tri[hit]]
        return t, raw

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """Cast rays in world coordinates.

        Args:
            origins: (N, 3) or (3,) ray origins.
            directions: (N, 3) ray directions; ``t`` is measured in their length.
        """
        out = self._cast(origins, directions)
        index = np.flatnonzero(np.isfinite(out["t_hit"]))
        t = out["t_hit"][index].astype(np.float64)
        tri = out["primitive_ids"][index].astype(np.int64)
        d = np.asarray(directions, dtype=np.float64)[index]
        o = np.asarray(origins, dtype=np.float64)
        point = (o if o.ndim == 1 else o[index]) + t[:, None] * d
        normal = out["primitive_normals"][index]
        prim = self.triangle_primitive[tri]
        raw = self.triangle_class[tri]
        inst = self.triangle_instance[tri]

        solids = self.street.primitives
        ell = np.flatnonzero(prim >= 0)
        ell = ell[solids.kind[prim[ell]] == PrimitiveKind.ELLIPSOID]
        if len(ell):
            # smooth normals of the faceted ellipsoids: gradient of sum((local / half)^2)
            local = solids.to_local(prim[ell], point[ell]) / solids.half_extent[prim[ell]] ** 2
            yaw = solids.yaw[prim[ell]]
            c, s = np.cos(yaw), np.sin(yaw)
            grad = np.stack([c * local[:, 0] - s * local[:, 1],
                             s * local[:, 0] + c * local[:, 1], local[:, 2]], 1)
            normal[ell] = grad / np.linalg.norm(grad, axis=1, keepdims=True)
        facing_away = np.einsum("ij,ij->i", normal, d.astype(np.float32)) > 0
        normal[facing_away] *= -1

        road = np.flatnonzero((prim < 0) & (raw == RawClass.ROAD))
        if len(road):
            s_road, d_road = self.street.path.path_coords(point[road, :2])
            raw[road] = self.street.ground_class(s_road, d_road)
        return RayHits(index, t, point, normal, raw, inst, prim)


def camera_directions(K: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(H*W, 3) camera-frame ray directions through the pixel centres, with unit z.

    Pixel (row r, column c) covers [c, c+1) x [r, r+1); its centre is (c + 0.5, r + 0.5), the
    convention of :func:`monoocc_ros.camera.project_points`. With z = 1 the hit parameter ``t``
    is the depth along the optical axis.
    """
    h, w = image_hw
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (u.ravel() - K[0, 2] - K[0, 1] * (v.ravel() - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (v.ravel() - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], 1)


def _hash01(cells: np.ndarray, salt: int) -> np.ndarray:
    """(P, 3) integer lattice cells -> (P,) float32 pseudo-random values in [0, 1)."""
    # uint32 arithmetic wraps modulo 2^32, which is what the hash wants
    c = cells.astype(np.int64).astype(np.uint32)
    h = (c[:, 0] * np.uint32(0x8DA6B343)) ^ (c[:, 1] * np.uint32(0xD8163841))
    h ^= (c[:, 2] * np.uint32(0xCB1AB31F)) ^ np.uint32((salt * 0x9E3779B1) & 0xFFFFFFFF)
    for mult in (0x2C1B3C6D, 0x297A2D39):
        h ^= h >> np.uint32(15)
        h *= np.uint32(mult)
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _noise(points: np.ndarray, cell_m, salt: int) -> np.ndarray:
    """Cell noise in [-0.5, 0.5): one random value per cell of size ``cell_m`` (scalar or (3,))."""
    return _hash01(np.floor(points / np.asarray(cell_m)), salt) - np.float32(0.5)


def _shade_albedo(mesh: SceneMesh, hits: RayHits) -> np.ndarray:
    """Textured base colour (M, 3) in [0, 1] of the hits."""
    raw = hits.raw_class
    p = hits.point
    prim = hits.primitive
    solids = mesh.street.primitives
    rgb = np.zeros((len(raw), 3), dtype=np.float32)
    tex = np.ones(len(raw), dtype=np.float32)

    ground = prim < 0
    for cls, colour in GROUND_RGB.items():
        rgb[ground & (raw == cls)] = colour
    on_solid = np.flatnonzero(~ground)
    rgb[on_solid] = solids.rgb[prim[on_solid]]
    # primitive-local coordinates, only for the classes whose texture follows the solid
    local = np.zeros_like(p)
    oriented = on_solid[np.isin(raw[on_solid], (RawClass.BUILDING, RawClass.FENCE,
                                                RawClass.TRAFFIC_SIGN))]
    local[oriented] = solids.to_local(prim[oriented], p[oriented])

    def where(cls: RawClass) -> np.ndarray:
        return raw == cls

    m = where(RawClass.ROAD)
    tex[m] += 0.16 * _noise(p[m], 0.07, 1) + 0.10 * _noise(p[m], 0.9, 2)
    m = where(RawClass.LANE_MARKING)
    tex[m] += 0.06 * _noise(p[m], 0.05, 3)
    m = where(RawClass.PARKING)
    stone = np.minimum(np.mod(p[m, 0], 0.3), np.mod(p[m, 1], 0.3)) < 0.035
    tex[m] += 0.2 * _noise(p[m], 0.3, 4) - 0.4 * stone
    m = where(RawClass.SIDEWALK)
    slab = np.minimum(np.mod(p[m, 0], 0.7), np.mod(p[m, 1], 0.7)) < 0.04
    tex[m] += 0.10 * _noise(p[m], 0.7, 5) + 0.06 * _noise(p[m], 0.05, 6) - 0.3 * slab
    m = where(RawClass.TERRAIN)
    tex[m] += 0.4 * _noise(p[m], 0.1, 7) + 0.25 * _noise(p[m], 0.6, 8)
    m = where(RawClass.VEGETATION)
    tex[m] += 0.7 * _noise(p[m], 0.15, 9) + 0.35 * _noise(p[m], 0.04, 10)
    m = where(RawClass.TRUNK)
    tex[m] += 0.35 * _noise(p[m], (0.04, 0.04, 0.5), 11)
    m = where(RawClass.FENCE)
    tex[m] -= 0.55 * (np.mod(local[m, 0], 0.14) < 0.05)
    for cls in (RawClass.POLE, RawClass.CAR, RawClass.TRUCK, RawClass.OTHER_VEHICLE,
                RawClass.PERSON, RawClass.BICYCLIST, RawClass.BICYCLE):
        m = where(cls)
        tex[m] += 0.08 * _noise(p[m], 0.1, 12)

    m = np.flatnonzero(where(RawClass.BUILDING))
    if len(m):
        tex[m] += 0.08 * _noise(p[m], 0.25, 13)
        n_world = hits.normal[m]
        yaw = solids.yaw[prim[m]]
        n_local_x = np.cos(yaw) * n_world[:, 0] + np.sin(yaw) * n_world[:, 1]
        along = np.where(np.abs(n_local_x) > 0.7, local[m, 1], local[m, 0])
        z = p[m, 2]
        window = (
            (np.abs(n_world[:, 2]) < 0.5)
            & (np.mod(along, 2.6) > 0.8) & (np.mod(along, 2.6) < 1.9)
            & (np.mod(z, 3.0) > 1.0) & (np.mod(z, 3.0) < 2.4) & (z > 0.9)
        )
        rgb[m[window]] = GLASS_RGB * (1.0 + 0.6 * _noise(p[m[window]], 2.6, 14))[:, None]
    m = np.flatnonzero(where(RawClass.TRAFFIC_SIGN))
    if len(m):
        rel = np.abs(local[m]) / solids.half_extent[prim[m]]
        rgb[m[np.maximum(rel[:, 1], rel[:, 2]) > 0.8]] = SIGN_RIM_RGB
    return np.clip(rgb * tex[:, None], 0.0, 1.0)


def render_image(
    mesh: SceneMesh,
    K: np.ndarray,
    T_world_cam: np.ndarray,
    image_hw: tuple[int, int],
    rng: np.random.Generator,
    directions_cam: np.ndarray | None = None,
) -> np.ndarray:
    """Render the camera image of the street.

    Args:
        mesh: the street mesh.
        K: (3, 3) intrinsics.
        T_world_cam: (4, 4) camera optical frame -> world.
        image_hw: (H, W).
        rng: source of the sensor noise.
        directions_cam: (H*W, 3) from :func:`camera_directions`, to reuse across frames.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    h, w = image_hw
    if directions_cam is None:
        directions_cam = camera_directions(K, image_hw)
    dirs = rotate(T_world_cam[:3, :3], directions_cam)
    hits = mesh.cast(T_world_cam[:3, 3], dirs)
    length = np.sqrt(np.einsum("ij,ij->i", dirs, dirs)).astype(np.float32)

    # sky: brighter at the horizon, bluer towards the zenith
    up = np.clip(dirs[:, 2].astype(np.float32) * (3.0 / length), 0.0, 1.0)[:, None]
    colour = SKY_HORIZON_RGB.astype(np.float32) + (SKY_ZENITH_RGB - SKY_HORIZON_RGB).astype(
        np.float32) * up

    albedo = _shade_albedo(mesh, hits)
    sun = (hits.normal * SUN_DIRECTION.astype(np.float32)).sum(1)
    light = AMBIENT + DIFFUSE * np.clip(sun, 0.0, None)
    distance = hits.t.astype(np.float32) * length[hits.index]
    haze = (1.0 - np.exp(-distance / np.float32(HAZE_DISTANCE_M)))[:, None]
    colour[hits.index] = (albedo * light[:, None]) * (1.0 - haze) + HAZE_RGB.astype(
        np.float32) * haze

    colour *= 255.0
    colour += rng.standard_normal(colour.shape, dtype=np.float32) * np.float32(SENSOR_NOISE * 255)
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8).reshape(h, w, 3)


def lidar_directions(azimuth_steps: int) -> np.ndarray:
    """(64 * azimuth_steps, 3) unit directions in the sensor frame, row by row from the top."""
    el = np.deg2rad(LIDAR_ELEVATIONS_DEG)[:, None]
    az = np.pi - 2.0 * np.pi * (np.arange(azimuth_steps) + 0.5) / azimuth_steps
    az = az[None, :]
    dirs = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                        np.sin(el)), -1)
    return dirs.reshape(-1, 3)


def scan_lidar(
    mesh: SceneMesh,
    T_world_velo: np.ndarray,
    rng: np.random.Generator,
    azimuth_steps: int,
    max_range_m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one revolution of the LiDAR.

    Args:
        mesh: the street mesh.
        T_world_velo: (4, 4) velodyne frame -> world.
        rng: source of the remission noise.
        azimuth_steps: columns of the scan.
        max_range_m: returns farther away are dropped.

    Returns:
        scan: (P, 4) float32 x, y, z in the velodyne frame and remission in [0, 1].
        labels: (P,) uint32 ``instance << 16 | raw class``.
    """
    dirs_velo = lidar_directions(azimuth_steps)
    dirs = rotate(T_world_velo[:3, :3], dirs_velo)
    hits = mesh.cast(T_world_velo[:3, 3], dirs)
    keep = np.flatnonzero(hits.t <= max_range_m)
    ray = hits.index[keep]
    xyz = dirs_velo[ray] * hits.t[keep, None]
    raw = hits.raw_class[keep]
    base = np.zeros(len(keep))
    for cls, value in REMISSION.items():
        base[raw == cls] = value
    incidence = np.abs(np.einsum("ij,ij->i", hits.normal[keep], dirs[ray]))
    remission = np.clip(base * (0.6 + 0.4 * incidence) + rng.normal(0, 0.03, len(keep)), 0, 1)
    scan = np.concatenate([xyz, remission[:, None]], 1).astype(np.float32)
    labels = (hits.instance[keep].astype(np.uint32) << 16) | raw.astype(np.uint32)
    return scan, labels
