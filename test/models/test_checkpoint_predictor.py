"""Checkpoints (atomic save, weights_only load, clear errors), query files, predictor input checks."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch

from monoocc_ros.models.config import get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.models.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    load_checkpoint,
    make_payload,
    save_checkpoint,
)
from monoocc_ros.models.proposals import read_query_file
from monoocc_ros.predictor import Predictor

K_OK = np.array([[184.0, 0.0, 160.0], [0.0, 184.0, 48.0], [0.0, 0.0, 1.0]])
T_OK = np.array([[0.0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MonoOccStudent(get_model_config("tiny")).eval()


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path, tiny_model):
    path = tmp_path / "ckpt" / "student.pt"
    save_checkpoint(path, make_payload(tiny_model, "tiny", meta={"epoch": 3}))
    assert sorted(os.listdir(path.parent)) == ["student.pt"]  # no temporary file left behind
    ckpt = load_checkpoint(path)
    assert ckpt["meta"] == {"epoch": 3}
    model, cfg = build_model_from_checkpoint(ckpt)
    assert cfg == get_model_config("tiny")
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


class _Evil:
    pass


def test_checkpoint_errors_are_clear(tmp_path, tiny_model):
    good = tmp_path / "good.pt"
    save_checkpoint(good, make_payload(tiny_model, "tiny"))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*truncated"):
        load_checkpoint(truncated)
    pickled = tmp_path / "pickled.pt"
    torch.save({"schema": "monoocc_ros/checkpoint/1", "model": {}, "model_config": {}, "x": _Evil()}, pickled)
    with pytest.raises(CheckpointError, match="pickled.pt"):
        load_checkpoint(pickled)
    mmcv = tmp_path / "official.pth"
    torch.save({"meta": {}, "state_dict": {}}, mmcv)
    with pytest.raises(CheckpointError, match="convert-checkpoint"):
        load_checkpoint(mmcv)
    with pytest.raises(CheckpointError, match="model_config"):
        save_checkpoint(tmp_path / "x.pt", {"schema": "s", "config_name": "tiny", "model": {}})
    payload = make_payload(tiny_model, "tiny")
    payload["model_config"]["voxel"]["embed_dim"] = 32
    payload["model_config"]["neck"]["out_channels"] = 32
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model_from_checkpoint(payload)


def test_read_query_file(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((128, 128, 16)) < 0.1
    path = tmp_path / "000000.query"
    np.packbits(mask.reshape(-1)).tofile(path)
    got = read_query_file(path)
    assert got.shape == (128, 128, 16) and got.dtype == bool
    assert np.array_equal(got, mask)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="000000.query"):
        read_query_file(path)


@pytest.mark.parametrize(
    "image, K, T, match",
    [
        (np.zeros((96, 320), np.uint8), K_OK, T_OK, "HxWx3"),
        (np.zeros((96, 320, 4), np.uint8), K_OK, T_OK, "HxWx3"),
        (np.zeros((96, 320, 3), np.float32), K_OK, T_OK, "uint8"),
        (np.zeros((96, 320, 3), np.uint8), np.where(np.eye(3) > 0, np.nan, K_OK), T_OK, "K contains NaN"),
        (np.zeros((96, 320, 3), np.uint8), K_OK, T_OK * np.array([[2.0], [1], [1], [1]]), "T_cam_grid is not rigid"),
        (np.zeros((96, 320, 3), np.uint8), K_OK, T_OK[:3], "T_cam_grid must be 4x4"),
    ],
)
def test_predictor_rejects_bad_input_before_running_the_model(monkeypatch, tiny_model, image, K, T, match):
    predictor = Predictor(tiny_model)
    calls = []
    monkeypatch.setattr(predictor.model, "predict", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=match):
        predictor.predict(image, K, T)
    assert calls == []


def test_predictor_options_and_output(tiny_model):
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        Predictor(tiny_model, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        Predictor(tiny_model, precision="int8")
    predictor = Predictor(tiny_model, confidence=True)
    image = np.random.default_rng(0).integers(0, 255, (96, 320, 3), dtype=np.uint8)
    pred = predictor.predict(image, K_OK, T_OK)
    assert pred.labels.shape == (256, 256, 32) and pred.labels.dtype == np.uint8
    assert pred.labels.max() < 20
    assert pred.confidence.shape == (256, 256, 32) and pred.confidence.dtype == np.uint8
    assert int(pred.confidence.min()) >= 255 // 20
    assert {"backbone_neck", "proposals", "cross_attention", "self_attention", "ica", "head"} <= set(pred.timings_ms)
    predictor.release()
    with pytest.raises(RuntimeError, match="released"):
        predictor.predict(image, K_OK, T_OK)


def test_convert_command_parses():
    from monoocc_ros.cli.models import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert-checkpoint", "in.pth", "out.pt", "--kind", "monoocc", "--proposal-mode", "external"])
    assert (args.src, args.dst, args.kind, args.proposal_mode) == ("in.pth", "out.pt", "monoocc", "external")
    assert callable(args.func)


def test_checkpoint_stored_before_grid_labels_and_trunk_depth_loads(tmp_path, tiny_model):
    """Checkpoints written before ModelConfig had ``grid``, ``labels`` and ``trunk.depth`` load as they were."""
    payload = make_payload(tiny_model, "tiny")
    old = payload["model_config"]
    for key in ("grid", "labels"):
        del old[key]
    del old["trunk"]["depth"]
    old["trunk"]["blocks"] = list(old["trunk"]["blocks"])  # lists, as YAML-made configs stored them
    path = save_checkpoint(tmp_path / "old.pt", payload)
    model, cfg = build_model_from_checkpoint(load_checkpoint(path))
    assert cfg == get_model_config("tiny")
    assert cfg.grid.size == (256, 256, 32) and cfg.labels == "semantic_kitti"
    image = torch.rand(1, 3, 96, 320)
    K, T = torch.from_numpy(K_OK).float()[None], torch.from_numpy(T_OK).float()[None]
    labels, _ = model.eval().predict(image, K, T)
    assert torch.equal(labels, tiny_model.predict(image, K, T)[0])


def test_checkpoint_with_a_bad_stored_config_is_a_checkpoint_error(tmp_path, tiny_model):
    payload = make_payload(tiny_model, "tiny")
    payload["model_config"]["grid"]["size"] = [256, 256]
    path = save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match=r"grid\.size"):
        build_model_from_checkpoint(load_checkpoint(path))
