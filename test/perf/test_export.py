"""ONNX export of the dense stages: the onnxruntime predictor (the model with those stages swapped for their
graphs) reproduces the eager fp32 labels on a real frame."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

# one worker exports the model once for all these tests
pytestmark = pytest.mark.xdist_group("tiny_onnx")


def test_onnx_labels_match_eager_fp32(tiny_model, tiny_onnx, small_frame, tiny_reference):
    from monoocc_ros.inference.runtimes import OnnxPredictor

    image, K, T = small_frame
    reference = tiny_reference
    predictor = OnnxPredictor(tiny_onnx, tiny_model)
    # built from the model itself: its dense modules are the graphs, nothing else is replaced
    assert type(predictor.model.backbone).__name__ == "CompiledStage"
    assert type(predictor.model.proposals.qpn).__name__ == "CompiledStage"
    assert predictor.model.occupancy is not tiny_model.occupancy and tiny_model.backbone is not predictor.model.backbone
    onnx = predictor.predict(image, K, T)
    assert onnx.labels.shape == (256, 256, 32) and onnx.labels.dtype == np.uint8
    agreement = float((onnx.labels == reference.labels).mean())
    assert agreement >= 0.995, f"ONNX/eager label agreement {agreement:.5f}"
    # the frame must exercise more than one class, else agreement says little
    assert len(np.unique(reference.labels)) > 1
    assert onnx.confidence is not None
    differs = np.abs(onnx.confidence.astype(np.int16) - reference.confidence.astype(np.int16))
    assert np.mean(differs <= 1) >= 0.995


def test_each_onnx_stage_computes_its_module(tiny_model, tiny_onnx):
    """Every graph is its module on a new input: a stage traced into a constant (the proposal
    head's in-place inference path once was) fails here even where the labels happen to agree."""
    import onnxruntime as ort
    import torch

    from monoocc_ros.inference.stages import dense_stages, stage_path

    torch.manual_seed(1)
    for name, (module, example) in dense_stages(tiny_model, (96, 320)).items():
        x = torch.rand_like(example)
        session = ort.InferenceSession(str(stage_path(tiny_onnx, name, ".onnx")), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input"], name
        with torch.no_grad():
            expected = module(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), name


def test_onnx_predictor_handles_other_cameras(tiny_model, tiny_onnx, small_frame):
    """A second calibration (the warm-up camera, other query counts) runs through the same graphs
    and agrees with eager there too (a whole-model trace froze the first camera's query counts)."""
    from monoocc_ros.inference.runtimes import OnnxPredictor
    from monoocc_ros.predictor import Predictor

    predictor = OnnxPredictor(tiny_onnx, tiny_model)
    predictor.warmup()
    image, K, T = small_frame
    shifted = T.copy()
    shifted[2, 3] += 1.5  # camera 1.5 m further back: more voxels in view
    labels = predictor.predict(image, K, shifted).labels
    assert labels.shape == (256, 256, 32) and labels.max() < 20
    eager = Predictor(tiny_model).predict(image, K, shifted).labels
    assert float((labels == eager).mean()) >= 0.995


def test_export_metadata_round_trips(tiny_model, tiny_onnx):
    from monoocc_ros.export import read_export_metadata
    from monoocc_ros.models.config import model_config_from_dict

    meta = read_export_metadata(tiny_onnx)
    assert meta["config_name"] == "tiny"
    assert tuple(meta["image_hw"]) == (96, 320)
    assert meta["with_confidence"] is True
    assert model_config_from_dict(meta["model_config"]) == tiny_model.cfg
    # the dense stages, each its own graph beside the trunk's file
    assert meta["stages"] == ["trunk", "qpn"] and meta["stage"] == "trunk"
    assert read_export_metadata(tiny_onnx.with_name("tiny.qpn.onnx"))["stage"] == "qpn"


def test_onnx_predictor_rejects_other_image_size(tiny_model, tiny_onnx, small_frame):
    from monoocc_ros.inference.runtimes import OnnxPredictor

    image, K, T = small_frame
    predictor = OnnxPredictor(tiny_onnx, tiny_model)
    with pytest.raises(ValueError, match=r"exported for 320x96"):
        predictor.predict(np.zeros((100, 320, 3), np.uint8), K, T)
    with pytest.raises(ValueError, match="T_cam_grid"):
        predictor.predict(image, K, np.full((4, 4), np.nan))
    predictor.release()
    with pytest.raises(RuntimeError, match="released"):
        predictor.predict(image, K, T)


def test_onnx_predictor_runs_a_camera_seeing_no_voxel_as_eager(tiny_model, tiny_onnx, small_frame):
    """The old whole-path graph could not express an empty query set and refused this camera; the
    staged one runs the model's own fallback (every voxel queried), label for label."""
    from monoocc_ros.inference.runtimes import OnnxPredictor
    from monoocc_ros.predictor import Predictor

    image, K, T = small_frame
    # turned 180 degrees about the vertical: looks backwards, away from the grid (x >= 0)
    backwards = T @ np.diag([-1.0, -1.0, 1.0, 1.0])
    labels = OnnxPredictor(tiny_onnx, tiny_model).predict(image, K, backwards).labels
    assert float((labels == Predictor(tiny_model).predict(image, K, backwards).labels).mean()) >= 0.995


def test_metadata_missing_is_a_clear_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from monoocc_ros.export import read_export_metadata

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(plain))
    with pytest.raises(ValueError, match="plain.onnx"):
        read_export_metadata(plain)
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        read_export_metadata(tmp_path / "absent.onnx")


def test_export_cli_parses():
    from monoocc_ros.cli.models import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "--config", "tiny", "-o", "x.onnx", "--image-hw", "96x320", "--confidence"])
    assert args.config == "tiny" and args.image_hw == (96, 320) and args.confidence and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "-o", "x.onnx"])  # needs --checkpoint or --config
    # without --output a checkpoint's artefact goes to the cache the node reads
    args = parser.parse_args(["export", "--checkpoint", "s.pt", "--backend", "aotinductor", "--precision", "bf16",
                              "--image-hw", "185x613"])
    assert args.output is None and (args.backend, args.precision, args.image_hw) == ("aotinductor", "bf16", (185, 613))


def test_export_cli_refusals_are_one_line(tmp_path, capsys):
    from monoocc_ros import cli

    # a random model has no checkpoint hash to key the cache by
    assert cli.main(["export", "--config", "tiny", "--backend", "aotinductor"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--output" in err, err
    assert cli.main(["export", "--config", "tiny", "-o", str(tmp_path / "x.pt2"), "--backend", "onnxruntime",
                     "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "onnxruntime" in err and "fp32" in err, err
    assert not (tmp_path / "x.pt2").exists()


def test_export_cli_builds_the_cache_once(tiny_model, tmp_path, capsys):
    from monoocc_ros import cli
    from monoocc_ros.inference import backend_artefact
    from monoocc_ros.models.checkpoint import make_payload, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.pt", make_payload(tiny_model, "tiny"))
    argv = ["export", "--checkpoint", str(ckpt), "--image-hw", "64x96"]
    assert cli.main(argv) == 0
    path = backend_artefact("onnxruntime", ckpt, (64, 96), "fp32")
    assert path.is_file() and path.with_name(path.name[: -len(".onnx")] + ".qpn.onnx").is_file()
    assert cli.main(argv) == 0 and "is current" in capsys.readouterr().out  # not built again
