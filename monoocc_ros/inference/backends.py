"""One interface for every way of running the student: eager PyTorch, ONNX Runtime, TensorRT, AOTInductor.

Each backend is built from the model itself and answers ``predict(image, K, T_cam_grid) ->
Prediction``, ``warmup(image_hw)``, ``release()`` and ``backend_name``. The ahead-of-time backends
compile only the model's dense stages (:mod:`.stages`) and run the rest on the model's own path.

Their artefacts live next to the checkpoint, named by the checkpoint's hash, the backend, the image
size and (AOTInductor, TensorRT) the precision, so a changed checkpoint gets new ones and an
unchanged one reuses them; they are built once and never rebuilt while current:

| backend | precision | built by | at node start when missing |
|---|---|---|---|
| eager | fp32, bf16 (CPU/CUDA), fp16 (CUDA) | nothing to build | - |
| onnxruntime | fp32 | ``monoocc export`` or the first start (seconds) | exported |
| tensorrt | fp16, fp32 (CUDA) | ``monoocc export --backend tensorrt`` or the first start | built |
| aotinductor | fp32, bf16 (CPU); + fp16 (CUDA) | ``monoocc export --backend aotinductor`` (minutes) | refused, one line |

AOTInductor compiles C++ for minutes, so a missing package is never compiled at start-up: the node
refuses to configure with one line naming the ``monoocc export`` command (a silent fall-back to
eager would run a different speed than the operator asked for).

Example:
    >>> backend = build_backend("onnxruntime", model, checkpoint_path=Path("student.pt"), image_hw=(185, 613))
    >>> backend.backend_name, backend.predict(image, K, T).labels.shape
    ('onnxruntime', (256, 256, 32))
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from monoocc_ros.errors import one_line

__all__ = ["BACKENDS", "Backend", "BackendError", "artefact_path", "backend_artefact", "build_backend",
           "check_backend_options", "export_backend"]

BACKENDS = ("eager", "onnxruntime", "tensorrt", "aotinductor")
# precisions each backend runs, per device type
_PRECISIONS = {
    "eager": {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")},
    "onnxruntime": {"cpu": ("fp32",), "cuda": ("fp32",)},
    "tensorrt": {"cpu": (), "cuda": ("fp16", "fp32")},
    "aotinductor": {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")},
}


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


def backend_artefact(name: str, checkpoint_path: Path, image_hw: tuple[int, int], precision: str) -> Path:
    """The cached artefact of backend ``name`` (the trunk stage's file; the other stages sit beside it)."""
    if name == "onnxruntime":
        suffix = ".onnx"  # one fp32 graph serves every precision that onnxruntime runs
    elif name == "tensorrt":
        suffix = f".{precision}.engine"
    else:
        suffix = f".{precision}.pt2"
    return artefact_path(Path(checkpoint_path), name, tuple(image_hw), False, suffix)


def check_backend_options(name: str, device: str = "cpu", precision: str = "fp32", channels_last: bool = False) -> None:
    """Refuse a combination the backend cannot run, in one line naming it (before any loading).

    Raises:
        ValueError: unknown backend, or a precision / layout the backend does not take.
        BackendError: the backend needs hardware this machine lacks (TensorRT without CUDA).
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if name == "tensorrt":
        import torch

        if kind != "cuda" or not torch.cuda.is_available():
            raise BackendError("backend tensorrt needs a CUDA GPU and the tensorrt package; this machine has no CUDA device")
    allowed = _PRECISIONS[name][kind]
    if precision not in allowed:
        why = " (fp16 needs a CUDA device)" if precision == "fp16" and kind == "cpu" else ""
        raise ValueError(f"backend {name} on {kind} runs precision {' or '.join(allowed)}, not {precision!r}{why}")
    if channels_last and name != "eager":
        raise ValueError(f"channels_last is an option of the eager backend; {name} fixes its layout when it is built")


def export_backend(name: str, model, *, checkpoint_path: Path, image_hw: tuple[int, int], precision: str = "fp32",
                   config_name: str = "", output: Path | None = None) -> Path:
    """Build the artefact of an ahead-of-time backend (``monoocc export``); returns its path.

    ``output`` overrides the cache path next to the checkpoint.
    """
    from monoocc_ros import export

    path = Path(output) if output is not None else backend_artefact(name, checkpoint_path, image_hw, precision)
    if name == "onnxruntime":
        return export.export_onnx(model, path, image_hw=image_hw, config_name=config_name)
    if name == "aotinductor":
        return export.export_aotinductor(model, path, image_hw=image_hw, precision=precision, config_name=config_name)
    if name == "tensorrt":
        onnx = backend_artefact("onnxruntime", checkpoint_path, image_hw, "fp32")
        if not export.is_current("onnxruntime", onnx):
            export.export_onnx(model, onnx, image_hw=image_hw, config_name=config_name)
        return export.build_tensorrt_engine(onnx, path, fp16=precision != "fp32")
    raise ValueError(f"backend {name} has nothing to export")


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
        BackendError: the backend cannot run on this machine (no CUDA for TensorRT, no onnxruntime ...),
            or its artefact must be built first (AOTInductor).
    """
    check_backend_options(name, device, precision, channels_last)
    if name == "eager":
        from monoocc_ros.predictor import Predictor

        return Predictor(model, device=device, precision=precision, confidence=confidence, channels_last=channels_last)
    if image_hw is None or not all(image_hw) or checkpoint_path is None:
        raise ValueError(f"backend {name} is built for one image size: give image_hw (H, W) and the checkpoint path")
    image_hw = tuple(image_hw)
    checkpoint_path = Path(checkpoint_path)
    path = backend_artefact(name, checkpoint_path, image_hw, precision)
    from monoocc_ros.inference import runtimes

    from monoocc_ros.export import is_current

    if name == "aotinductor":
        if not is_current(name, path):
            h, w = image_hw
            raise BackendError(
                f"backend aotinductor: {path.name} is not built (or is stale) for this checkpoint, image size, "
                "precision and torch version; build "
                f"it once with `monoocc export --checkpoint {checkpoint_path} --backend aotinductor --image-hw {h}x{w} "
                f"--precision {precision}` (minutes; never compiled at start-up)"
            )
        try:
            return runtimes.AotPredictor(path, model, device=device, confidence=confidence)
        except (OSError, RuntimeError, ValueError) as err:
            raise BackendError(f"backend aotinductor: {one_line(err)}") from err
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise BackendError(f"backend onnxruntime needs the onnxruntime package ({err})") from err
    if not is_current(name, path):  # content-addressed: present in this format means current
        export_backend(name, model, checkpoint_path=checkpoint_path, image_hw=image_hw, precision=precision,
                       config_name=config_name)
    if name == "onnxruntime":
        providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if str(device).startswith("cuda") else ("CPUExecutionProvider",)
        return runtimes.OnnxPredictor(path, model, providers=providers, device=device, confidence=confidence)
    return runtimes.TensorRTPredictor(path, model, device=device, precision=precision, confidence=confidence)
