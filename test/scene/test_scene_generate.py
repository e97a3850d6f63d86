"""generate_sequence and `monoocc generate-scene`: determinism, safety, errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from monoocc_ros.cli.data import register
from monoocc_ros.data import kitti
from monoocc_ros.data.scene import SceneConfig, generate_sequence
from monoocc_ros.data.scene_layout import EGO_LATERAL_M, StreetPath, build_street

TINY = dict(num_frames=1, image_size=(32, 96))


def _files(seq: Path) -> dict[str, bytes]:
    return {str(p.relative_to(seq)): p.read_bytes() for p in sorted(seq.rglob("*")) if p.is_file()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monoocc")
    register(parser.add_subparsers(dest="command"))
    return parser


def _cli(*argv: str) -> int:
    args = _parser().parse_args(["generate-scene", *argv])
    return args.func(args)


def test_same_seed_same_bytes_cli_equals_api_other_seed_differs(tmp_path, capsys):
    api = generate_sequence(tmp_path / "api", SceneConfig(seed=4, **TINY), progress=False)
    assert _cli(str(tmp_path / "cli"), "--frames", "1", "--seed", "4", "--image-size", "32", "96",
                "--quiet") == 0
    cli = tmp_path / "cli" / "sequences" / "00"
    assert capsys.readouterr().out.strip() == str(cli)
    a, b = _files(api), _files(cli)
    assert len(a) == 10  # calib, poses, times, image, scan, point labels, 4 voxel files
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)

    other_seq = generate_sequence(tmp_path / "other", SceneConfig(seed=5, **TINY), progress=False)
    other = _files(other_seq)
    for name in ("image_2/000000.png", "velodyne/000000.bin", "labels/000000.label",
                 "voxels/000000.label"):
        assert other[name] != a[name], name
    assert other["calib.txt"] == a["calib.txt"]


def test_existing_sequence_is_kept_unless_forced(tmp_path, capsys):
    root = tmp_path / "data"
    seq = generate_sequence(root, SceneConfig(seed=1, **TINY), progress=False)
    before = _files(seq)
    with pytest.raises(FileExistsError, match="already exists"):
        generate_sequence(root, SceneConfig(seed=2, **TINY), progress=False)
    assert _cli(str(root), "--frames", "1", "--seed", "2", "--image-size", "32", "96") == 2
    assert "already exists" in capsys.readouterr().err
    assert _files(seq) == before, "a refused run must not touch the existing sequence"

    assert _cli(str(root), "--frames", "2", "--seed", "2", "--image-size", "32", "96",
                "--voxel-every", "1", "--force", "--quiet") == 0
    seq2 = kitti.KittiSequence(root, "00")
    assert seq2.image_frames == [0, 1] and seq2.voxel_frames == [0, 1]
    assert _files(seq)["image_2/000000.png"] != before["image_2/000000.png"]
    assert sorted(p.name for p in (root / "sequences").iterdir()) == ["00"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_frames=0), "num_frames"),
        (dict(voxel_every=0), "voxel_every"),
        (dict(image_size=(4, 100)), "image_size"),
        (dict(image_size=(100,)), "image_size"),
        (dict(seed=-1), "seed"),
        (dict(speed_mps=float("nan")), "speed_mps"),
        (dict(max_curvature_per_m=0.5), "max_curvature_per_m"),
        (dict(lidar_azimuth_steps=2.5), "lidar_azimuth_steps"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SceneConfig(**kwargs)


def test_bad_input_is_reported_by_the_cli(tmp_path, capsys):
    assert _cli(str(tmp_path), "--image-size", "4", "96", "--frames", "1") == 2
    assert "image_size" in capsys.readouterr().err
    assert _cli(str(tmp_path), "--sequence", "../escape", "--frames", "1") == 2
    assert "sequence name" in capsys.readouterr().err
    assert not (tmp_path / "sequences").exists() or not any((tmp_path / "sequences").iterdir())


@pytest.mark.parametrize("curvature", [0.0, 1 / 200, -1 / 300])
def test_path_coordinates_round_trip(curvature):
    path = StreetPath(curvature)
    rng = np.random.default_rng(0)
    s = rng.uniform(-90, 300, 500)
    d = rng.uniform(-60, 60, 500)
    s2, d2 = path.path_coords(path.point(s, d))
    np.testing.assert_allclose(s2, s, atol=1e-6)
    np.testing.assert_allclose(d2, d, atol=1e-6)
    # the heading is the direction of the path
    ahead = path.point(s + 1e-4, 0 * s) - path.point(s, 0 * s)
    np.testing.assert_allclose(np.arctan2(ahead[:, 1], ahead[:, 0]),
                               np.angle(np.exp(1j * path.heading(s + 5e-5))), atol=1e-6)


def test_street_is_seeded_extends_consistently_and_keeps_the_ego_lane_free():
    a = build_street(3, (-50.0, 200.0), 0.002)
    b = build_street(3, (-50.0, 200.0), 0.002)
    longer = build_street(3, (-50.0, 400.0), 0.002)
    other = build_street(4, (-50.0, 200.0), 0.002)
    np.testing.assert_array_equal(a.primitives.centre, b.primitives.centre)
    assert a.bands == longer.bands
    assert not np.array_equal(a.primitives.centre[:20], other.primitives.centre[:20])
    # every solid of the short street is in the longer one
    short = {tuple(np.round(c, 9)) for c in a.primitives.centre}
    assert short <= {tuple(np.round(c, 9)) for c in longer.primitives.centre}

    # solids are aligned with the path, so their lateral reach is the local y half extent
    # plus the sagitta of the curve over their half length
    p = longer.primitives
    _, d = longer.path.path_coords(p.centre[:, :2])
    reach = p.half_extent[:, 1] + p.half_extent[:, 0] ** 2 * 0.002 / 2
    right_edge, left_edge = 2 * EGO_LATERAL_M, 0.0
    assert np.all((d - reach >= left_edge) | (d + reach <= right_edge))
