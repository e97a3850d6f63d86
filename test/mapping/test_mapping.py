"""Semantic map in the odometry frame (monoocc_ros.mapping), without ROS.

The moving-vehicle checks replay a generated bag (its /tf odom -> base_link poses and ground
truth grids) and compare the fused map with the generator's world, rasterised independently at
a pose that no frame had. The parked / driving-away checks synthesise each frame's label grid
from a small world of boxes, so that what must stay and what must go is known exactly.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from monoocc_ros.camera import CameraModel, invert_rigid, kitti_camera_from_calib
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI
from monoocc_ros.mapping import (
    COSTMAP_FREE,
    COSTMAP_OBSTACLE,
    COSTMAP_UNKNOWN,
    MapConfig,
    SemanticMap,
)

CAR = SEMANTIC_KITTI.names.index("car")
ROAD = SEMANTIC_KITTI.names.index("road")
BUILDING = SEMANTIC_KITTI.names.index("building")
SENSOR_HEIGHT_M = 1.73


@cache
def _camera() -> CameraModel:
    from monoocc_ros.data.scene import KITTI_IMAGE_HW, scaled_calib

    calib = scaled_calib(KITTI_IMAGE_HW)
    K, T = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    return CameraModel(K=K, T_cam_grid=T, image_hw=KITTI_IMAGE_HW)


@cache
def _centres() -> np.ndarray:
    return KITTI_GRID.centres()


def _pose(x: float, y: float, yaw: float) -> np.ndarray:
    """Grid (sensor) frame -> odom for a vehicle at (x, y) heading ``yaw``, sensor 1.73 m up."""
    T = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = [x, y, SENSOR_HEIGHT_M]
    return T


def _turn(degrees: float) -> np.ndarray:
    """(4, 4) rotation about z."""
    T = np.eye(4)
    a = np.radians(degrees)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return T


def _box(centre_xy, half=(2.0, 0.9, 0.75)):
    return (np.array([centre_xy[0], centre_xy[1], half[2]]), np.asarray(half))


def _inside(points: np.ndarray, box) -> np.ndarray:
    centre, half = box
    return np.all(np.abs(points - centre) <= half, axis=1)


def _frame_labels(T_odom_grid: np.ndarray, cars, buildings=()) -> np.ndarray:
    """(256, 256, 32) labels of a flat road world with axis-aligned car and building boxes."""
    world = _centres() @ T_odom_grid[:3, :3].T + T_odom_grid[:3, 3]
    labels = np.zeros(KITTI_GRID.num_voxels, dtype=np.uint8)
    labels[(world[:, 2] < 0) & (world[:, 2] > -0.2)] = ROAD
    for box in buildings:
        labels[_inside(world, box)] = BUILDING
    for box in cars:
        labels[_inside(world, box)] = CAR
    return labels.reshape(KITTI_GRID.size)


def _map_labels_at(fusion: SemanticMap, points: np.ndarray) -> np.ndarray:
    """Map classes at odom points, through the snapshot (EMPTY for free, IGNORE for unknown)."""
    snap = fusion.snapshot()
    ijk, inside = snap.grid.point_to_index(points)
    out = np.full(len(points), IGNORE, dtype=np.uint8)
    out[inside] = snap.labels[tuple(ijk[inside].T)]
    return out


def _box_voxels(box) -> np.ndarray:
    """Odom-frame voxel centres (0.2 m lattice) inside a box, shrunk by half a voxel."""
    centre, half = box
    axes = [np.arange(c - h + 0.1, c + h - 0.05, 0.2) for c, h in zip(centre, half)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3) + 1e-3


# ---------------------------------------------------------------- generated bag, moving vehicle
@pytest.fixture(scope="module")
def bag_frames(synthetic_bag):
    """(ground truth, T_odom_grid from /tf, stamp s, camera) of every ground-truth frame."""
    from monoocc_ros.data.bag_io import read_bag_frames

    index = read_bag_frames(synthetic_bag, require_ground_truth=True)
    frames = []
    for i in index.selected:
        rec = index.records[i]
        assert rec.T_odom_grid is not None, "the converter writes /tf odom -> base_link per frame"
        camera = CameraModel(K=rec.K, T_cam_grid=rec.T_cam_grid, image_hw=rec.image_hw)
        frames.append((index.load_ground_truth(i), rec.T_odom_grid, rec.stamp_ns * 1e-9, camera))
    return frames


def _fuse(frames, pose=lambda T: T) -> SemanticMap:
    fusion = SemanticMap(MapConfig())
    for labels, T, stamp, camera in frames:
        fusion.integrate(labels, None, pose(T), stamp, camera)
    return fusion


def _world_truth_check(fusion: SemanticMap, T_odom_check: np.ndarray):
    """Map vs the generator's world rasterised at ``T_odom_check``.

    Scored over the map's occupied voxels of classes that are not ground bands (the street's
    ground is the same all along it, so a shifted map would still match there). A voxel agrees
    when the world has its class within one voxel: the ground-truth files also label voxels
    that scan points touch just outside the solids (about 16 % of their occupied voxels), and
    object borders resample to the nearest voxel.

    Returns:
        (voxels scored, fraction that agrees)
    """
    import itertools

    from monoocc_ros.data.scene import SceneConfig, plan_scene
    from monoocc_ros.data.scene_voxels import rasterise_labels

    plan = plan_scene(SceneConfig(num_frames=20, seed=7))  # the synthetic_kitti fixture's street
    T_world_odom = plan.velodyne_pose(0)  # the converter's odom is the first LiDAR pose
    truth = SEMANTIC_KITTI.remap_voxel_labels(rasterise_labels(plan.street, T_world_odom @ T_odom_check))
    mapped = fusion.labels_in_grid(T_odom_check)
    ground = [SEMANTIC_KITTI.names.index(n) for n in ("road", "parking", "sidewalk", "other-ground", "terrain")]
    scored = (mapped != EMPTY) & (mapped != IGNORE) & ~np.isin(mapped, ground)
    ijk, label = np.argwhere(scored), mapped[scored]
    agree = np.zeros(len(ijk), dtype=bool)
    for offset in itertools.product((-1, 0, 1), repeat=3):
        q = np.clip(ijk + offset, 0, np.asarray(truth.shape) - 1)
        agree |= truth[tuple(q.T)] == label
    return len(ijk), float(agree.mean())


def _check_pose(poses) -> np.ndarray:
    """A pose between the frames, turned by 20 degrees: its voxels align with no frame's."""
    T = poses[len(poses) // 2] @ _turn(20.0)
    T[:2, 3] += [3.1, 0.7]
    return T


def test_fused_voxels_land_where_the_world_says(bag_frames):
    poses = [T for _, T, _, _ in bag_frames]
    assert len(poses) >= 3 and not np.allclose(poses[0], poses[-1]), "the vehicle must move"
    scored, agreement = _world_truth_check(_fuse(bag_frames), _check_pose(poses))
    assert scored > 10_000
    assert agreement > 0.97


def test_a_pose_convention_error_is_caught(bag_frames):
    """The same check fails when the poses are used the wrong way round (odom -> grid), or
    carry a 2 degree heading error."""
    poses = [T for _, T, _, _ in bag_frames]
    _, inverted = _world_truth_check(_fuse(bag_frames, invert_rigid), _check_pose(poses))
    assert inverted < 0.9  # frame 0 has the identity pose either way; the others land metres off
    _, turned = _world_truth_check(_fuse(bag_frames, lambda T: T @ _turn(2.0)), _check_pose(poses))
    assert turned < 0.9, turned


# ---------------------------------------------------------------- parked car / car driving away
def test_parked_car_stays_and_car_that_drives_away_is_cleared():
    parked = _box((30.0, 4.0))
    start = (22.0, -3.0)
    fusion = SemanticMap(MapConfig())
    camera = _camera()
    for k in range(15):
        T = _pose(0.8 * k, 0.0, 0.01 * k)
        # the other car waits for 6 frames, drives off at 25 m/s and stops 12.5 m further on
        leaving = _box((start[0] + min(max(0, k - 5), 5) * 2.5, start[1]))
        fusion.integrate(_frame_labels(T, [parked, leaving]), None, T, 0.1 * k, camera)
    at_parked = _map_labels_at(fusion, _box_voxels(parked))
    at_start = _map_labels_at(fusion, _box_voxels(_box(start)))
    at_now = _map_labels_at(fusion, _box_voxels(leaving))
    assert np.mean(at_parked == CAR) > 0.95
    assert np.mean(at_start == CAR) < 0.05, "the car left: its old voxels are seen empty"
    assert np.mean(at_start == EMPTY) > 0.9
    # where it stopped it shows up after a few frames (space seen free needs more than one hit)
    assert np.mean(at_now == CAR) > 0.9


def test_movable_classes_decay_out_of_view_and_static_ones_stay():
    car, building = _box((20.0, -5.0)), _box((20.0, 8.0), half=(3.0, 1.0, 2.0))
    fusion = SemanticMap(MapConfig(movable_tau_s=2.0))
    camera = _camera()
    T = _pose(0.0, 0.0, 0.0)
    for k in range(3):
        fusion.integrate(_frame_labels(T, [car], [building]), None, T, 0.1 * k, camera)
    nothing = np.full(KITTI_GRID.size, IGNORE, dtype=np.uint8)  # frames without evidence
    fusion.integrate(nothing, None, T, 1.2, camera)
    assert np.mean(_map_labels_at(fusion, _box_voxels(car)) == CAR) > 0.95, "1 s: still there"
    fusion.integrate(nothing, None, T, 8.2, camera)
    assert np.mean(_map_labels_at(fusion, _box_voxels(car)) == CAR) == 0.0, "8 s: faded"
    assert np.mean(_map_labels_at(fusion, _box_voxels(building)) == BUILDING) > 0.95


def test_class_vote_follows_the_confident_majority():
    fusion = SemanticMap(MapConfig())
    camera = _camera()
    T = _pose(0.0, 0.0, 0.0)
    box = _box((15.0, 0.0))
    as_car = _frame_labels(T, [box])
    as_building = np.where(as_car == CAR, BUILDING, as_car).astype(np.uint8)
    low = np.full(KITTI_GRID.size, 60, dtype=np.uint8)
    high = np.full(KITTI_GRID.size, 250, dtype=np.uint8)
    for k, (labels, conf) in enumerate([(as_car, high), (as_building, low), (as_car, high), (as_building, low)]):
        fusion.integrate(labels, conf, T, 0.1 * k, camera)
    assert np.mean(_map_labels_at(fusion, _box_voxels(box)) == CAR) > 0.95


# ---------------------------------------------------------------- rolling window, memory
def test_window_rolls_with_the_vehicle_and_memory_does_not_grow():
    cfg = MapConfig(size=(128, 128, 32))  # 25.6 m: the vehicle leaves it quickly
    fusion = SemanticMap(cfg)
    camera = _camera()
    nbytes = fusion.nbytes
    car = _box((8.0, 0.0))  # x from 6 to 10 m
    T0 = _pose(0.0, 0.0, 0.0)
    fusion.integrate(_frame_labels(T0, [car]), None, T0, 0.0, camera)
    assert np.mean(_map_labels_at(fusion, _box_voxels(car)) == CAR) > 0.95
    # 22 m on, with a frame that carries no evidence: the window is now x in [9.2, 35) m; the
    # car's voxels below 9.2 m left it, and their ring slabs now stand for x + 25.6 m
    nothing = np.full(KITTI_GRID.size, IGNORE, dtype=np.uint8)
    fusion.integrate(nothing, None, _pose(22.0, 0.0, 0.0), 0.1, camera)
    snap = fusion.snapshot()
    x_car = snap.grid.origin_m[0] + (np.nonzero(np.any(snap.labels == CAR, axis=(1, 2)))[0] + 0.5) * 0.2
    assert x_car.size and x_car.min() > 9.2 and x_car.max() < 10.0, "only the car's part still inside"
    for k in range(2, 60):  # on to 60 m, fusing frames of an empty road
        T = _pose(1.0 * k, 0.0, 0.0)
        fusion.integrate(_frame_labels(T, []), None, T, 0.1 * k, camera)
    assert fusion.nbytes == nbytes
    snap = fusion.snapshot()
    assert snap.labels.shape == cfg.size and not np.any(snap.labels == CAR)
    centre = np.asarray(snap.grid.origin_m[:2]) + np.asarray(snap.grid.extent_m[:2]) / 2
    assert np.allclose(centre, [59.0, 0.0], atol=0.2), "the window is centred on the vehicle"
    assert _map_labels_at(fusion, np.array([[62.1, 0.1, -0.1]]))[0] == ROAD


def test_costmap_cells():
    cfg = MapConfig()
    fusion = SemanticMap(cfg)
    T = _pose(0.0, 0.0, 0.0)
    car = _box((20.0, -3.0))
    fusion.integrate(_frame_labels(T, [car]), None, T, 0.0, _camera())
    cells, grid = fusion.costmap()
    assert cells.shape == cfg.size[:2] and cells.dtype == np.int8

    def cell(x, y):
        ijk, inside = grid.point_to_index(np.array([[x, y, 0.0]]))
        assert inside[0]
        return cells[ijk[0, 0], ijk[0, 1]]

    assert cell(20.0, -3.0) == COSTMAP_OBSTACLE
    assert cell(20.0, 3.0) == COSTMAP_FREE  # road seen in the camera
    assert cell(-10.0, 0.0) == COSTMAP_UNKNOWN  # behind the vehicle: never seen
    assert cell(2.0, 40.0) == COSTMAP_UNKNOWN  # beside it, beyond the grid's 25.6 m


def test_bad_input_is_refused_with_a_clear_message():
    fusion = SemanticMap(MapConfig(size=(64, 64, 32)))
    camera = _camera()
    good = np.zeros(KITTI_GRID.size, dtype=np.uint8)
    T = _pose(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="labels must be uint8 of shape"):
        fusion.integrate(good[:10], None, T, 0.0, camera)
    with pytest.raises(ValueError, match="confidence must have shape"):
        fusion.integrate(good, good[:, :, :4], T, 0.0, camera)
    tilted = T.copy()
    a = np.radians(30.0)
    tilted[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    with pytest.raises(ValueError, match="max_tilt_deg"):
        fusion.integrate(good, None, tilted, 0.0, camera)
    with pytest.raises(ValueError, match="T_odom_grid"):
        fusion.integrate(good, None, np.full((4, 4), np.nan), 0.0, camera)
    fusion.integrate(good, None, T, 1.0, camera)
    with pytest.raises(ValueError, match="older than the map's latest frame"):
        fusion.integrate(good, None, T, 0.5, camera)
    with pytest.raises(ValueError, match="unknown class name"):
        MapConfig(drivable_classes=("tarmac",))
