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
    # an artefact of an older format under the same name is stale: built again, not loaded
    monkeypatch.undo()
    path.write_bytes(b"not this format")
    stale = build_backend("onnxruntime", tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=IMAGE_HW)
    assert float((stale.predict(*small_frame).labels == tiny_reference.labels).mean()) >= 0.995
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

    with pytest.raises(ValueError, match="eager, onnxruntime, tensorrt, aotinductor"):
        build_backend("openvino", tiny_model)
    with pytest.raises(ValueError, match="image_hw"):
        build_backend("onnxruntime", tiny_model)


@pytest.mark.parametrize("backend, options, words", [
    ("onnxruntime", {"precision": "bf16"}, ["onnxruntime", "fp32", "bf16"]),
    ("eager", {"precision": "fp16"}, ["eager", "fp32 or bf16", "fp16"]),
    ("aotinductor", {"precision": "fp16"}, ["aotinductor", "fp16"]),
    ("onnxruntime", {"channels_last": True}, ["channels_last", "onnxruntime"]),
])
def test_unsupported_combinations_are_one_line(tiny_model, tiny_checkpoint_file, backend, options, words):
    from monoocc_ros.inference import build_backend

    with pytest.raises(ValueError) as info:
        build_backend(backend, tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=IMAGE_HW, **options)
    text = str(info.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_aotinductor_is_never_compiled_by_build_backend(tiny_model, tiny_checkpoint_file):
    """A missing package is one line naming the `monoocc export` command, not minutes of compiling."""
    from monoocc_ros.inference import BackendError, backend_artefact, build_backend

    with pytest.raises(BackendError) as info:
        build_backend("aotinductor", tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=(64, 96))
    text = str(info.value)
    assert "\n" not in text and "monoocc export" in text and "--image-hw 64x96" in text, text
    assert not backend_artefact("aotinductor", tiny_checkpoint_file, (64, 96), "fp32").exists()


@pytest.mark.slow
def test_aotinductor_backend_is_built_by_export_and_loaded_without_compiling(
        tiny_model, tiny_checkpoint_file, small_frame, tiny_reference, monkeypatch):
    from monoocc_ros import export
    from monoocc_ros.inference import backend_artefact, build_backend, export_backend

    path = export_backend("aotinductor", tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=IMAGE_HW)
    assert path == backend_artefact("aotinductor", tiny_checkpoint_file, IMAGE_HW, "fp32")
    assert path.parent == tiny_checkpoint_file.parent and path.with_name(path.name + ".json").is_file()

    def no_compile(*args, **kwargs):
        raise AssertionError("the backend compiled at load time")

    monkeypatch.setattr(export, "export_aotinductor", no_compile)
    backend = build_backend("aotinductor", tiny_model, checkpoint_path=tiny_checkpoint_file, image_hw=IMAGE_HW)
    assert backend.backend_name == "aotinductor"
    assert type(backend.model.backbone).__name__ == "CompiledStage"
    # each compiled stage is its module on a new input (not just labels that happen to agree)
    import torch

    from monoocc_ros.inference.stages import dense_stages

    torch.manual_seed(1)
    compiled = {"trunk": backend.model.backbone, "qpn": backend.model.proposals.qpn}
    for name, (module, example) in dense_stages(tiny_model, IMAGE_HW).items():
        x = torch.rand_like(example)
        with torch.no_grad():
            assert torch.allclose(compiled[name](x), module(x), atol=1e-4), name
    agreement = float((backend.predict(*small_frame).labels == tiny_reference.labels).mean())
    assert agreement >= 0.995, agreement
    backend.release()
