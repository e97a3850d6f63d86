"""The generated sequence, read back with monoocc_ros.data.kitti: layout, formats, geometry."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.camera import invert_rigid
from monoocc_ros.data import kitti
from monoocc_ros.data.scene import (
    FRAME_PERIOD_S,
    KITTI_IMAGE_HW,
    SENSOR_HEIGHT_M,
    plan_scene,
    scaled_calib,
)
from monoocc_ros.data.scene_layout import PrimitiveKind, RawClass
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI


@pytest.fixture(scope="module")
def seq(small_scene) -> kitti.KittiSequence:
    return kitti.KittiSequence(small_scene, "00")


def test_layout_file_sizes_and_dtypes(seq, small_config):
    n = small_config.num_frames
    h, w = small_config.image_size
    names = sorted(p.name for p in seq.path.iterdir())
    assert names == ["calib.txt", "image_2", "labels", "poses.txt", "times.txt", "velodyne",
                     "voxels"]
    assert seq.image_frames == list(range(n))
    assert seq.scan_frames == list(range(n))
    assert seq.voxel_frames == [0, 5]
    assert len(seq.poses) == n
    np.testing.assert_allclose(seq.times, FRAME_PERIOD_S * np.arange(n), atol=1e-9)
    for frame in range(n):
        image = seq.load_image(frame)
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        scan = seq.load_scan(frame)
        labels = seq.load_point_labels(frame, len(scan))
        assert scan.dtype == np.float32 and labels.dtype == np.uint32 and len(scan) > 1000
        assert np.all(np.linalg.norm(scan[:, :3], axis=1) <= small_config.lidar_max_range_m + 1e-3)
        assert scan[:, 3].min() >= 0 and scan[:, 3].max() <= 1
    for frame in (0, 5):
        for kind, size in (("bin", 262144), ("invalid", 262144), ("occluded", 262144),
                           ("label", 4194304)):
            assert seq.voxel_path(frame, kind).stat().st_size == size
        vox = seq.load_voxels(frame, require_labels=True)
        assert vox.labels.shape == (256, 256, 32) and vox.labels.dtype == np.uint16
    assert not any(seq.path.parent.glob(".*")), "no scratch folder may be left behind"


def test_calib_is_kitti08_scaled_to_the_image(seq, small_config, real_kitti):
    real = kitti.read_calib(real_kitti / "sequences" / "08" / "calib.txt")
    assert kitti.read_image(real_kitti / "sequences" / "08" / "image_2" / "000000.png").shape[:2] \
        == KITTI_IMAGE_HW
    full = scaled_calib(KITTI_IMAGE_HW)
    for key in ("P0", "P1", "P2", "P3", "Tr"):
        np.testing.assert_allclose(full[key], real[key], rtol=1e-9, atol=1e-12)

    calib = seq.calib
    h, w = small_config.image_size
    np.testing.assert_allclose(calib["Tr"], real["Tr"], atol=1e-12)
    for key in ("P0", "P1", "P2", "P3"):
        np.testing.assert_allclose(calib[key][0], real[key][0] * w / 1226, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(calib[key][1], real[key][1] * h / 370, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(calib[key][2], real[key][2], atol=1e-12)


def test_poses_follow_the_semantickitti_convention(seq, small_config):
    velo = seq.lidar_poses  # inv(Tr) @ pose @ Tr
    np.testing.assert_allclose(velo[0], np.eye(4), atol=1e-9)
    step = small_config.speed_mps * FRAME_PERIOD_S
    for a, b in zip(velo[:-1], velo[1:]):
        rel = invert_rigid(a) @ b
        # the car drives forward (velodyne x) on level ground, turning gently
        assert rel[0, 3] == pytest.approx(step, abs=0.01)
        assert abs(rel[1, 3]) < 0.01 and abs(rel[2, 3]) < 1e-6
        np.testing.assert_allclose(rel[2, :3], [0, 0, 1], atol=1e-9)
    plan = plan_scene(small_config)
    world0 = plan.velodyne_pose(0)
    assert world0[2, 3] == pytest.approx(SENSOR_HEIGHT_M)
    for frame in range(small_config.num_frames):
        np.testing.assert_allclose(world0 @ velo[frame], plan.velodyne_pose(frame), atol=1e-6)


def test_label_ids_are_semantickitti_ids_and_main_classes_appear(seq):
    valid = set(SEMANTIC_KITTI.learning_map)
    point_ids, voxel_ids = set(), set()
    for frame in seq.scan_frames:
        labels = seq.load_point_labels(frame)
        semantic = labels & 0xFFFF
        instance = labels >> 16
        point_ids |= set(np.unique(semantic).tolist())
        things = np.isin(semantic, [RawClass.CAR, RawClass.PERSON, RawClass.TRUCK,
                                    RawClass.OTHER_VEHICLE, RawClass.BICYCLIST, RawClass.BICYCLE])
        assert np.all(instance[things] > 0), "every object point carries an instance id"
        assert np.all(instance[~things] == 0), "stuff classes carry no instance id"
    for frame in seq.voxel_frames:
        voxel_ids |= set(np.unique(seq.load_voxels(frame).labels).tolist())
    assert point_ids <= valid and voxel_ids <= valid
    assert 0 not in point_ids, "every LiDAR return hits labelled geometry"
    main = {RawClass.ROAD, RawClass.LANE_MARKING, RawClass.SIDEWALK, RawClass.BUILDING,
            RawClass.VEGETATION, RawClass.TRUNK, RawClass.TERRAIN, RawClass.POLE,
            RawClass.TRAFFIC_SIGN, RawClass.CAR, RawClass.FENCE}
    assert main <= point_ids, f"missing in the scans: {sorted(main - point_ids)}"
    assert main - {RawClass.LANE_MARKING} <= voxel_ids, f"missing: {sorted(main - voxel_ids)}"


def _projected_pixels(seq, frame: int):
    """Colours and train ids of the image pixels that labelled LiDAR points project to."""
    calib = seq.calib
    image = seq.load_image(frame)
    h, w = image.shape[:2]
    scan = seq.load_scan(frame)
    train = SEMANTIC_KITTI.remap_point_labels(seq.load_point_labels(frame))
    lidar2img = calib["P2"] @ calib["Tr"]  # the official projection, (3, 4)
    pix = np.c_[scan[:, :3].astype(np.float64), np.ones(len(scan))] @ lidar2img.T
    depth = pix[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = pix[:, 0] / depth, pix[:, 1] / depth
    ok = (depth > 0.5) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    colours = image[v[ok].astype(int), u[ok].astype(int)].astype(np.float64)
    return colours, train[ok]


def test_image_carries_the_semantics_of_the_scan(seq):
    colours, train = [], []
    for frame in seq.scan_frames:
        c, t = _projected_pixels(seq, frame)
        colours.append(c)
        train.append(t)
    colours, train = np.concatenate(colours), np.concatenate(train)
    names = SEMANTIC_KITTI.names
    means = {c: colours[train == c].mean(0) for c in np.unique(train) if (train == c).sum() >= 50}
    road, veg = names.index("road"), names.index("vegetation")
    assert road in means and veg in means
    assert np.linalg.norm(means[road] - means[veg]) > 40, (means[road], means[veg])

    def greenness(rgb):
        return rgb[1] - (rgb[0] + rgb[2]) / 2

    assert greenness(means[veg]) - greenness(means[road]) > 30, (means[road], means[veg])
    # a nearest-class-mean colour classifier, blind to shape and context, already recovers
    # the class of most pixels (chance: 1 / number of classes)
    classes = np.array(sorted(means))
    centroids = np.stack([means[c] for c in classes])
    keep = np.isin(train, classes)
    nearest = classes[np.argmin(((colours[keep, None] - centroids[None]) ** 2).sum(-1), 1)]
    recall = [float((nearest[train[keep] == c] == c).mean()) for c in classes]
    assert len(classes) >= 8 and np.mean(recall) > 0.5, dict(zip(classes.tolist(), recall))


def test_bin_is_the_voxelised_scan(seq):
    for frame in seq.voxel_frames:
        scan = seq.load_scan(frame)
        labels = seq.load_point_labels(frame, len(scan))
        expected = KITTI_GRID.voxelize(scan[(labels & 0xFFFF) != 0, :3])
        vox = seq.load_voxels(frame)
        assert vox.occupied.sum() > 1000
        np.testing.assert_array_equal(vox.occupied, expected)


def test_visibility_masks_are_consistent(seq):
    for frame in seq.voxel_frames:
        vox = seq.load_voxels(frame, require_labels=True)
        assert not np.any(vox.occupied & vox.invalid), "a scanned voxel is never invalid"
        assert np.all(vox.labels[vox.occupied] != 0), "a scanned voxel is never empty"
        assert not np.any(vox.occupied & ~vox.occluded)
        assert not np.any(vox.invalid & ~vox.occluded), "invalid implies occluded"
        assert 0.05 < vox.invalid.mean() < 0.8
        # below the road surface nothing is observed; the air above the ego lane ahead is
        z_road = int((-SENSOR_HEIGHT_M - KITTI_GRID.origin_m[2]) / KITTI_GRID.voxel_size_m)
        ahead = slice(25, 75)  # 5 m to 15 m ahead
        ego_lane = slice(124, 132)  # |y| < 0.8 m
        assert vox.invalid[ahead, ego_lane, 0].all() and vox.occluded[ahead, ego_lane, 0].all()
        air = (slice(25, 75), ego_lane, slice(z_road + 3, z_road + 15))
        assert not vox.invalid[air].any() and not vox.occluded[air].any()
        assert np.all(vox.labels[air] == 0)
        assert np.all(vox.labels[ahead, ego_lane, z_road] == RawClass.ROAD)


def test_voxel_labels_match_objects_and_scan_points(seq, small_config):
    plan = plan_scene(small_config)
    prims = plan.street.primitives
    car_bodies = np.flatnonzero(
        (prims.raw_class == RawClass.CAR) & (prims.kind == PrimitiveKind.BOX)
        & (prims.centre[:, 2] < 1.0)
    )
    world0 = plan.velodyne_pose(0)
    cars_checked = 0
    for frame in seq.voxel_frames:
        vox = seq.load_voxels(frame, require_labels=True)
        T_grid_world = invert_rigid(world0 @ seq.lidar_poses[frame])
        centres = prims.centre[car_bodies] @ T_grid_world[:3, :3].T + T_grid_world[:3, 3]
        ijk, inside = KITTI_GRID.point_to_index(centres)
        assert np.all(vox.labels[tuple(ijk[inside].T)] == RawClass.CAR)
        cars_checked += int(inside.sum())

        # the voxel of a scan point mostly carries that point's class
        scan = seq.load_scan(frame)
        semantic = seq.load_point_labels(frame, len(scan)) & 0xFFFF
        ijk, inside = KITTI_GRID.point_to_index(scan[:, :3])
        agree = vox.labels[tuple(ijk[inside].T)] == semantic[inside]
        assert agree.mean() > 0.85, agree.mean()
        car_points = semantic[inside] == RawClass.CAR
        assert car_points.sum() > 20 and agree[car_points].mean() > 0.9
    assert cars_checked >= 1
