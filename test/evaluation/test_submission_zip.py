"""The benchmark zip: sequences 11-21 in the layout ``validate_submission.py --task completion`` checks."""

from __future__ import annotations

import stat
import zipfile

import numpy as np
import pytest

from monoocc_ros.evaluation.submission import BENCHMARK_SEQUENCES, write_prediction, write_submission_zip
from monoocc_ros.grid import KITTI_GRID


def _official_structure_problems(zip_path, expected: dict[str, list[int]]) -> list[str]:
    """The checks of semantic-kitti-api's validator (completion task) that need no dataset."""
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
    directories = {i.filename for i in infos if i.filename.endswith("/")}
    files = {i.filename: i for i in infos if not i.filename.endswith("/")}
    files.pop("description.txt", None)
    for d in ["sequences/"] + [f"sequences/{s}/{sub}" for s in range(11, 22) for sub in ("", "predictions/")]:
        if d not in directories:
            problems.append(f"directory {d} missing")
    needed = {f"sequences/{s}/predictions/{f:06d}.label" for s, frames in expected.items() for f in frames}
    for name in sorted(needed):
        if name not in files:
            problems.append(f"{name} missing")
        elif files[name].file_size != 2 * KITTI_GRID.num_voxels:
            problems.append(f"{name} wrong size")
    problems += [f"unneeded {n}" for n in sorted(set(files) - needed)]
    return problems


def test_zip_holds_sequences_11_to_21_only_and_names_the_missing_ones(tmp_path):
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    labels[3, 4, 5] = 9
    root = tmp_path / "sub"
    for seq, frame in (("11", 0), ("11", 5), ("21", 10), ("08", 0)):
        write_prediction(root, seq, frame, labels)
    packed = write_submission_zip(root, tmp_path / "out" / "monoocc.zip", description="MonoOcc-S test")
    assert packed.predictions == {"11": 2, "21": 1}
    assert packed.missing == tuple(f"{s}" for s in range(12, 21)) and packed.left_out == ("08",)
    assert _official_structure_problems(packed.path, {"11": [0, 5], "21": [10]}) == []
    with zipfile.ZipFile(packed.path) as zf:
        raw = np.frombuffer(zf.read("sequences/11/predictions/000005.label"), "<u2")
        assert zf.read("description.txt") == b"MonoOcc-S test"
    assert raw[(3 * 256 + 4) * 32 + 5] == 40  # road, raw id
    assert stat.S_IMODE(packed.path.stat().st_mode) == 0o666 & ~_umask()
    assert BENCHMARK_SEQUENCES[0] == "11" and BENCHMARK_SEQUENCES[-1] == "21"


def _umask() -> int:
    from monoocc_ros.fileio import current_umask

    return current_umask()


def test_bad_zip_name_and_bad_files_are_refused(tmp_path):
    root = tmp_path / "sub"
    write_prediction(root, "12", 0, np.zeros(KITTI_GRID.size, np.uint8))
    with pytest.raises(ValueError, match=r"only files ending in \.zip"):
        write_submission_zip(root, tmp_path / "sub.tar")
    bad = root / "sequences" / "12" / "predictions" / "000005.label"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="000005.label: 10 bytes"):
        write_submission_zip(root, tmp_path / "sub.zip")
    assert not (tmp_path / "sub.zip").exists()


def test_eval_says_where_it_wrote_and_packs_the_zip(gt_bag, tiny_checkpoint, eval_cli, tmp_path, capsys):
    sub, zip_path = tmp_path / "sub", tmp_path / "sub.zip"
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "report"),
                   "--export-submission", str(sub), "--sequence", "11", "--submission-zip", str(zip_path),
                   "--no-progress"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert f"submission: 2 predictions in {sub / 'sequences' / '11' / 'predictions'}" in out
    assert f"submission zip: {zip_path} (predictions per sequence 11: 2)" in out
    assert "no predictions for sequences 12, 13" in err
    assert _official_structure_problems(zip_path, {"11": [0, 5]}) == []
    # packing alone, without BAG, e.g. after exporting every test sequence
    assert eval_cli(["eval", "--export-submission", str(sub), "--submission-zip", str(tmp_path / "again.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "again.zip") as again, zipfile.ZipFile(zip_path) as first:
        assert again.namelist() == first.namelist()
    assert eval_cli(["eval", "--submission-zip", str(tmp_path / "x.zip")]) == 2
    assert "--export-submission" in capsys.readouterr().err
