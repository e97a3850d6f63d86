"""Procedural street layout for the synthetic scenes: a road along a path, ground bands, objects.

The world frame has z up and the road surface at z = 0. The street follows a path of constant
curvature (straight when the curvature is 0); a point is addressed by its arc length ``s`` along
the path and its signed lateral offset ``d`` (positive to the left). Ground classes are a function
of (s, d) — road with lane markings, parking strips, sidewalks and terrain — and objects are
simple solids (boxes, vertical cylinders, ellipsoids) with a raw SemanticKITTI class each.

Everything here is plain numpy and deterministic for a given seed.

Why one file of about 520 lines: the layout is one seeded generator. Its random draws happen in a
fixed order (bands, then vehicles, people and trees per side), and every bag, test and table in the
project depends on that order; keeping the placement rules beside the builder keeps the order
readable in one place.

Example:
    >>> street = build_street(seed=0, s_range_m=(-50.0, 150.0), curvature_per_m=0.002)
    >>> street.ground_class(np.array([10.0]), np.array([-1.75])).tolist()
    [40]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "EGO_LATERAL_M",
    "GroundBand",
    "PrimitiveKind",
    "Primitives",
    "RawClass",
    "Street",
    "StreetPath",
    "build_street",
]


class RawClass(IntEnum):
    """Raw SemanticKITTI ids used by the generator (see semantic_kitti.yaml learning_map)."""

    UNLABELED = 0
    CAR = 10
    BICYCLE = 11
    TRUCK = 18
    OTHER_VEHICLE = 20
    PERSON = 30
    BICYCLIST = 31
    ROAD = 40
    PARKING = 44
    SIDEWALK = 48
    BUILDING = 50
    FENCE = 51
    LANE_MARKING = 60
    VEGETATION = 70
    TRUNK = 71
    TERRAIN = 72
    POLE = 80
    TRAFFIC_SIGN = 81


LANE_WIDTH_M = 3.5
ROAD_HALF_WIDTH_M = LANE_WIDTH_M  # one lane each way
EGO_LATERAL_M = -LANE_WIDTH_M / 2  # right-hand traffic: the ego car drives in the right lane
PARKING_WIDTH_M = 2.6
CURB_HEIGHT_M = 0.15
MARKING_HALF_WIDTH_M = 0.075
EDGE_LINE_OFFSET_M = 0.25  # from the road edge to the edge line's centre
DASH_PERIOD_M = 9.0
DASH_LENGTH_M = 3.0
GROUND_EXTENT_M = 80.0  # lateral extent of the modelled ground on each side


class StreetPath:
    """A planar path of constant curvature starting at the origin, heading along +x.

    Args:
        curvature_per_m: signed curvature (positive turns left); 0 gives a straight line.
    """

    def __init__(self, curvature_per_m: float):
        self.curvature_per_m = float(curvature_per_m)
        self._straight = abs(self.curvature_per_m) < 1e-9

    def heading(self, s: np.ndarray) -> np.ndarray:
        """Heading (rad, from +x towards +y) at arc length s."""
        return np.asarray(s, dtype=np.float64) * (0.0 if self._straight else self.curvature_per_m)

    def point(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """(...,) arc lengths and lateral offsets -> (..., 2) world xy."""
        s = np.asarray(s, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        if self._straight:
            return np.stack(np.broadcast_arrays(s, d), axis=-1)
        k = self.curvature_per_m
        th = k * s
        x = np.sin(th) / k - d * np.sin(th)
        y = (1.0 - np.cos(th)) / k + d * np.cos(th)
        return np.stack([x, y], axis=-1)

    def path_coords(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 2) world xy -> arc length s (...,) and lateral offset d (...,).

        Exact for the circle: a point at offset d lies at distance |1/k - d| from the centre
        (0, 1/k), on the ray through the path point at the same arc length.
        """
        xy = np.asarray(xy, dtype=np.float64)
        if self._straight:
            return xy[..., 0].copy(), xy[..., 1].copy()
        k = self.curvature_per_m
        sgn = np.sign(k)
        vx, vy = xy[..., 0], xy[..., 1] - 1.0 / k
        th = np.arctan2(sgn * vx, -sgn * vy)
        return th / k, 1.0 / k - sgn * np.hypot(vx, vy)


@dataclass(frozen=True)
class GroundBand:
    """A strip of ground parallel to the path: |d| in [inner_m, outer_m) on one side.

    Attributes:
        side: +1 left of the path, -1 right.
        inner_m, outer_m: unsigned lateral bounds.
        raw_class: raw SemanticKITTI id of the surface.
        height_m: surface height above the road.
    """

    side: int
    inner_m: float
    outer_m: float
    raw_class: int
    height_m: float


class PrimitiveKind(IntEnum):
    BOX = 0
    CYLINDER = 1  # vertical axis; half_extent = (radius, radius, half height)
    ELLIPSOID = 2


@dataclass(frozen=True)
class Primitives:
    """N solids in world coordinates, each with a class, an instance id and a colour.

    Attributes:
        kind: (N,) int8 :class:`PrimitiveKind`.
        centre: (N, 3) float64 world position of the solid's centre.
        half_extent: (N, 3) float64 half sizes along the solid's local x (heading), y, z.
        yaw: (N,) float64 rotation about z of the local frame.
        raw_class: (N,) uint16 raw SemanticKITTI id.
        instance: (N,) uint16 instance id (0 for stuff classes).
        rgb: (N, 3) float32 base colour in [0, 1].
    """

    kind: np.ndarray
    centre: np.ndarray
    half_extent: np.ndarray
    yaw: np.ndarray
    raw_class: np.ndarray
    instance: np.ndarray
    rgb: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def to_local(self, index: np.ndarray, points: np.ndarray) -> np.ndarray:
        """World points (P, 3) -> local frames (P, 3) of the primitives ``index`` (P,)."""
        rel = points - self.centre[index]
        c, s = np.cos(self.yaw[index]), np.sin(self.yaw[index])
        return np.stack(
            [c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1
        )


@dataclass(frozen=True)
class Street:
    """The layout of one street: path, ground bands per side and solid objects.

    Attributes:
        path: the centre line.
        bands: ground strips on both sides, the road first.
        s_range_m: arc-length interval that is modelled.
        primitives: the solids, stuff classes first and things (vehicles, people) last.
    """

    path: StreetPath
    bands: tuple[GroundBand, ...]
    s_range_m: tuple[float, float]
    primitives: Primitives

    def _band_lookup(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.abs(d)
        raw = np.full(d.shape, int(RawClass.TERRAIN), dtype=np.uint16)
        height = np.full(d.shape, CURB_HEIGHT_M)
        for band in self.bands:
            on_side = (d >= 0) if band.side > 0 else (d < 0)
            m = on_side & (a >= band.inner_m) & (a < band.outer_m)
            raw[m] = band.raw_class
            height[m] = band.height_m
        return raw, height

    def ground_class(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Raw class of the ground surface at path coordinates (lane markings included)."""
        s = np.asarray(s, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        raw, _ = self._band_lookup(d)
        centre_line = (np.abs(d) < MARKING_HALF_WIDTH_M) & (
            np.mod(s, DASH_PERIOD_M) < DASH_LENGTH_M
        )
        edge_lines = (
            np.abs(np.abs(d) - (ROAD_HALF_WIDTH_M - EDGE_LINE_OFFSET_M)) < MARKING_HALF_WIDTH_M
        )
        raw[(raw == RawClass.ROAD) & (centre_line | edge_lines)] = RawClass.LANE_MARKING
        return raw

    def ground_height(self, d: np.ndarray) -> np.ndarray:
        """Height (m above the road) of the ground surface at lateral offsets d."""
        return self._band_lookup(np.asarray(d, dtype=np.float64))[1]


class _Builder:
    """Collects primitives placed in path coordinates.

    Every kind of placement (buildings on the left, trees on the right, ...) draws from its
    own random stream, so a longer street extends a shorter one of the same seed.
    """

    def __init__(self, path: StreetPath, seed: int):
        self.path = path
        self.seed = seed
        self.rng = self.stream(0)
        self.rows: list[tuple] = []
        self.next_instance = 1

    def stream(self, key: int) -> np.random.Generator:
        """Switch to (and return) the random stream ``key``."""
        self.rng = np.random.default_rng([self.seed, 0x5CE7E, key])
        return self.rng

    def instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def add(
        self,
        kind: PrimitiveKind,
        s: float,
        d: float,
        bottom_m: float,
        half: tuple[float, float, float],
        raw: RawClass,
        rgb: tuple[float, float, float],
        instance: int = 0,
        along_m: float = 0.0,
    ) -> None:
        """Place a solid whose base sits at ``bottom_m``, ``along_m`` ahead along the heading."""
        heading = float(self.path.heading(s))
        xy = self.path.point(s, d) + along_m * np.array([np.cos(heading), np.sin(heading)])
        centre = (xy[0], xy[1], bottom_m + half[2])
        self.rows.append((int(kind), centre, half, heading, int(raw), instance, rgb))

    def jitter(self, rgb: tuple[float, float, float], amount: float) -> tuple[float, float, float]:
        scale = 1.0 + amount * (self.rng.random() - 0.5)
        return tuple(float(np.clip(c * scale, 0.0, 1.0)) for c in rgb)  # type: ignore[return-value]

    def build(self) -> Primitives:
        things = {RawClass.CAR, RawClass.TRUCK, RawClass.OTHER_VEHICLE, RawClass.PERSON,
                  RawClass.BICYCLIST, RawClass.BICYCLE}
        # Things last: where solids overlap, the later one wins the voxel.
        rows = sorted(self.rows, key=lambda r: r[4] in things)
        if not rows:
            raise ValueError("the street has no objects; the modelled range is too short")
        kind, centre, half, yaw, raw, inst, rgb = zip(*rows)
        return Primitives(
            kind=np.array(kind, dtype=np.int8),
            centre=np.array(centre, dtype=np.float64),
            half_extent=np.array(half, dtype=np.float64),
            yaw=np.array(yaw, dtype=np.float64),
            raw_class=np.array(raw, dtype=np.uint16),
            instance=np.array(inst, dtype=np.uint16),
            rgb=np.array(rgb, dtype=np.float32),
        )


BUILDING_COLOURS = ((0.72, 0.45, 0.33), (0.82, 0.70, 0.52), (0.66, 0.50, 0.40), (0.86, 0.76, 0.60))
CAR_COLOUR = (0.70, 0.10, 0.10)
CAR_GLASS_TINT = (0.10, 0.13, 0.18)
TRUCK_COLOUR = (0.90, 0.55, 0.10)
TRUCK_CARGO_COLOUR = (0.95, 0.75, 0.25)
OTHER_VEHICLE_COLOUR = (0.45, 0.22, 0.60)
PERSON_COLOURS = ((0.85, 0.30, 0.60), (0.75, 0.20, 0.70))
TROUSERS_COLOUR = (0.20, 0.20, 0.35)
BICYCLIST_COLOUR = (0.10, 0.70, 0.75)
BICYCLE_COLOUR = (0.15, 0.45, 0.85)
SKIN_COLOUR = (0.85, 0.65, 0.50)
TRUNK_COLOUR = (0.37, 0.25, 0.15)
FOLIAGE_COLOUR = (0.20, 0.64, 0.15)
FENCE_COLOUR = (0.60, 0.44, 0.28)
POLE_COLOUR = (0.52, 0.58, 0.72)
SIGN_COLOURS = ((0.10, 0.28, 0.80), (0.80, 0.10, 0.10), (0.95, 0.80, 0.10))


def _side_bands(side: int, rng: np.random.Generator) -> tuple[list[GroundBand], float]:
    """Ground bands of one side and the lateral offset where buildings may start."""
    bands = [GroundBand(side, 0.0, ROAD_HALF_WIDTH_M, int(RawClass.ROAD), 0.0)]
    edge = ROAD_HALF_WIDTH_M
    if rng.random() < 0.7:
        bands.append(GroundBand(side, edge, edge + PARKING_WIDTH_M, int(RawClass.PARKING), 0.0))
        edge += PARKING_WIDTH_M
    sidewalk = float(rng.uniform(2.0, 3.5))
    bands.append(GroundBand(side, edge, edge + sidewalk, int(RawClass.SIDEWALK), CURB_HEIGHT_M))
    edge += sidewalk
    terrain = float(rng.uniform(2.0, 6.0))
    bands.append(
        GroundBand(side, edge, GROUND_EXTENT_M, int(RawClass.TERRAIN), CURB_HEIGHT_M)
    )
    return bands, edge + terrain


def _band(bands: list[GroundBand], raw: RawClass) -> GroundBand | None:
    return next((b for b in bands if b.raw_class == raw), None)


def _vehicle_class(rng: np.random.Generator, car_below: float, truck_below: float) -> RawClass:
    u = rng.random()
    return RawClass.CAR if u < car_below else RawClass.TRUCK if u < truck_below else \
        RawClass.OTHER_VEHICLE


def _place_vehicle(b: _Builder, s_rear: float, d: float, raw: RawClass) -> float:
    """A vehicle at lateral offset d, its rear at arc length s_rear; returns its length."""
    rng = b.rng
    inst = b.instance()
    if raw == RawClass.CAR:
        length, width = rng.uniform(3.9, 4.7), rng.uniform(1.7, 1.9)
        s = s_rear + length / 2
        rgb = b.jitter(CAR_COLOUR, 0.4)
        b.add(PrimitiveKind.BOX, s, d, 0.18, (length / 2, width / 2, 0.36), raw, rgb, inst)
        glass = tuple(0.25 * c + g for c, g in zip(rgb, CAR_GLASS_TINT))
        b.add(PrimitiveKind.BOX, s, d, 0.90, (length * 0.25, width / 2 - 0.1, 0.26), raw, glass,
              inst, along_m=-0.05 * length)
    elif raw == RawClass.TRUCK:
        cargo = rng.uniform(5.0, 7.0)
        length = cargo + 2.4
        s = s_rear + length / 2
        rgb = b.jitter(TRUCK_COLOUR, 0.3)
        b.add(PrimitiveKind.BOX, s, d, 0.35, (1.1, 1.2, 1.3), raw, rgb, inst,
              along_m=length / 2 - 1.1)
        b.add(PrimitiveKind.BOX, s, d, 0.5, (cargo / 2, 1.25, rng.uniform(1.5, 1.8)), raw,
              b.jitter(TRUCK_CARGO_COLOUR, 0.2), inst, along_m=-length / 2 + cargo / 2)
    else:
        length = rng.uniform(6.0, 11.0)
        s = s_rear + length / 2
        b.add(PrimitiveKind.BOX, s, d, 0.35, (length / 2, 1.25, rng.uniform(1.3, 1.6)), raw,
              b.jitter(OTHER_VEHICLE_COLOUR, 0.3), inst)
    return float(length)


def _place_person(b: _Builder, s: float, d: float, bottom: float) -> None:
    inst = b.instance()
    h = b.rng.uniform(1.55, 1.9)
    shirt = b.jitter(PERSON_COLOURS[b.rng.integers(len(PERSON_COLOURS))], 0.3)
    raw = RawClass.PERSON
    b.add(PrimitiveKind.CYLINDER, s, d, bottom, (0.15, 0.15, 0.225 * h), raw, TROUSERS_COLOUR, inst)
    b.add(PrimitiveKind.CYLINDER, s, d, bottom + 0.45 * h, (0.21, 0.21, 0.185 * h), raw, shirt,
          inst)
    b.add(PrimitiveKind.ELLIPSOID, s, d, bottom + 0.82 * h, (0.11, 0.11, 0.09 * h), raw,
          SKIN_COLOUR, inst)


def _place_bicyclist(b: _Builder, s: float, d: float) -> None:
    inst = b.instance()
    raw = RawClass.BICYCLIST
    rgb = b.jitter(BICYCLIST_COLOUR, 0.3)
    b.add(PrimitiveKind.BOX, s, d, 0.05, (0.85, 0.05, 0.4), raw, (0.1, 0.1, 0.1), inst)
    b.add(PrimitiveKind.CYLINDER, s, d, 0.85, (0.2, 0.2, 0.32), raw, rgb, inst)
    b.add(PrimitiveKind.ELLIPSOID, s, d, 1.49, (0.11, 0.11, 0.13), raw, SKIN_COLOUR, inst)


def _place_tree(b: _Builder, s: float, d: float, bottom: float) -> None:
    rng = b.rng
    trunk_h = rng.uniform(2.0, 3.2)
    r_h, r_v = rng.uniform(1.3, 2.4), rng.uniform(1.2, 2.2)
    b.add(PrimitiveKind.CYLINDER, s, d, bottom, (rng.uniform(0.12, 0.22),) * 2 + (trunk_h / 2,),
          RawClass.TRUNK, b.jitter(TRUNK_COLOUR, 0.3))
    b.add(PrimitiveKind.ELLIPSOID, s, d, bottom + trunk_h - 0.3 * r_v, (r_h, r_h, r_v),
          RawClass.VEGETATION, b.jitter(FOLIAGE_COLOUR, 0.35))


def _populate_side(b: _Builder, side: int, bands: list[GroundBand], building_d: float,
                   s_range: tuple[float, float]) -> None:
    key = 10 if side > 0 else 20
    s0, s1 = s_range
    sidewalk = _band(bands, RawClass.SIDEWALK)
    parking = _band(bands, RawClass.PARKING)
    terrain_in = next(b_.inner_m for b_ in bands if b_.raw_class == RawClass.TERRAIN)
    assert sidewalk is not None

    # Buildings with gaps; some plots stay empty and get bushes instead.
    rng = b.stream(key + 1)
    s = s0
    while s < s1:
        length, gap = rng.uniform(8.0, 22.0), rng.uniform(2.0, 9.0)
        depth, height = rng.uniform(8.0, 14.0), rng.uniform(5.0, 16.0)
        if rng.random() < 0.85:
            b.add(PrimitiveKind.BOX, s + length / 2, side * (building_d + 0.5 + depth / 2),
                  CURB_HEIGHT_M, (length / 2, depth / 2, height / 2), RawClass.BUILDING,
                  b.jitter(BUILDING_COLOURS[rng.integers(len(BUILDING_COLOURS))], 0.2))
        else:
            for _ in range(int(rng.integers(2, 5))):
                r = rng.uniform(0.5, 1.2)
                b.add(PrimitiveKind.ELLIPSOID, s + rng.uniform(0, length),
                      side * (building_d + rng.uniform(1.0, 6.0)), CURB_HEIGHT_M - 0.2 * r,
                      (r, r, 0.8 * r), RawClass.VEGETATION, b.jitter(FOLIAGE_COLOUR, 0.35))
        s += length + gap

    # Fences along the back of the terrain strip, in stretches.
    rng = b.stream(key + 2)
    s = s0
    while s < s1:
        stretch = rng.uniform(10.0, 30.0)
        if rng.random() < 0.5:
            height = rng.uniform(1.0, 1.8)
            for k in range(int(stretch // 2.5)):
                b.add(PrimitiveKind.BOX, s + 2.5 * k + 1.25, side * (building_d - 0.2),
                      CURB_HEIGHT_M, (1.25, 0.03, height / 2), RawClass.FENCE,
                      FENCE_COLOUR)
        s += stretch + rng.uniform(3.0, 15.0)

    # Trees and bushes on the terrain strip.
    rng = b.stream(key + 3)
    s = s0 + rng.uniform(0.0, 8.0)
    while s < s1:
        d = side * (terrain_in + 0.5 * (building_d - terrain_in) + rng.uniform(-0.4, 0.4))
        if rng.random() < 0.7:
            _place_tree(b, s, d, CURB_HEIGHT_M)
        else:
            r = rng.uniform(0.4, 1.0)
            b.add(PrimitiveKind.ELLIPSOID, s, d, CURB_HEIGHT_M - 0.2 * r, (r, r, 0.8 * r),
                  RawClass.VEGETATION, b.jitter(FOLIAGE_COLOUR, 0.35))
        s += rng.uniform(6.0, 14.0)

    # Poles near the curb, some carrying a traffic sign; small sign posts in between.
    rng = b.stream(key + 4)
    s = s0 + rng.uniform(0.0, 10.0)
    while s < s1:
        d = side * (sidewalk.inner_m + 0.5)
        if rng.random() < 0.6:
            height = rng.uniform(4.0, 8.0)
            b.add(PrimitiveKind.CYLINDER, s, d, CURB_HEIGHT_M,
                  (rng.uniform(0.07, 0.12),) * 2 + (height / 2,), RawClass.POLE, POLE_COLOUR)
            sign_bottom = rng.uniform(2.0, 3.0)
        else:
            height = 2.6
            b.add(PrimitiveKind.CYLINDER, s, d, CURB_HEIGHT_M, (0.04, 0.04, height / 2),
                  RawClass.POLE, POLE_COLOUR)
            sign_bottom = height - 0.5
        if height < 3.0 or rng.random() < 0.5:
            b.add(PrimitiveKind.BOX, s, d, CURB_HEIGHT_M + sign_bottom, (0.03, 0.35, 0.35),
                  RawClass.TRAFFIC_SIGN, SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))],
                  along_m=side * 0.06)
        s += rng.uniform(10.0, 25.0)

    # Parked vehicles.
    if parking is not None:
        rng = b.stream(key + 5)
        s = s0 + rng.uniform(0.0, 4.0)
        d = side * (parking.inner_m + parking.outer_m) / 2
        while s < s1:
            rng.random()  # a draw kept so that existing seeds keep their streets
            raw = _vehicle_class(rng, 0.85, 0.93)
            if rng.random() < 0.75:
                length = _place_vehicle(b, s, d, raw)
                s += length + rng.uniform(0.8, 5.0)
            else:
                s += rng.uniform(4.0, 9.0)

    # People walking on the sidewalk and parked bicycles.
    rng = b.stream(key + 6)
    s = s0 + rng.uniform(0.0, 10.0)
    while s < s1:
        d = side * rng.uniform(sidewalk.inner_m + 0.6, sidewalk.outer_m - 0.4)
        if rng.random() < 0.8:
            _place_person(b, s, d, CURB_HEIGHT_M)
        else:
            b.add(PrimitiveKind.BOX, s, side * (sidewalk.outer_m - 0.5), CURB_HEIGHT_M + 0.05,
                  (0.85, 0.05, 0.4), RawClass.BICYCLE, b.jitter(BICYCLE_COLOUR, 0.3), b.instance())
        s += rng.uniform(8.0, 25.0)


def build_street(seed: int, s_range_m: tuple[float, float], curvature_per_m: float) -> Street:
    """Lay out a street deterministically from a seed.

    Args:
        seed: random seed; the same seed gives the same street.
        s_range_m: (start, end) arc length along the path to fill with objects and ground.
        curvature_per_m: signed path curvature (0 = straight).

    Returns:
        The street; the ego lane (d in [-3.5, 0)) is kept free of objects.
    """
    s0, s1 = map(float, s_range_m)
    if not s1 > s0:
        raise ValueError(f"s_range_m must be increasing, got {s_range_m}")
    path = StreetPath(curvature_per_m)
    b = _Builder(path, int(seed))
    bands: list[GroundBand] = []
    for side in (1, -1):
        side_bands, building_d = _side_bands(side, b.stream(5 if side > 0 else 6))
        bands += side_bands
        _populate_side(b, side, side_bands, building_d, (s0, s1))

    # Oncoming traffic waiting in the left lane, and bicyclists at its edge.
    rng = b.stream(1)
    s = s0 + rng.uniform(5.0, 30.0)
    while s < s1:
        raw = _vehicle_class(rng, 0.8, 0.9)
        s += _place_vehicle(b, s, LANE_WIDTH_M / 2 - 0.15, raw) + rng.uniform(12.0, 40.0)
    rng = b.stream(2)
    s = s0 + rng.uniform(10.0, 40.0)
    while s < s1:
        _place_bicyclist(b, s, ROAD_HALF_WIDTH_M - 0.4)
        s += rng.uniform(25.0, 60.0)

    return Street(path=path, bands=tuple(bands), s_range_m=(s0, s1), primitives=b.build())
