"""One interface for every way of running the student: eager PyTorch, ONNX Runtime, TensorRT.

Each backend is built from the model itself and answers ``predict(image, K, T_cam_grid) ->
Prediction``, ``warmup(image_hw)``, ``release()`` and ``backend_name``. Artefacts of the ahead-of-time
backends (an ONNX file, a TensorRT engine) live next to the checkpoint, named by the checkpoint's
hash, the backend and the image size, so a changed checkpoint gets new ones and an unchanged one
reuses them: they are built once (``monoocc export`` or the first start) and never rebuilt while
current.

Example:
    >>> backend = build_backend("onnxruntime", model, checkpoint_path=Path("student.pt"), image_hw=(185, 613))
    >>> backend.backend_name, backend.predict(image, K, T).labels.shape
    ('onnxruntime', (256, 256, 32))
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["BACKENDS", "Backend", "BackendError", "artefact_path", "build_backend"]

BACKENDS = ("eager", "onnxruntime", "tensorrt")


class BackendError(RuntimeError):
    """A backend cannot run here; the text is one line naming the backend and the reason."""


class Backend(Protocol):
    backend_name: str

    def predict(self, image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray): ...

    def warmup(self, image_hw: tuple[int, int], iterations: int = 1) -> None: ...

    def release(self) -> None: ...


def artefact_path(checkpoint_path: Path, backend: str, image_hw: tuple[int, int], confidence: bool, suffix: str) -> Path:
    """``<checkpoint folder>/<stem>.<sha256[:12]>.<backend>.<H>x<W>[.conf]<suffix>``: keyed by content."""
    from monoocc_ros.fileio import sha256_file

    checkpoint_path = Path(checkpoint_path)
    digest = sha256_file(checkpoint_path)[:12]
    h, w = image_hw
    name = f"{checkpoint_path.stem}.{digest}.{backend}.{h}x{w}{'.conf' if confidence else ''}{suffix}"
    return checkpoint_path.with_name(name)


def build_backend(
    name: str,
    model,
    *,
    checkpoint_path: Path | None = None,
    config_name: str = "",
    device: str = "cpu",
    precision: str = "fp32",
    confidence: bool = False,
    channels_last: bool = False,
    image_hw: tuple[int, int] | None = None,
):
    """The backend ``name`` for ``model`` (a MonoOccStudent).

    Args:
        checkpoint_path: where the model came from; the ahead-of-time artefacts are cached next to it.
        image_hw: the fixed image size of the ahead-of-time backends (ignored by eager).

    Raises:
        ValueError: unknown backend, or an option the backend does not take.
        BackendError: the backend cannot run on this machine (no CUDA for TensorRT, no onnxruntime ...).
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "eager":
        from monoocc_ros.predictor import Predictor

        return Predictor(model, device=device, precision=precision, confidence=confidence, channels_last=channels_last)
    if image_hw is None or not all(image_hw) or checkpoint_path is None:
        raise ValueError(f"backend {name} is built for one image size: give image_hw (H, W) and the checkpoint path")
    if name == "tensorrt":
        import torch

        if not str(device).startswith("cuda") or not torch.cuda.is_available():
            raise BackendError("backend tensorrt needs a CUDA GPU and the tensorrt package; this machine has no CUDA device")
    elif precision != "fp32":
        raise ValueError(f"backend onnxruntime runs the fp32 graph; precision {precision!r} is for eager")
    onnx = _onnx_artefact(model, Path(checkpoint_path), tuple(image_hw), confidence, config_name)
    if name == "onnxruntime":
        from monoocc_ros.export import OnnxPredictor

        providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if str(device).startswith("cuda") else ("CPUExecutionProvider",)
        return OnnxPredictor(onnx, providers=providers)
    from monoocc_ros.export import TensorRTPredictor, build_tensorrt_engine

    engine = artefact_path(Path(checkpoint_path), "tensorrt", tuple(image_hw), confidence, f".{precision}.engine")
    if not engine.is_file():
        build_tensorrt_engine(onnx, engine, fp16=precision != "fp32")
    return TensorRTPredictor(engine, device=device)


def _onnx_artefact(model, checkpoint_path: Path, image_hw: tuple[int, int], confidence: bool, config_name: str) -> Path:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise BackendError(f"backend onnxruntime needs the onnxruntime package ({err})") from err
    from monoocc_ros.export import export_onnx

    path = artefact_path(checkpoint_path, "onnxruntime", image_hw, confidence, ".onnx")
    if not path.is_file():  # content-addressed: present means current
        export_onnx(model, path, image_hw=image_hw, with_confidence=confidence, config_name=config_name)
    return path
