"""Fixtures of the evaluation tests: a tiny untrained checkpoint and bag rewriting helpers."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest


def _eval_cli(argv: list[str]) -> int:
    from monoocc_ros.cli import eval as eval_cli

    parser = argparse.ArgumentParser(prog="monoocc")
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="session")
def eval_cli():
    """``eval_cli(["eval", ...]) -> exit code``: the eval subcommand as the lead's CLI wires it."""
    return _eval_cli


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained "tiny" student saved as a project checkpoint (fixed seed, deterministic)."""
    import torch

    from monoocc_ros.models.checkpoint import save_checkpoint
    from monoocc_ros.models.config import get_model_config, model_config_to_dict
    from monoocc_ros.models.monoocc import MonoOccStudent

    torch.manual_seed(0)
    cfg = get_model_config("tiny")
    model = MonoOccStudent(cfg).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path,
        {
            "schema": "monoocc_ros/checkpoint/1",
            "config_name": "tiny",
            "model_config": model_config_to_dict(cfg),
            "model": model.state_dict(),
            "meta": {"note": "untrained, evaluation tests"},
        },
    )
    return path


@pytest.fixture(scope="session")
def gt_bag(synthetic_kitti, tmp_path_factory) -> Path:
    """Frames 0 and 5 of the generated sequence: two camera frames, both with ground truth.

    Small, so that offline and live evaluation run the predictor only twice, and with nothing
    between the ground-truth frames that a busy node would have to drop.
    """
    from monoocc_ros.data.converter import convert_sequence

    out = tmp_path_factory.mktemp("bags") / "gt_frames"
    convert_sequence(synthetic_kitti, "00", out, frames=range(0, 10, 5), progress=False)
    return out


Message = tuple[str, int, bytes]


def _rewrite_bag(src: Path, dst: Path, edit: Callable[[str, int, bytes], Iterable[Message]]) -> Path:
    """Copy a bag message by message; ``edit(topic, log_time_ns, raw)`` returns what to write instead.

    Messages are written in the order ``edit`` returns them, with the log times it gives, so a
    test can drop messages, delay them (unsorted stamps) or drop whole topics.
    """
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from monoocc_ros.msgs.bagtypes import typestore

    store = typestore()
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        msgtypes = {conn.topic: conn.msgtype for conn in reader.connections}
        out: list[tuple[int, str, bytes]] = []
        for conn, log_time, raw in reader.messages():
            for topic, t, data in edit(conn.topic, log_time, bytes(raw)):
                out.append((t, topic, data))
        out.sort(key=lambda m: m[0])
        written = {}
        for t, topic, data in out:
            if topic not in written:
                written[topic] = writer.add_connection(topic, msgtypes[topic], typestore=store)
            writer.write(written[topic], t, data)
    return dst


@pytest.fixture(scope="session")
def rewrite_bag():
    """``rewrite_bag(src, dst, edit) -> dst``: copy a bag through an edit function (see above)."""
    return _rewrite_bag


@pytest.fixture(scope="session")
def offline_run(gt_bag, tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """``monoocc eval`` of :func:`gt_bag` with renders and submission export: (report dir, submission dir)."""
    out = tmp_path_factory.mktemp("eval_offline")
    sub = out / "submission"
    rc = _eval_cli([
        "eval", str(gt_bag), "--checkpoint", str(tiny_checkpoint), "--out", str(out / "report"),
        "--render-every", "1", "--export-submission", str(sub), "--no-progress",
    ])
    assert rc == 0
    return out / "report", sub
