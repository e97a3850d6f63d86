"""Inference backends: one interface; ahead-of-time artefacts cached next to the checkpoint by content."""

from __future__ import annotations

import numpy as np
import pytest

IMAGE_HW = (96, 320)  # as test/perf/conftest.py

# the ONNX export is the slow part: one worker runs these together
pytestmark = pytest.mark.xdist_group("tiny_onnx")


@pytest.fixture(scope="module")
def tiny_checkpoint_file(tiny_model, tmp_path_factory):
    from monoocc_ros.models.checkpoint import make_payload, save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("backend") / "tiny.pt", make_payload(tiny_model, "tiny"))


def test_eager_backend_is_the_predictor(tiny_model, small_frame, tiny_reference):
    from monoocc_ros.inference import build_backend

    backend = build_backend("eager", tiny_model, confidence=True)
    assert backend.backend_name == "eager"
    assert np.array_equal(backend.predict(*small_frame).labels, tiny_reference.labels)
    backend.release()


def test_onnx_backend_is_built_once_next_to_the_checkpoint(tiny_model, tiny_checkpoint_file, small_frame,
                                                           tiny_reference, monkeypatch):
    from monoocc_ros import export
    from monoocc_ros.inference import artefact_path, build_backend

    backend = build_backend("onnxruntime", tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=IMAGE_HW,
                            config_name="tiny")
    path = artefact_path(tiny_checkpoint_file, "onnxruntime", IMAGE_HW, False, ".onnx")
    assert backend.backend_name == "onnxruntime" and path.is_file() and path.parent == tiny_checkpoint_file.parent
    agreement = float((backend.predict(*small_frame).labels == tiny_reference.labels).mean())
    assert agreement >= 0.995, agreement

    def no_export(*args, **kwargs):
        raise AssertionError("a current artefact was exported again")

    monkeypatch.setattr(export, "export_onnx", no_export)
    build_backend("onnxruntime", tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=IMAGE_HW).release()
    # another checkpoint (other bytes) gets another artefact name: stale ones are never used
    other = tiny_checkpoint_file.with_name("other.pt")
    other.write_bytes(tiny_checkpoint_file.read_bytes() + b"\0")
    assert artefact_path(other, "onnxruntime", IMAGE_HW, False, ".onnx").name != path.name


def test_tensorrt_without_cuda_is_one_clear_line(tiny_model, tiny_checkpoint_file):
    import torch

    from monoocc_ros.inference import BackendError, build_backend

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the no-CUDA message is what is tested")
    with pytest.raises(BackendError, match="tensorrt needs a CUDA GPU") as info:
        build_backend("tensorrt", tiny_model, checkpoint_path=tiny_checkpoint_file, device="cuda", image_hw=IMAGE_HW)
    assert "\n" not in str(info.value)


def test_unknown_backend_and_missing_size_are_refused(tiny_model):
    from monoocc_ros.inference import build_backend

    with pytest.raises(ValueError, match="eager, onnxruntime, tensorrt"):
        build_backend("openvino", tiny_model)
    with pytest.raises(ValueError, match="image_hw"):
        build_backend("onnxruntime", tiny_model)
