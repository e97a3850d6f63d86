"""Hand-built prediction / ground-truth pairs give the expected numbers in the written report."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from monoocc_ros.cli import eval as eval_cli
from monoocc_ros.evaluation.report import (
    build_report,
    compare_table,
    load_report,
    markdown_table,
    write_report,
)
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.metrics import SSCMetrics

CAR, ROAD, BUILDING = 1, 9, 13
PAPER_HEADER = (
    "road sidewalk parking other-ground building car truck bicycle motorcycle other-vehicle "
    "vegetation trunk terrain person bicyclist motorcyclist fence pole traffic-sign"
).split()


def hand_built_pair() -> tuple[np.ndarray, np.ndarray]:
    """10 car, 5 road and 3 invalid ground-truth voxels; see the expected counts in the test."""
    gt = np.zeros(KITTI_GRID.size, np.uint8)
    pred = np.zeros(KITTI_GRID.size, np.uint8)
    gt[10, 10, 0:10] = CAR
    pred[10, 10, 0:8] = CAR  # 8 car TP
    pred[10, 10, 8:10] = ROAD  # 2 car FN / road FP (still completion TP)
    gt[20, 20, 0:5] = ROAD
    pred[20, 20, 0:5] = ROAD  # 5 road TP
    pred[30, 30, 0:4] = CAR  # 4 car FP on empty voxels
    gt[40, 40, 0:3] = 255
    pred[40, 40, 0:3] = BUILDING  # invalid ground truth: not evaluated
    return pred, gt


def report_for(frames, tmp_path):
    metrics = SSCMetrics()
    for pred, gt in frames:
        metrics.update(pred, gt)
    report = build_report(
        metrics.compute(), metrics.confusion, mode="offline", frames={"evaluated": len(frames)},
        latency_ms={"total": [10.0, 20.0, 30.0, 40.0]}, device="cpu", precision="fp32",
        checkpoint={"path": "x.pt", "sha256": "ab" * 32}, bag="bag", problems=["p1"],
    )
    paths = write_report(tmp_path, report)
    return json.loads(paths["json"].read_text()), paths


def test_hand_built_pair_gives_expected_metrics_in_json(tmp_path):
    data, paths = report_for([hand_built_pair()], tmp_path)
    m = data["metrics"]
    assert m["iou"]["car"] == pytest.approx(8 / (8 + 4 + 2))
    assert m["iou"]["road"] == pytest.approx(5 / (5 + 2 + 0))
    # Building only appears on invalid voxels: absent from both, so 0 and still in the mean.
    assert m["iou"]["building"] == 0.0
    assert m["miou"] == pytest.approx((8 / 14 + 5 / 7) / 19)
    assert m["completion_iou"] == pytest.approx(15 / 19)
    assert m["precision"] == pytest.approx(15 / 19)
    assert m["recall"] == pytest.approx(1.0)
    assert m["iou"]["empty"] == pytest.approx((KITTI_GRID.num_voxels - 3 - 15 - 4) / (KITTI_GRID.num_voxels - 3 - 15))
    C = np.asarray(data["confusion"])
    assert C.sum() == KITTI_GRID.num_voxels - 3 and C[CAR, 0] == 4 and C[ROAD, CAR] == 2
    assert data["frames"] == {"evaluated": 1}
    assert data["latency_ms"]["total"]["p50"] == pytest.approx(25.0)
    assert data["latency_ms"]["total"]["p99"] == pytest.approx(39.7)
    assert data["checkpoint"]["sha256"] == "ab" * 32 and data["problems"] == ["p1"]
    assert data["device"] == "cpu" and data["precision"] == "fp32"
    assert paths["bar_chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_report(paths["json"])["metrics"] == m


def test_all_empty_frame_is_defined_and_accumulates_globally(tmp_path):
    empty = np.zeros(KITTI_GRID.size, np.uint8)
    data, _ = report_for([(empty, empty)], tmp_path / "a")
    m = data["metrics"]
    assert m["completion_iou"] == 0.0 and m["miou"] == 0.0
    assert m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["iou"]["empty"] == pytest.approx(1.0)
    # An empty frame next to the hand-built one changes only the empty class (global matrix,
    # not a mean of per-frame scores).
    both, _ = report_for([(empty, empty), hand_built_pair()], tmp_path / "b")
    alone, _ = report_for([hand_built_pair()], tmp_path / "c")
    for key in ("completion_iou", "miou", "precision", "recall"):
        assert both["metrics"][key] == pytest.approx(alone["metrics"][key])
    # A prediction on an all-empty frame is all false positives.
    noisy = empty.copy()
    noisy[0, 0, 0:7] = CAR
    fp, _ = report_for([(noisy, empty)], tmp_path / "d")
    assert fp["metrics"]["completion_iou"] == 0.0 and fp["metrics"]["iou"]["car"] == 0.0
    assert np.asarray(fp["confusion"])[CAR, 0] == 7


def test_markdown_table_has_paper_table_i_layout(tmp_path):
    data, paths = report_for([hand_built_pair()], tmp_path)
    lines = paths["table"].read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Method", "IoU", "mIoU", *PAPER_HEADER]
    assert len(lines) == 3
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[0] == "MonoOcc offline (every frame)"  # a live run's row reads differently
    assert row[1] == f"{100 * 15 / 19:.2f}" and row[2] == f"{100 * (8 / 14 + 5 / 7) / 19:.2f}"
    values = dict(zip(header, row))
    assert values["road"] == "71.43" and values["car"] == "57.14" and values["building"] == "0.00"
    two = markdown_table([("a", data), ("b", data)]).splitlines()
    assert len(two) == 4 and two[3].startswith("| b |")


def test_compare_prints_side_by_side_table(tmp_path, capsys):
    a, pa = report_for([hand_built_pair()], tmp_path / "a")
    pred, gt = hand_built_pair()
    pred[30, 30, 0:4] = 0  # no false positives any more
    b, pb = report_for([(pred, gt)], tmp_path / "b")
    table = compare_table(a, b, names=("old", "new"))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()}
    assert rows["metric (%)"][1:] == ["old", "new", "new - old"]
    assert rows["car"][1:] == ["57.14", "80.00", "+22.86"]
    assert rows["road"][3] == "+0.00"
    assert rows["IoU"][2] == "100.00"
    assert list(rows)[6:25] == PAPER_HEADER

    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--compare", str(pa["json"]), str(pb["json"])])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| car | 57.14 | 80.00 | +22.86 |" in out

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/else"}')
    args = parser.parse_args(["eval", "--compare", str(pa["json"]), str(bad)])
    assert args.func(args) == 2
    assert "bad.json: not an evaluation report" in capsys.readouterr().err


def test_chart_and_table_say_live_or_offline_and_how_many_frames(tmp_path):
    from PIL import Image

    offline, paths = report_for([hand_built_pair()] * 3, tmp_path / "offline")
    live = {**offline, "mode": "live",
            "frames": {"ground_truth": 20, "evaluated": 3, "missed": 17, "ground_truth_not_received": 0}}
    live_paths = write_report(tmp_path / "live", live)
    title = Image.open(paths["bar_chart"]).text["Title"]
    assert title.startswith("MonoOcc offline (every frame): per-class IoU") and "3 frames scored" in title
    live_title = Image.open(live_paths["bar_chart"]).text["Title"]
    assert live_title.startswith("MonoOcc live (node output): per-class IoU")
    assert "3 of 20 ground-truth frames scored, 17 missed (scored as empty)" in live_title
    rows = [paths["table"].read_text().splitlines()[2], live_paths["table"].read_text().splitlines()[2]]
    assert rows[0].split("|")[1].strip() != rows[1].split("|")[1].strip()
