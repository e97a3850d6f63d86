"""Runtimes of the ahead-of-time backends: load the compiled dense stages, run the rest on the model's own path.

Each predictor here is a :class:`~monoocc_ros.inference.stages.StagedPredictor`: the model (its
weights come from the checkpoint, as for eager) with the trunk and the proposal network replaced by
calls into onnxruntime sessions, TensorRT engines or AOTInductor packages (:mod:`monoocc_ros.export`
builds them). None of them compiles anything when it is created.

Example:
    >>> predictor = OnnxPredictor(Path("student.onnx"), model)
    >>> predictor.predict(image_rgb_u8, K, T_cam_grid).labels.shape
    (256, 256, 32)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from monoocc_ros.export import AOT_SUFFIX, import_tensorrt, read_aot_metadata, read_export_metadata
from monoocc_ros.inference.stages import CompiledStage, StagedPredictor, stage_path
from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.predictor import PRECISIONS

__all__ = ["OnnxPredictor", "AotPredictor", "TensorRTPredictor"]


class OnnxPredictor(StagedPredictor):
    """The model with its dense stages run by onnxruntime (fp32).

    Args:
        path: the trunk graph written by :func:`~monoocc_ros.export.export_onnx` (its other stages beside it).
        model: the student the graphs were exported from (same weights).
        providers: onnxruntime execution providers; default CPU.
        threads: intra-op threads (0 = torch's, so the node's thread setting covers both).
        confidence: None = as exported.
    """

    def __init__(self, path: Path, model: MonoOccStudent, *, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int = 0, device: str = "cpu", confidence: bool | None = None):
        import onnxruntime as ort

        path = Path(path)
        meta = read_export_metadata(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # one thread setting for the process
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the node's other threads (decode, publish) share the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        runs = {}
        for stage in meta["stages"]:
            session = ort.InferenceSession(str(stage_path(path, stage, ".onnx")), sess_options=options,
                                           providers=list(providers))
            runs[stage] = CompiledStage(_onnx_run(session), f"onnxruntime {stage}")
        super().__init__(model, runs, backend_name="onnxruntime", image_hw=tuple(meta["image_hw"]), source=path,
                         device=device, confidence=bool(meta["with_confidence"]) if confidence is None else confidence)


def _onnx_run(session):
    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"input": x.cpu().numpy()})[0]).to(x.device)

    return run


class AotPredictor(StagedPredictor):
    """The model with its dense stages run from AOTInductor packages (no compilation here).

    Args:
        path: the trunk package written by :func:`~monoocc_ros.export.export_aotinductor`.
        model: the student the packages were compiled from.
        precision: of the packages (stored with them) and of the eager rest's autocast.

    Raises:
        FileNotFoundError: the export is absent or incomplete (the text says how to build it).
        ValueError: the packages were built by another torch version.
    """

    def __init__(self, path: Path, model: MonoOccStudent, *, device: str = "cpu", confidence: bool = False):
        from torch._inductor import aoti_load_package

        path = Path(path)
        meta = read_aot_metadata(path)
        if meta is None:
            raise FileNotFoundError(f"{path}: no complete AOTInductor export; build it with `monoocc export`")
        if meta["torch"] != torch.__version__:
            raise ValueError(f"{path} was compiled by torch {meta['torch']}, this is {torch.__version__}; "
                             "build it again with `monoocc export`")
        precision = meta["precision"]
        runs = {}
        for stage in meta["stages"]:
            package = aoti_load_package(str(stage_path(path, stage, AOT_SUFFIX)))
            runs[stage] = CompiledStage(_first(package), f"aotinductor {stage}", PRECISIONS[precision])
        super().__init__(model, runs, backend_name="aotinductor", image_hw=tuple(meta["image_hw"]), source=path,
                         device=device, precision=precision, confidence=confidence)


def _first(package):
    def run(x: Tensor) -> Tensor:
        out = package(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    return run


class TensorRTPredictor(StagedPredictor):
    """The model with its dense stages run by TensorRT engines on CUDA.

    A missing engine is an error: engines are built ahead of time (``monoocc export --backend tensorrt``).
    """

    def __init__(self, engine_path: Path, model: MonoOccStudent, *, device: str = "cuda", precision: str = "fp16",
                 confidence: bool = False):
        trt = import_tensorrt()
        path = Path(engine_path)
        meta_path = path.with_name(path.name + ".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"TensorRT engine {path} (or its .json) not found; build it with "
                                    f"`monoocc export --backend tensorrt`")
        meta = json.loads(meta_path.read_text())
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        runs = {}
        for stage in meta["stages"]:
            engine = runtime.deserialize_cuda_engine(stage_path(path, stage, ".engine").read_bytes())
            if engine is None:
                raise ValueError(f"{path}: not a TensorRT engine for this TensorRT version / GPU")
            runs[stage] = CompiledStage(_tensorrt_run(engine, torch.device(device)), f"tensorrt {stage}")
        super().__init__(model, runs, backend_name="tensorrt", image_hw=tuple(meta["image_hw"]), source=path,
                         device=device, precision=precision, confidence=confidence)


def _tensorrt_run(engine, device: torch.device):
    context = engine.create_execution_context()
    out_shape = tuple(engine.get_tensor_shape("output"))

    def run(x: Tensor) -> Tensor:
        x = x.to(device, torch.float32).contiguous()  # fp16 engines keep fp32 inputs and outputs
        out = torch.empty(out_shape, dtype=torch.float32, device=device)
        context.set_input_shape("input", tuple(x.shape))
        context.set_tensor_address("input", x.data_ptr())
        context.set_tensor_address("output", out.data_ptr())
        # on torch's current stream, so the eager rest is ordered after it without a sync
        if not context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out

    return run
