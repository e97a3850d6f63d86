"""The official protocol end to end: VoxFormer ``.query`` files through ``monoocc eval --queries``
give, frame by frame, the labels of ``Predictor.predict(image, K, T, proposals=...)``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monoocc_ros.camera import CameraModel
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.evaluation.submission import read_prediction
from monoocc_ros.grid import KITTI_GRID_HALF
from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.models.checkpoint import make_payload, save_checkpoint
from monoocc_ros.models.config import get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.models.proposals import QueryFiles, read_query_file
from monoocc_ros.predictor import Predictor

TAG = "query_iou5203_pre7712_rec6153"


def write_query_file(path: Path, proposals: np.ndarray) -> Path:
    """VoxFormer's format: (128, 128, 16) bool in (x, y, z) order, bit-packed MSB first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.packbits(proposals.reshape(-1).astype(np.uint8)).tofile(path)
    return path


def visible_proposals(frame, count: int, seed: int) -> np.ndarray:
    """``count`` random half-grid voxels that the frame's camera sees."""
    camera = CameraModel(frame.K, frame.T_cam_grid, frame.image.shape[:2])
    _, _, visible = camera.project(KITTI_GRID_HALF.centres())
    chosen = np.random.default_rng(seed).choice(np.flatnonzero(visible), count, replace=False)
    out = np.zeros(KITTI_GRID_HALF.num_voxels, dtype=bool)
    out[chosen] = True
    return out.reshape(KITTI_GRID_HALF.size)


@pytest.fixture(scope="module")
def external_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    tiny = get_model_config("tiny")
    cfg = dataclasses.replace(tiny, proposal=dataclasses.replace(tiny.proposal, mode="external"))
    path = tmp_path_factory.mktemp("ext") / "external.pt"
    save_checkpoint(path, make_payload(MonoOccStudent(cfg).eval(), "tiny"))
    return path


def test_query_files_round_trip_and_layout(tmp_path):
    grid = np.random.default_rng(0).random(KITTI_GRID_HALF.size) < 0.3
    write_query_file(tmp_path / "sequences" / "08" / "queries" / f"000010.{TAG}", grid)
    assert (tmp_path / "sequences" / "08" / "queries" / f"000010.{TAG}").stat().st_size == 32768
    files = QueryFiles(tmp_path, "08")
    np.testing.assert_array_equal(files.load(10), grid)
    np.testing.assert_array_equal(QueryFiles(tmp_path / "sequences" / "08", "08").load(10), grid)
    with pytest.raises(FileNotFoundError, match="frame 000011"):
        files.load(11)
    with pytest.raises(FileNotFoundError, match="sequence 07"):
        QueryFiles(tmp_path, "07")
    write_query_file(tmp_path / "sequences" / "08" / "queries" / "000010.query_other", grid)
    with pytest.raises(ValueError, match="several tags"):
        QueryFiles(tmp_path, "08")


def test_eval_with_queries_equals_predictor_frame_by_frame(gt_bag, external_checkpoint, eval_cli, tmp_path):
    frames = list(read_bag_frames(gt_bag, require_ground_truth=True))
    assert [f.index for f in frames] == [0, 5]
    queries = tmp_path / "queries_root"
    # frame 0: fewer proposals than min_queries (the official head uses them as they are);
    # frame 5: a few thousand
    counts = {0: 7, 5: 3000}
    for f in frames:
        write_query_file(queries / "sequences" / "00" / "queries" / f"{f.index:06d}.{TAG}", visible_proposals(f, counts[f.index], f.index))
    out, sub = tmp_path / "report", tmp_path / "sub"
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(external_checkpoint), "--queries", str(queries),
                   "--out", str(out), "--export-submission", str(sub), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["frames"]["failed"] == 0 and report["proposals"]["files"] == 2
    log = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["proposals"] for r in log] == [7, 3000]

    predictor = Predictor.from_checkpoint(external_checkpoint)
    with pytest.raises(ValueError, match="external"):
        predictor.predict(frames[0].image, frames[0].K, frames[0].T_cam_grid)
    distinct = set()
    for f in frames:
        proposals = read_query_file(queries / "sequences" / "00" / "queries" / f"{f.index:06d}.{TAG}")
        want = predictor.predict(f.image, f.K, f.T_cam_grid, proposals=proposals).labels
        got = SEMANTIC_KITTI.remap_voxel_labels(read_prediction(sub / "sequences" / "00" / "predictions" / f"{f.index:06d}.label"))
        np.testing.assert_array_equal(got, want)
        distinct.add(want.tobytes())
        # the proposals matter: the same frame with none gives other labels
        none = predictor.predict(f.image, f.K, f.T_cam_grid, proposals=np.zeros(KITTI_GRID_HALF.size, bool)).labels
        assert not np.array_equal(none, want)
    assert len(distinct) == 2


def test_missing_query_file_is_reported_and_scored_empty(gt_bag, external_checkpoint, eval_cli, tmp_path):
    frame0 = next(iter(read_bag_frames(gt_bag, require_ground_truth=True)))
    write_query_file(tmp_path / "q" / "sequences" / "00" / "queries" / f"000000.{TAG}", visible_proposals(frame0, 50, 0))
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(external_checkpoint), "--queries", str(tmp_path / "q"),
                   "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 0
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["frames"]["failed"] == 1
    assert any("000005" in p and "query" in p for p in report["problems"]), report["problems"]


def test_predictor_refuses_proposals_it_cannot_use(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint)  # monocular proposals
    image = np.zeros((96, 320, 3), np.uint8)
    K = np.array([[184.0, 0, 160], [0, 184, 48], [0, 0, 1]])
    T = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="monocular"):
        predictor.predict(image, K, T, proposals=np.ones(KITTI_GRID_HALF.size, bool))


def test_queries_recorded_by_convert_kitti_drive_the_bag_evaluation(
    synthetic_kitti, external_checkpoint, eval_cli, tmp_path
):
    from monoocc_ros.data.commands import run_convert
    from monoocc_ros import topics
    import argparse

    queries = tmp_path / "q"
    grids = {f: np.random.default_rng(f).random(KITTI_GRID_HALF.size) < 0.02 for f in (0, 5)}
    for f, grid in grids.items():
        write_query_file(queries / "sequences" / "00" / "queries" / f"{f:06d}.{TAG}", grid)
    bag = tmp_path / "bag"
    args = argparse.Namespace(kitti_root=synthetic_kitti, sequence="00", output=bag, frames=range(0, 10, 5),
                              storage="mcap", image_format="raw", force=False, no_progress=True, queries=queries)
    assert run_convert(args) == 0
    frames = list(read_bag_frames(bag, require_ground_truth=True))
    for f in frames:
        np.testing.assert_array_equal(f.proposals, grids[f.index])
    # the bag alone runs the official protocol, and gives what --queries gives
    for extra, out in (([], "from_bag"), (["--queries", str(queries)], "from_files")):
        assert eval_cli(["eval", str(bag), "--checkpoint", str(external_checkpoint), "--out", str(tmp_path / out),
                         "--no-progress", *extra]) == 0
    a, b = (json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("from_bag", "from_files"))
    assert a["frames"]["failed"] == 0 and a["confusion"] == b["confusion"]
    assert topics.QUERY_PROPOSALS == "/query_proposals"


def test_external_checkpoint_without_proposals_stops_with_one_line(gt_bag, external_checkpoint, eval_cli, tmp_path, capsys):
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(external_checkpoint), "--out", str(tmp_path / "r"),
                   "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--queries" in err and "external" in err, err
