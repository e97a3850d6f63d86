"""Building the ahead-of-time artefacts of the student's dense stages: ONNX, TensorRT engines, AOTInductor packages.

Only the fixed-shape stages are compiled (:mod:`monoocc_ros.inference.stages`: the trunk with the
neck, and the query proposal network); the runtimes that load them and run the rest of the model's
own path are in :mod:`monoocc_ros.inference.runtimes`. Each stage is one file; the trunk's file is
the artefact's name and is written last (atomically), so a present artefact is a complete one.

Example:
    >>> export_onnx(model, Path("student.onnx"), image_hw=(370, 1226))        # + student.qpn.onnx
    >>> export_aotinductor(model, Path("student.bf16.pt2"), image_hw=(185, 613), precision="bf16")
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch

from monoocc_ros.fileio import atomic_write, write_bytes_atomic, write_text_atomic
from monoocc_ros.models.config import model_config_to_dict
from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.inference.stages import dense_stages, stage_path

__all__ = [
    "AOT_SUFFIX",
    "ARTEFACT_FORMAT",
    "is_current",
    "export_onnx",
    "read_export_metadata",
    "build_tensorrt_engine",
    "export_aotinductor",
    "read_aot_metadata",
    "import_tensorrt",
    "export_metadata",
]

ONNX_OPSET = 17
# bumped when the artefacts change meaning (2: dense stages only); an older one counts as stale
ARTEFACT_FORMAT = 2
METADATA_KEY = "monoocc_ros.export"
AOT_SUFFIX = ".pt2"


def export_metadata(model: MonoOccStudent, image_hw: tuple[int, int], config_name: str, **extra) -> dict:
    """What a runtime needs besides the weights: model config, image size, the stages compiled."""
    stages = dense_stages(model, image_hw)
    return {"format": ARTEFACT_FORMAT, "config_name": config_name, "model_config": model_config_to_dict(model.cfg),
            "image_hw": list(image_hw), "stages": list(stages), **extra}


def export_onnx(model: MonoOccStudent, path: Path, *, image_hw: tuple[int, int], with_confidence: bool = False,
                config_name: str = "", opset: int = ONNX_OPSET) -> Path:
    """Export the dense stages of ``model`` for images of exactly ``image_hw`` to ONNX.

    ``path`` is the trunk's graph, holding the metadata (model config, image size, stages,
    confidence flag); the proposal network (mode "monocular") goes to ``<stem>.qpn.onnx`` beside it.
    Each file is written to a temporary name and moved into place.

    Returns:
        ``path``.
    """
    import onnx

    path = Path(path)
    model = model.cpu().eval()
    meta = export_metadata(model, image_hw, config_name, with_confidence=with_confidence)
    stages = dense_stages(model, image_hw)
    for name in reversed(list(stages)):  # the trunk's file last: its presence means all are there
        module, example = stages[name]
        target = stage_path(path, name, ".onnx")
        tmp = target.with_name(f".{target.name}.tmp")
        target.parent.mkdir(parents=True, exist_ok=True)
        # traced with autograd on: the modules then take their reference path; the inference-only
        # rewrites (e.g. the proposal head's Conv3d as slice sums added in place into views) are
        # not recorded correctly by the TorchScript tracer (its output became a constant)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed on purpose
            warnings.filterwarnings("ignore", message="Constant folding")  # strided slices stay as they are
            torch.onnx.export(module, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps({**meta, "stage": name})
        onnx.save(proto, str(tmp))
        os.chmod(tmp, 0o644)
        tmp.replace(target)
    return path


def read_export_metadata(path: Path) -> dict:
    """The metadata :func:`export_onnx` stored; ValueError naming the file when it is absent."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path}: no {METADATA_KEY!r} metadata; export it with `monoocc export`")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError("TensorRT is not installed (pip package `tensorrt`); use the ONNX or PyTorch backend") from exc
    return tensorrt


def build_tensorrt_engine(onnx_path: Path, engine_path: Path, *, fp16: bool = True, workspace_gib: float = 4.0) -> Path:
    """Build serialized TensorRT engines from exported ONNX stages (ahead of time, never at node start).

    One engine per stage file of ``onnx_path`` (``<engine stem>.qpn.engine`` beside ``engine_path``),
    each written atomically; the ONNX metadata goes to ``<engine>.json`` for the runtime, last.
    """
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = read_export_metadata(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    for stage in reversed(meta["stages"]):
        source = stage_path(onnx_path, stage, ".onnx")
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(source.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {source}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT engine build failed for {source}")
        write_bytes_atomic(stage_path(engine_path, stage, ".engine"), bytes(serialized))
    meta_path = engine_path.with_name(engine_path.name + ".json")
    write_text_atomic(meta_path, json.dumps({**meta, "fp16": fp16, "source": str(onnx_path)}))
    return engine_path


def export_aotinductor(model: MonoOccStudent, path: Path, *, image_hw: tuple[int, int], precision: str = "fp32",
                       config_name: str = "") -> Path:
    """Compile the dense stages with ``torch.export`` + AOTInductor into packages (minutes on a CPU).

    ``path`` (``.pt2``) is the trunk's package, ``<stem>.qpn.pt2`` the proposal network's; bf16
    and fp16 packages are compiled from a copy of each module in that dtype. Metadata (including
    the torch version, which must match at load time) goes to ``<path>.json``, written last.

    Returns:
        ``path``.
    """
    from torch._inductor import aoti_compile_and_package

    from monoocc_ros.predictor import PRECISIONS

    path = Path(path)
    dtype = PRECISIONS[precision]
    meta = export_metadata(model.eval(), image_hw, config_name, precision=precision, torch=torch.__version__)
    meta_path = path.with_name(path.name + ".json")
    meta_path.unlink(missing_ok=True)  # absent until every package is current
    for name, (module, example) in reversed(list(dense_stages(model, image_hw).items())):
        if dtype != torch.float32:
            module, example = copy.deepcopy(module).to(dtype), example.to(dtype)
        target = stage_path(path, name, AOT_SUFFIX)
        tmp = target.with_name(f".{target.stem}.tmp{AOT_SUFFIX}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            program = torch.export.export(module, (example,))
            aoti_compile_and_package(program, package_path=str(tmp))
        os.chmod(tmp, 0o644)
        tmp.replace(target)
    with atomic_write(meta_path, "w") as f:
        json.dump(meta, f)
    return path


def read_aot_metadata(path: Path) -> dict | None:
    """The metadata :func:`export_aotinductor` wrote beside ``path``, or None when the export is absent or incomplete."""
    meta_path = Path(path).with_name(Path(path).name + ".json")
    if not meta_path.is_file() or not Path(path).is_file():
        return None
    return json.loads(meta_path.read_text())


def is_current(backend: str, path: Path) -> bool:
    """Whether the artefact at ``path`` exists complete, in this format (and, AOTInductor, this torch)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if backend == "onnxruntime":
            meta = read_export_metadata(path)
        elif backend == "aotinductor":
            meta = read_aot_metadata(path) or {}
            if meta.get("torch") != torch.__version__:
                return False
        else:
            meta = json.loads(path.with_name(path.name + ".json").read_text())
    except Exception:  # noqa: BLE001 - whatever an unreadable or foreign file raises, it is not current
        return False
    return meta.get("format") == ARTEFACT_FORMAT
