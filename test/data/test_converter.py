"""convert_sequence: bit-exact round trips, storage/image variants, safety and bad inputs."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from monoocc_ros import topics
from monoocc_ros.camera import kitti_camera_from_calib
from monoocc_ros.cli import data as data_cli
from monoocc_ros.data import converter
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.data.converter import convert_sequence
from monoocc_ros.data.kitti import KittiSequence
from monoocc_ros.labels import SEMANTIC_KITTI

REPO = Path(__file__).resolve().parents[2]


def read_bag(bag: Path) -> dict[str, list]:
    """topic -> [(log_time, message)], with a typestore built here from msg/ (not the project's)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(
        get_types_from_msg(
            (REPO / "msg/SemanticOccupancyGrid.msg").read_text(), topics.GRID_MSG_TYPE
        )
    )
    out = defaultdict(list)
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            out[conn.topic].append((t, store.deserialize_cdr(raw, conn.msgtype)))
    return out


def tf_matrix(tf) -> np.ndarray:
    x, y, z, w = tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = [tf.translation.x, tf.translation.y, tf.translation.z]
    return T


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def check_round_trip(root: Path, sequence: str, bag: Path, image_format: str = "raw") -> None:
    """Every message of ``bag`` against the source files of the sequence."""
    import cv2

    seq = KittiSequence(root, sequence)
    msgs = read_bag(bag)
    frames = seq.frames
    stamps = [int(round(seq.times[f] * 1e9)) for f in frames]
    image_topic = topics.IMAGE if image_format == "raw" else topics.IMAGE_COMPRESSED
    gt_frames = [f for f in frames if seq.voxel_path(f, "label").exists()]
    assert {t: len(v) for t, v in msgs.items()} == {
        image_topic: len(frames),
        topics.CAMERA_INFO: len(frames),
        topics.TF: len(frames),
        topics.TF_STATIC: 1,
        topics.POINTS: len(frames),
        topics.GROUND_TRUTH: len(gt_frames),
    }
    for topic, items in msgs.items():
        for t, m in items:
            stamp = (
                ns(m.transforms[0].header.stamp) if topic.startswith("/tf") else ns(m.header.stamp)
            )
            assert t == stamp, topic
    K, T_cam_velo = kitti_camera_from_calib(seq.calib["P2"], seq.calib["Tr"])

    ((_, static),) = msgs[topics.TF_STATIC]
    by_child = {
        tf.child_frame_id: (tf.header.frame_id, tf_matrix(tf.transform)) for tf in static.transforms
    }
    assert by_child[topics.LIDAR_FRAME][0] == topics.BASE_FRAME
    np.testing.assert_allclose(by_child[topics.LIDAR_FRAME][1], np.eye(4), atol=1e-15)
    parent, T_velo_cam = by_child[topics.CAMERA_FRAME]
    assert parent == topics.LIDAR_FRAME
    np.testing.assert_allclose(np.linalg.inv(T_velo_cam), T_cam_velo, atol=1e-6)

    for f, stamp, (_, img), (_, info), (_, tf), (_, pts) in zip(
        frames,
        stamps,
        msgs[image_topic],
        msgs[topics.CAMERA_INFO],
        msgs[topics.TF],
        msgs[topics.POINTS],
    ):
        assert ns(img.header.stamp) == stamp and img.header.frame_id == topics.CAMERA_FRAME
        source = seq.load_image(f)
        if image_format == "raw":
            assert img.encoding == "rgb8" and img.step == img.width * 3
            assert np.array_equal(np.asarray(img.data).reshape(source.shape), source)
        else:
            assert img.format == image_format
            decoded = cv2.imdecode(np.asarray(img.data), cv2.IMREAD_COLOR)[:, :, ::-1]
            if image_format == "png":
                assert np.array_equal(decoded, source)
            else:
                assert np.abs(decoded.astype(int) - source).mean() < 3
        assert ns(info.header.stamp) == stamp and info.header.frame_id == topics.CAMERA_FRAME
        assert (info.height, info.width) == source.shape[:2]
        assert np.array_equal(np.asarray(info.k).reshape(3, 3), seq.calib["P2"][:, :3])
        assert np.array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], seq.calib["P2"][:, :3])
        assert not np.any(np.asarray(info.p).reshape(3, 4)[:, 3])

        (t_odom,) = tf.transforms
        assert (t_odom.header.frame_id, t_odom.child_frame_id) == (
            topics.ODOM_FRAME,
            topics.BASE_FRAME,
        )
        Tr = seq.calib["Tr"]
        np.testing.assert_allclose(
            tf_matrix(t_odom.transform), np.linalg.inv(Tr) @ seq.poses[f] @ Tr, atol=1e-6
        )

        assert pts.header.frame_id == topics.LIDAR_FRAME and ns(pts.header.stamp) == stamp
        assert [x.name for x in pts.fields] == ["x", "y", "z", "intensity", "label"]
        rec = np.asarray(pts.data).view([("xyzi", "<f4", (4,)), ("label", "<u4")])
        scan = seq.load_scan(f)
        assert rec["xyzi"].tobytes() == scan.tobytes()
        assert np.array_equal(rec["label"], seq.load_point_labels(f))

    for f, (_, gt) in zip(gt_frames, msgs[topics.GROUND_TRUTH]):
        assert (
            ns(gt.header.stamp) == int(round(seq.times[f] * 1e9))
            and gt.header.frame_id == topics.GRID_FRAME
        )
        vox = seq.load_voxels(f)
        expected = SEMANTIC_KITTI.remap_voxel_labels(vox.labels)
        expected[vox.invalid] = 255
        assert (gt.size_x, gt.size_y, gt.size_z) == (
            256,
            256,
            32,
        ) and gt.resolution == pytest.approx(0.2)
        assert (gt.origin.position.x, gt.origin.position.y, gt.origin.position.z) == pytest.approx(
            (0, -25.6, -2)
        )
        assert gt.origin.orientation.w == 1.0 and len(gt.confidence) == 0
        assert np.array_equal(np.asarray(gt.labels), expected.reshape(-1))
        assert list(gt.class_names) == list(SEMANTIC_KITTI.names)


def test_mcap_raw_round_trip(tiny_kitti_src, tiny_bag):
    check_round_trip(tiny_kitti_src[0], "00", tiny_bag)
    names = sorted(p.name for p in tiny_bag.iterdir())
    assert names == ["metadata.yaml", "tiny.mcap"]


@pytest.mark.parametrize(
    "storage, image_format", [("sqlite3", "raw"), ("mcap", "png"), ("sqlite3", "jpeg")]
)
def test_variants_round_trip(tiny_kitti_src, tmp_path, storage, image_format):
    out = tmp_path / "bag"
    summary = convert_sequence(
        tiny_kitti_src[0], "00", out, storage=storage, image_format=image_format, progress=False
    )
    assert summary.complete, str(summary)
    check_round_trip(tiny_kitti_src[0], "00", out, image_format)
    index = read_bag_frames(out, require_ground_truth=True)
    assert index.problems == [] and len(index) == 3
    frame = index.load(1)
    source = KittiSequence(tiny_kitti_src[0], "00").load_image(2)
    if image_format == "jpeg":
        assert np.abs(frame.image.astype(int) - source).mean() < 3
    else:
        assert np.array_equal(frame.image, source)
    assert any(p.suffix == (".db3" if storage == "sqlite3" else ".mcap") for p in out.iterdir())


def test_generated_sequence_round_trip(synthetic_kitti, synthetic_bag):
    check_round_trip(synthetic_kitti, "00", synthetic_bag)


def test_frame_range(tiny_kitti_src, tmp_path):
    summary = convert_sequence(
        tiny_kitti_src[0], "00", tmp_path / "b", frames=range(2, 4), progress=False
    )
    assert summary.frames == [2, 3]
    assert summary.written[topics.IMAGE] == 2 and summary.written[topics.GROUND_TRUTH] == 1
    assert len(read_bag(tmp_path / "b")[topics.IMAGE]) == 2


def test_refuses_overwrite_without_force(tiny_kitti_src, tmp_path):
    out = tmp_path / "bag"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--force"):
        convert_sequence(tiny_kitti_src[0], "00", out, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    convert_sequence(tiny_kitti_src[0], "00", out, force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "metadata.yaml").exists()


def test_interruption_leaves_no_half_bag(tiny_kitti_src, tmp_path, monkeypatch):
    real = converter._write_frame

    def interrupted(seq, f, *args):
        if f == 3:
            raise KeyboardInterrupt
        real(seq, f, *args)

    monkeypatch.setattr(converter, "_write_frame", interrupted)
    out = tmp_path / "bag"
    with pytest.raises(KeyboardInterrupt):
        convert_sequence(tiny_kitti_src[0], "00", out, progress=False)
    assert list(tmp_path.iterdir()) == []
    # With --force an interrupted run keeps the previous bag.
    out.mkdir()
    (out / "metadata.yaml").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        convert_sequence(tiny_kitti_src[0], "00", out, force=True, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["bag"] and (
        out / "metadata.yaml"
    ).read_text() == "old"


def test_bad_frames_are_reported_and_good_data_kept(tiny_kitti_copy, tmp_path):
    seq_dir = tiny_kitti_copy / "sequences" / "00"
    scan = seq_dir / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-7])
    (seq_dir / "image_2" / "000003.png").unlink()
    lbl = seq_dir / "voxels" / "000004.label"
    lbl.write_bytes(lbl.read_bytes()[:100])
    out = tmp_path / "bag"
    summary = convert_sequence(tiny_kitti_copy, "00", out, progress=False)
    assert not summary.complete
    text = "\n".join(summary.problems)
    assert (
        "frame 000001: point cloud not written" in text
        and "000001.bin" in text
        and "multiple of 16" in text
    )
    assert (
        "frame 000003: image and camera_info not written" in text
        and "000003.png: file not found" in text
    )
    assert "frame 000004: ground truth not written" in text and "000004.label: wrong size" in text
    assert summary.written == {
        topics.IMAGE: 5,
        topics.CAMERA_INFO: 5,
        topics.TF_STATIC: 1,
        topics.TF: 6,
        topics.POINTS: 5,
        topics.GROUND_TRUTH: 2,
    }
    assert "INCOMPLETE" in str(summary)
    msgs = read_bag(out)
    assert {t: len(v) for t, v in msgs.items()} == summary.written


def test_bad_arguments(tiny_kitti_src, tmp_path):
    with pytest.raises(ValueError, match="storage must be one of"):
        convert_sequence(tiny_kitti_src[0], "00", tmp_path / "b", storage="rosbag1")
    with pytest.raises(ValueError, match="image_format must be one of"):
        convert_sequence(tiny_kitti_src[0], "00", tmp_path / "b", image_format="bmp")
    with pytest.raises(ValueError, match="no frames to convert"):
        convert_sequence(tiny_kitti_src[0], "00", tmp_path / "b", frames=range(100, 200))
    assert not (tmp_path / "b").exists()


def test_cli_convert(tiny_kitti_src, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli_bag"
    args = parser.parse_args(
        [
            "convert-kitti",
            str(tiny_kitti_src[0]),
            "00",
            str(out),
            "--frames",
            "1:3",
            "--storage",
            "sqlite3",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    assert "/camera/image_raw" in capsys.readouterr().out
    assert len(read_bag(out)[topics.IMAGE]) == 2
    assert args.func(args) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["convert-kitti", "r", "00", "o", "--frames", "a:b"])


def test_frame_ids_survive_a_frame_range(tiny_kitti_src, tmp_path):
    out = tmp_path / "b"
    convert_sequence(tiny_kitti_src[0], "00", out, frames=range(2, 6), progress=False)
    index = read_bag_frames(out, require_ground_truth=True)
    assert [frame.index for frame in index] == [2, 4]
    assert [r.kitti_frame for r in index.records] == [2, 3, 4, 5]


def test_cli_partial_dataset_exits_0_with_a_counted_warning(tiny_kitti_copy, tmp_path, capsys):
    """A usable bag from a partial dataset is a success with a warning; no usable frame is a failure."""
    seq_dir = tiny_kitti_copy / "sequences" / "00"
    (seq_dir / "image_2" / "000003.png").unlink()
    scan = seq_dir / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-7])
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "partial"
    args = parser.parse_args(["convert-kitti", str(tiny_kitti_copy), "00", str(out), "--no-progress"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "INCOMPLETE" in captured.out and "/camera/image_raw" in captured.out
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert warning == [f"monoocc convert-kitti: warning: 2 of 6 frames have missing or bad files "
                       f"(problems above); {out} holds everything else"]
    assert len(read_bag(out)[topics.IMAGE]) == 5

    for png in (seq_dir / "image_2").glob("*.png"):
        png.unlink()
    args = parser.parse_args(["convert-kitti", str(tiny_kitti_copy), "00", str(tmp_path / "none"), "--no-progress"])
    assert args.func(args) == 1
    assert "holds no camera frame" in capsys.readouterr().err
