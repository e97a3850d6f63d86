"""Bag index: good frames survive corrupt chunks and messages; real-data projection check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from monoocc_ros import topics
from monoocc_ros.camera import CameraModel, project_points
from monoocc_ros.data.bag_dataset import project_lidar
from monoocc_ros.data.bag_io import BagReadError, read_bag_frames
from monoocc_ros.data.converter import convert_sequence
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.msgs.bagtypes import typestore
from monoocc_ros.transforms import matrix_to_quaternion, quaternion_to_matrix

TINY_FRAMES = 6  # as written by test/data/conftest.py
TINY_VOXEL_FRAMES = (0, 2, 4)


def stamp_of(f: int) -> int:
    return int(round((0.1 * f + 0.05) * 1e9))


def rewrite_bag(src: Path, dst: Path, edit) -> None:
    """Copy ``src`` into ``dst`` through ``edit(topic, k, t, raw) -> [(t, raw)]``."""
    with Reader(src) as reader:
        writer = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        conns = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore())
            for c in reader.connections
        }
        counts: dict[str, int] = {}
        for c, t, raw in reader.messages():
            k = counts[c.topic] = counts.get(c.topic, -1) + 1
            for t2, raw2 in edit(c.topic, k, t, bytes(raw)):
                writer.write(conns[c.id], t2, raw2)
        writer.close()


def test_index_of_clean_bag(tiny_bag):
    index = read_bag_frames(tiny_bag)
    assert index.problems == []
    assert len(index) == TINY_FRAMES and [r.stamp_ns for r in index.records] == [
        stamp_of(f) for f in range(6)
    ]
    gt_index = read_bag_frames(tiny_bag, require_ground_truth=True)
    frames = list(gt_index)
    assert [fr.index for fr in frames] == list(TINY_VOXEL_FRAMES)
    for fr in frames:
        assert fr.image.shape == (48, 160, 3) and fr.image.dtype == np.uint8
        assert fr.ground_truth.shape == (256, 256, 32) and fr.ground_truth.dtype == np.uint8
        assert fr.K.shape == (3, 3) and fr.T_cam_grid.shape == (4, 4)


def test_corrupt_chunk_keeps_other_frames(tiny_bag, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(tiny_bag, bag)
    with Reader(bag) as reader:
        chunk = next(
            c for c in reader.storage.storages[0].chunks if c.message_start_time == stamp_of(1)
        )
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    first_record = chunk.chunk_start_offset + 9 + 40 + len(chunk.compression)
    data[first_record : first_record + 64] = b"\xff" * 64
    mcap.write_bytes(bytes(data))

    index = read_bag_frames(bag, require_ground_truth=True)
    assert [index.records[i].stamp_ns for i in index.selected] == [stamp_of(0), stamp_of(4)]
    assert any("unreadable" in p and "0.150000 s" in p for p in index.problems), index.problems
    assert all(fr.ground_truth is not None for fr in index)


def test_corrupt_messages_and_inconsistent_stamps(tiny_bag, tmp_path):
    def edit(topic, k, t, raw):
        if topic == topics.GROUND_TRUTH and k == 1:  # frame 2: truncated message
            return [(t, raw[: len(raw) // 2])]
        if topic == topics.GROUND_TRUTH and k == 2:  # frame 4: plus a copy at a stamp with no image
            store = typestore()
            msg = store.deserialize_cdr(raw, topics.GRID_MSG_TYPE)
            msg.header.stamp.nanosec += 1
            return [(t, raw), (t + 1, bytes(store.serialize_cdr(msg, topics.GRID_MSG_TYPE)))]
        if (
            topic == topics.IMAGE and k == 5
        ):  # frame 5 image: stamp goes backwards, duplicates frame 3
            store = typestore()
            msg = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
            msg.header.stamp.nanosec = stamp_of(3) % 10**9
            return [(t, bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image")))]
        return [(t, raw)]

    bag = tmp_path / "bag"
    rewrite_bag(tiny_bag, bag, edit)
    index = read_bag_frames(bag, require_ground_truth=True)
    text = "\n".join(index.problems)
    assert f"{topics.GROUND_TRUTH} message #1 at 0.250000 s skipped" in text
    assert f"{topics.GROUND_TRUTH} at 0.450000 s has no image" in text
    assert (
        f"{topics.IMAGE} message #5 stamp 0.350000 s is not after the previous 0.450000 s "
        "(duplicate" in text
    )
    assert len(index.problems) == 3
    assert [index.records[i].stamp_ns for i in index.selected] == [stamp_of(0), stamp_of(4)]
    assert len(index.records) == 5


def test_missing_topics(tiny_bag, tmp_path):
    bag = tmp_path / "bag"
    rewrite_bag(
        tiny_bag,
        bag,
        lambda topic, k, t, raw: (
            [] if topic in (topics.TF_STATIC, topics.GROUND_TRUTH) else [(t, raw)]
        ),
    )
    index = read_bag_frames(bag, require_ground_truth=True)
    text = "\n".join(index.problems)
    assert "topic /tf_static missing" in text and "topic /ground_truth/occupancy missing" in text
    assert "no static transform links 'velodyne' and 'camera_optical'" in text
    assert len(index) == 0


def test_unreadable_bag(tmp_path):
    with pytest.raises(BagReadError, match="bag not found"):
        read_bag_frames(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    with pytest.raises(BagReadError, match=r"bad: cannot open bag"):
        read_bag_frames(tmp_path / "bad")


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quaternion_to_matrix(*q)
        np.testing.assert_allclose(quaternion_to_matrix(*matrix_to_quaternion(R)), R, atol=1e-12)
    for R in (
        np.diag([1.0, -1, -1]),
        np.diag([-1.0, 1, -1]),
        np.diag([-1.0, -1, 1]),
    ):  # 180 degree turns
        np.testing.assert_allclose(quaternion_to_matrix(*matrix_to_quaternion(R)), R, atol=1e-12)


@pytest.fixture(scope="module")
def real_bag(real_kitti, tmp_path_factory) -> tuple[Path, Path]:
    """Frames 0 and 5 of the real sequence 08 in a tmp KITTI layout, converted to a bag."""
    root = tmp_path_factory.mktemp("real08")
    src, dst = real_kitti / "sequences" / "08", root / "sequences" / "08"
    for name in ("calib.txt", "poses.txt", "times.txt"):
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, dst / name)
    for f in ("000000", "000005"):
        for sub, ext in (("image_2", "png"), ("velodyne", "bin"), ("labels", "label")):
            (dst / sub).mkdir(exist_ok=True)
            shutil.copy(src / sub / f"{f}.{ext}", dst / sub / f"{f}.{ext}")
    out = root / "bag"
    summary = convert_sequence(root, "08", out, progress=False)
    assert summary.written[topics.IMAGE] == 2 and summary.written[topics.POINTS] == 2
    return root, out


def test_real_projection_matches_calib(real_kitti, real_bag):
    from monoocc_ros.data.kitti import read_calib

    index = read_bag_frames(real_bag[1])
    assert index.problems == [] and len(index) == 2
    rec = index.records[0]
    calib = read_calib(real_kitti / "sequences" / "08" / "calib.txt")
    camera = CameraModel(rec.K, rec.T_cam_grid, rec.image_hw)
    centres = KITTI_GRID.centres()[::7]  # a seventh of the voxels keeps this fast
    uv, _, visible = camera.project(centres)
    ref = np.c_[centres, np.ones(len(centres))] @ (calib["P2"] @ calib["Tr"]).T
    ref_uv = ref[:, :2] / ref[:, 2:]
    assert visible.sum() > 20_000
    assert np.abs(uv[visible] - ref_uv[visible]).max() < 1e-3


def test_real_lidar_lands_in_image(real_bag):
    index = read_bag_frames(real_bag[1])
    rec = index.records[0]
    scan, raw = index.load_points(0)
    ids = SEMANTIC_KITTI.remap_point_labels(raw)
    sem2d, depth = project_lidar(scan[:, :3], ids, rec.K, rec.T_cam_grid, rec.image_hw)
    h, w = rec.image_hw
    # Points well inside the camera's field of view (+-41 deg across, about +-15 deg up and
    # down; the LiDAR reaches 25 deg down) all project inside the image.
    x, y, zl = scan[:, 0], scan[:, 1], scan[:, 2]
    uv, z = project_points(scan[:, :3], rec.K, rec.T_cam_grid)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    central = (x > 5) & (np.abs(y) < 0.7 * x) & (zl > -0.2 * x) & (zl < 0.15 * x)
    assert central.sum() > 10_000 and np.mean(inside[central]) > 0.99
    assert not np.any(inside & (x < 0))
    # Nothing projects into the sky: the top third of the image has almost no points.
    rows = np.nonzero(depth)[0]
    assert np.mean(rows < h // 3) < 0.005 and rows.max() > h - 10
    assert (depth > 0).sum() > 15_000 and depth.max() < 90
    road_rows = np.nonzero(sem2d == 9)[0]
    assert len(road_rows) > 3000 and np.mean(road_rows > rec.K[1, 2]) > 0.99
    assert np.all((sem2d != 255) <= (depth > 0))
