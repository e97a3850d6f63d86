"""ONNX export: the onnxruntime predictor reproduces the eager fp32 labels on a real frame."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

# one worker exports the model once for all these tests
pytestmark = pytest.mark.xdist_group("tiny_onnx")


def test_onnx_labels_match_eager_fp32(tiny_onnx, small_frame, tiny_reference):
    from monoocc_ros.export import OnnxPredictor

    image, K, T = small_frame
    reference = tiny_reference
    onnx = OnnxPredictor(tiny_onnx).predict(image, K, T)
    assert onnx.labels.shape == (256, 256, 32) and onnx.labels.dtype == np.uint8
    agreement = float((onnx.labels == reference.labels).mean())
    assert agreement >= 0.995, f"ONNX/eager label agreement {agreement:.5f}"
    # the frame must exercise more than one class, else agreement says little
    assert len(np.unique(reference.labels)) > 1
    assert onnx.confidence is not None
    differs = np.abs(onnx.confidence.astype(np.int16) - reference.confidence.astype(np.int16))
    assert np.mean(differs <= 1) >= 0.995


def test_onnx_predictor_handles_other_cameras(tiny_onnx, small_frame):
    """A second calibration (the warm-up camera, other query counts) runs through the same graph."""
    from monoocc_ros.export import OnnxPredictor

    predictor = OnnxPredictor(tiny_onnx)
    predictor.warmup()
    image, K, T = small_frame
    shifted = T.copy()
    shifted[2, 3] += 1.5  # camera 1.5 m further back: more voxels in view
    labels = predictor.predict(image, K, shifted).labels
    assert labels.shape == (256, 256, 32) and labels.max() < 20


def test_export_metadata_round_trips(tiny_model, tiny_onnx):
    from monoocc_ros.export import read_export_metadata
    from monoocc_ros.models.config import model_config_from_dict

    meta = read_export_metadata(tiny_onnx)
    assert meta["config_name"] == "tiny"
    assert tuple(meta["image_hw"]) == (96, 320)
    assert meta["with_confidence"] is True
    assert model_config_from_dict(meta["model_config"]) == tiny_model.cfg


def test_onnx_predictor_rejects_other_image_size(tiny_onnx, small_frame):
    from monoocc_ros.export import OnnxPredictor

    image, K, T = small_frame
    predictor = OnnxPredictor(tiny_onnx)
    with pytest.raises(ValueError, match=r"exported for 320x96"):
        predictor.predict(np.zeros((100, 320, 3), np.uint8), K, T)
    with pytest.raises(ValueError, match="T_cam_grid"):
        predictor.predict(image, K, np.full((4, 4), np.nan))
    predictor.release()
    with pytest.raises(RuntimeError, match="released"):
        predictor.predict(image, K, T)


def test_onnx_predictor_rejects_camera_seeing_no_voxel(tiny_onnx, small_frame):
    from monoocc_ros.export import OnnxPredictor

    image, K, T = small_frame
    # turned 180 degrees about the vertical: looks backwards, away from the grid (x >= 0)
    backwards = T @ np.diag([-1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no voxel"):
        OnnxPredictor(tiny_onnx).predict(image, K, backwards)


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
    from monoocc_ros.models.commands import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "--config", "tiny", "-o", "x.onnx", "--image-hw", "96x320", "--confidence"])
    assert args.config == "tiny" and args.image_hw == (96, 320) and args.confidence and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "-o", "x.onnx"])  # needs --checkpoint or --config
