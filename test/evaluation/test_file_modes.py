"""What the project writes is readable by other users: the umask decides the mode, as for open().

Atomic writes go through ``tempfile.mkstemp``, whose files are 0600; each writer of the project
(scene generator, converter, rosbags' storage, evaluation, renders, submission, checkpoints) is
checked here under umask 022 (files 0644, folders 0755) and the helper under two other umasks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from monoocc_ros.fileio import atomic_write, current_umask, write_bytes_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _modes(root: Path) -> dict[str, str]:
    """Relative path -> octal permission bits of every file and folder under ``root``."""
    return {
        str(p.relative_to(root)) + ("/" if p.is_dir() else ""): oct(stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
    }


def _wrong(modes: dict[str, str], file_mode: int, dir_mode: int) -> dict[str, str]:
    return {p: m for p, m in modes.items() if m != oct(dir_mode if p.endswith("/") else file_mode)}


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask(umask, tmp_path, mask):
    umask(mask)
    assert current_umask() == mask
    write_bytes_atomic(tmp_path / "a" / "b.bin", b"x")
    write_text_atomic(tmp_path / "a" / "c.txt", "x")
    write_json_atomic(tmp_path / "d.json", {"x": 1})
    with atomic_write(tmp_path / "e.bin") as f:
        f.write(b"x")
    assert _wrong(_modes(tmp_path), 0o666 & ~mask, 0o777 & ~mask) == {}


@pytest.mark.slow
def test_generated_data_bag_evaluation_and_checkpoint_are_0644(umask, tmp_path):
    import torch

    from monoocc_ros import cli
    from monoocc_ros.data.converter import convert_sequence
    from monoocc_ros.data.scene import SceneConfig, generate_sequence
    from monoocc_ros.models.checkpoint import save_checkpoint
    from monoocc_ros.models.config import get_model_config, model_config_to_dict
    from monoocc_ros.models.monoocc import MonoOccStudent

    umask(0o022)
    kitti, bag, out = tmp_path / "kitti", tmp_path / "bag", tmp_path / "eval"
    generate_sequence(kitti, SceneConfig(num_frames=1, seed=3, lidar_azimuth_steps=128), sequence="00")
    convert_sequence(kitti, "00", bag, progress=False)
    torch.manual_seed(0)
    cfg = get_model_config("tiny")
    ckpt = save_checkpoint(tmp_path / "ckpt" / "tiny.pt", {
        "schema": "monoocc_ros/checkpoint/1", "config_name": "tiny", "model_config": model_config_to_dict(cfg),
        "model": MonoOccStudent(cfg).state_dict(), "meta": {},
    })
    assert cli.main(["eval", str(bag), "--checkpoint", str(ckpt), "--out", str(out / "report"),
                     "--render-every", "1", "--export-submission", str(out / "submission"), "--no-progress"]) == 0

    modes = _modes(tmp_path)
    # every kind of output is there, so the check below covers them all
    for expected in ("kitti/sequences/00/image_2/000000.png", "kitti/sequences/00/voxels/000000.label",
                     "bag/metadata.yaml", "bag/bag.mcap", "ckpt/tiny.pt", "eval/report/metrics.json",
                     "eval/report/table.md", "eval/report/class_iou.png", "eval/report/frames.jsonl",
                     "eval/report/renders/000000.png", "eval/submission/sequences/00/predictions/000000.label"):
        assert expected in modes, sorted(modes)
    assert _wrong(modes, 0o644, 0o755) == {}
