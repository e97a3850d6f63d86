"""SemanticKITTI reader: real frames of sequence 08, round trips and malformed files."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.data import kitti
from monoocc_ros.data.kitti import KittiFormatError, KittiSequence
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI


@pytest.fixture(scope="module")
def seq08(real_kitti) -> KittiSequence:
    return KittiSequence(real_kitti, "08")


@pytest.mark.parametrize("frame", [0, 5])
def test_real_frame_loads(seq08, frame):
    image = seq08.load_image(frame)
    assert image.shape == (370, 1226, 3) and image.dtype == np.uint8
    scan = seq08.load_scan(frame)
    assert scan.dtype == np.float32 and scan.shape[1] == 4 and len(scan) > 100_000
    labels = seq08.load_point_labels(frame, len(scan))
    assert labels.dtype == np.uint32 and labels.shape == (len(scan),)
    # Real scans are mostly labelled road/car/building/vegetation...: most points map to a class.
    train = SEMANTIC_KITTI.remap_point_labels(labels)
    assert 0.5 < np.mean(train != 255) <= 1.0
    vox = seq08.load_voxels(frame)
    assert vox.labels is None  # the sample has no voxel .label
    for grid in (vox.occupied, vox.invalid, vox.occluded):
        assert grid.shape == KITTI_GRID.size and grid.dtype == bool
    assert 0 < vox.occupied.sum() < vox.occluded.sum()
    with pytest.raises(KittiFormatError, match=rf"{frame:06d}\.label.*missing"):
        seq08.load_voxels(frame, require_labels=True)


def test_real_calib_poses_times(seq08):
    calib = seq08.calib
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    assert calib["P2"].shape == (3, 4) and calib["Tr"].shape == (4, 4)
    assert calib["P2"][0, 0] == pytest.approx(707.0912)
    np.testing.assert_allclose(calib["Tr"][3], [0, 0, 0, 1])
    poses, times = seq08.poses, seq08.times
    assert poses.shape == (4071, 4, 4) and times.shape == (4071,)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-9)
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    assert seq08.image_frames == list(range(10))
    assert {0, 5, 45, 1000} <= set(seq08.voxel_frames)


@pytest.mark.parametrize("frame", [0, 5])
def test_voxelising_real_scan_reproduces_bin(seq08, frame):
    scan = seq08.load_scan(frame)
    labels = seq08.load_point_labels(frame, len(scan))
    occ = KITTI_GRID.voxelize(scan[(labels & 0xFFFF) != 0, :3]).reshape(-1)[:-1]
    ref = seq08.load_voxels(frame).occupied.reshape(-1)[:-1]
    iou = (occ & ref).sum() / (occ | ref).sum()
    assert iou > 0.99


def test_pack_unpack_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    bits = rng.random(KITTI_GRID.num_voxels) < 0.3
    path = tmp_path / "x.invalid"
    kitti.write_voxel_bits(path, bits)
    assert path.stat().st_size == 262144
    out = kitti.unpack_bits(path)
    assert out.dtype == np.uint8 and np.array_equal(out.astype(bool), bits)
    # MSB first: the first voxel is the top bit of the first byte.
    one = np.zeros(KITTI_GRID.num_voxels, np.uint8)
    one[0] = 1
    assert kitti.pack_bits(one)[0] == 0x80


def test_writers_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    scan = rng.normal(size=(7, 4)).astype(np.float32)
    kitti.write_scan(tmp_path / "s.bin", scan)
    assert np.array_equal(kitti.read_scan(tmp_path / "s.bin"), scan)
    vl = rng.integers(0, 259, KITTI_GRID.size).astype(np.uint16)
    kitti.write_voxel_labels(tmp_path / "v.label", vl)
    assert np.array_equal(kitti.read_voxel_labels(tmp_path / "v.label"), vl)
    calib = {k: rng.normal(size=(3, 4)) for k in ("P0", "P1", "P2", "P3", "Tr")}
    kitti.write_calib(tmp_path / "calib.txt", calib)
    back = kitti.read_calib(tmp_path / "calib.txt")
    np.testing.assert_allclose(back["Tr"][:3], calib["Tr"], rtol=1e-12)
    np.testing.assert_allclose(back["P2"], calib["P2"], rtol=1e-12)


def test_truncated_scan_names_file(tmp_path, real_kitti):
    src = (real_kitti / "sequences/08/velodyne/000000.bin").read_bytes()
    path = tmp_path / "000000.bin"
    path.write_bytes(src[:-6])
    with pytest.raises(KittiFormatError, match=r"000000\.bin.*not a multiple of 16"):
        kitti.read_scan(path)


def test_truncated_voxel_files(tmp_path):
    (tmp_path / "a.invalid").write_bytes(b"\0" * 1000)
    with pytest.raises(KittiFormatError, match=r"a\.invalid: wrong size 1000 bytes"):
        kitti.unpack_bits(tmp_path / "a.invalid")
    (tmp_path / "a.label").write_bytes(b"\0" * 10)
    with pytest.raises(KittiFormatError, match=r"a\.label: wrong size"):
        kitti.read_voxel_labels(tmp_path / "a.label")


def test_point_label_count_mismatch(tmp_path):
    kitti.write_point_labels(tmp_path / "l.label", np.zeros(5, np.uint32))
    with pytest.raises(KittiFormatError, match=r"l\.label: 5 labels but the scan has 6 points"):
        kitti.read_point_labels(tmp_path / "l.label", 6)


@pytest.mark.parametrize(
    "line, match",
    [
        ("P2: 1 2 3", r"line 3: expected 12 numbers, got 3"),
        ("P2: 1 2 3 4 5 6 7 8 9 10 11 x", r"line 3: not a number"),
        ("Q9: 1 2 3 4 5 6 7 8 9 10 11 12", r"line 3: expected 'KEY: 12 numbers'"),
    ],
)
def test_bad_calib_line(tmp_path, real_kitti, line, match):
    lines = (real_kitti / "sequences/08/calib.txt").read_text().splitlines()
    lines[2] = line
    (tmp_path / "calib.txt").write_text("\n".join(lines))
    with pytest.raises(KittiFormatError, match=r"calib\.txt, " + match):
        kitti.read_calib(tmp_path / "calib.txt")


def test_calib_missing_entry(tmp_path, real_kitti):
    lines = (real_kitti / "sequences/08/calib.txt").read_text().splitlines()
    (tmp_path / "calib.txt").write_text("\n".join(lines[:4]))
    with pytest.raises(KittiFormatError, match=r"calib\.txt: missing calibration entries \['Tr'\]"):
        kitti.read_calib(tmp_path / "calib.txt")


def test_pose_count_mismatch(tiny_kitti_copy):
    seq_dir = tiny_kitti_copy / "sequences" / "00"
    lines = (seq_dir / "poses.txt").read_text().splitlines()
    (seq_dir / "poses.txt").write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(
        KittiFormatError, match=r"poses\.txt: pose count 4 does not match image count 6"
    ):
        _ = KittiSequence(tiny_kitti_copy, "00").poses


def test_missing_files_are_named(tiny_kitti_copy):
    seq = KittiSequence(tiny_kitti_copy, "00")
    seq.image_path(3).unlink()
    with pytest.raises(KittiFormatError, match=r"image_2/000003\.png: file not found"):
        seq.load_image(3)
    seq.image_path(2).write_bytes(b"not a png")
    with pytest.raises(KittiFormatError, match=r"000002\.png: not a decodable image"):
        seq.load_image(2)
    with pytest.raises(KittiFormatError, match=r"sequences/42: sequence folder not found"):
        KittiSequence(tiny_kitti_copy, "42")
