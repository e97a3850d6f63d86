"""ONNX export of the student's inference path, an onnxruntime predictor, and TensorRT engines.

The exported graph is the single-frame inference path (labels and optionally confidence), not the
training outputs. Geometry that depends only on calibration and image size (where every voxel
reads its depth probability, the voxel reference points and their visibility) is computed once
per camera outside the graph and passed in, as the spec's precomputation list asks (§8.5); it
also keeps ``bucketize`` out of the graph.

Data-dependent query selection stays in the graph: ``NonZero`` picks the proposed voxels for DCA
(their invisible ones masked) and the visible ones for ICA sampling, ``ScatterND`` writes the
results back. DCA/ICA sample
their (dynamic) query sets in one chunk; the DSA keeps its static query chunks.

Example:
    >>> export_onnx(model, Path("student.onnx"), image_hw=(370, 1226))
    >>> predictor = OnnxPredictor(Path("student.onnx"))
    >>> predictor.predict(image_rgb_u8, K, T_cam_grid).labels.shape
    (256, 256, 32)
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from monoocc_ros.fileio import write_bytes_atomic, write_text_atomic
from monoocc_ros.grid import KITTI_GRID, KITTI_GRID_HALF
from monoocc_ros.models.config import ModelConfig, model_config_from_dict, model_config_to_dict
from monoocc_ros.models.deform_attn import deformable_attention
from monoocc_ros.models.monoocc import MonoOccStudent, lidar2img_from
from monoocc_ros.models.proposals import depth_lift_index
from monoocc_ros.models.voxel_transformer import CrossAttentionLayer, DeformableSampler, project_voxels
from monoocc_ros.predictor import Prediction, Predictor, run_warmup, warmup_camera

__all__ = [
    "InferenceGraph",
    "GraphGeometry",
    "compute_geometry",
    "export_onnx",
    "read_export_metadata",
    "OnnxPredictor",
    "build_tensorrt_engine",
    "TensorRTPredictor",
]

ONNX_OPSET = 17
INPUT_NAMES = ("image", "lift_index", "lift_valid", "reference", "visible")
METADATA_KEY = "monoocc_ros.export"


def _sample(sampler: DeformableSampler, query: Tensor, value: Tensor, reference: Tensor,
            shape_hw: tuple[int, int]) -> Tensor:
    """:class:`DeformableSampler` in one chunk: its query count is dynamic in the graph, so a
    chunk loop unrolled at trace time (possibly zero iterations) must not be recorded.

    Args:
        query: (1, M, C). value: (1, S, C). reference: (1, M, 2) in [0, 1].

    Returns:
        (1, M, C).
    """
    _, M, C = query.shape
    N, P = sampler.num_heads, sampler.num_points
    h, w = shape_hw
    # (1, S, C) -> (1, S, N, Dh)
    v = sampler.value_proj(value).view(1, -1, N, C // N)
    offsets = sampler.sampling_offsets(query).view(1, M, N, 1, P, 2)
    weights = sampler.attention_weights(query).view(1, M, N, P).softmax(-1).view(1, M, N, 1, P)
    normalizer = query.new_tensor([w, h])
    loc = reference[:, :, None, None, None, :] + offsets / normalizer
    return deformable_attention(v, [shape_hw], loc, weights)


def _cross_attention_layer(layer: CrossAttentionLayer, query: Tensor, value: Tensor, reference: Tensor,
                           visible: Tensor, shape_hw: tuple[int, int], gather: bool) -> Tensor:
    """One DCA/ICA layer for a single view.

    Same result as :class:`CrossAttentionLayer` with V = 1: invisible queries get
    output_proj.bias plus the residual, as in the official model. ``gather`` samples only the
    visible queries (ICA: the caller guarantees at least one); otherwise every query samples
    and a mask zeroes the invisible ones (DCA, whose proposed voxels may all lie out of view;
    ONNX Reshape cannot express an empty query set).

    Args:
        query: (M, C). value: (1, S, C). reference: (M, 2) in [0, 1]. visible: (M,) bool.

    Returns:
        (M, C).
    """
    attn = layer.attn
    if gather:
        idx = visible.nonzero()[:, 0]
        sampled = _sample(attn.deformable_attention, query[idx][None], value, reference[idx][None], shape_hw)[0]
        slots = torch.zeros_like(query).index_put((idx,), sampled)
    else:
        sampled = _sample(attn.deformable_attention, query[None], value, reference[None], shape_hw)[0]
        slots = sampled * visible[:, None].to(sampled.dtype)
    x = layer.norm1(query + attn.output_proj(slots))
    return layer.norm2(layer.ffn(x))


class InferenceGraph(nn.Module):
    """The student's single-frame inference path with precomputed geometry, for export.

    Batch size 1. Built from a :class:`MonoOccStudent` in eval mode, sharing its parameters.

    Inputs (see :func:`compute_geometry`):
        image: (1, 3, H, W) float RGB in [0, 1].
        lift_index: (X*Y*Z,) int64 index into the flattened (D, Hf, Wf) depth probabilities
            (full 256x256x32 grid; ignored without monocular proposals).
        lift_valid: (X*Y*Z,) float 0/1.
        reference: (Q, 2) float (u/W, v/H) of the 128x128x16 voxel centres.
        visible: (Q,) bool.

    Outputs:
        labels (256, 256, 32) uint8 and, with confidence, confidence (256, 256, 32) uint8.
    """

    def __init__(self, model: MonoOccStudent, with_confidence: bool = False):
        super().__init__()
        if model.cfg.proposal.mode == "external":
            raise ValueError('export needs proposal mode "monocular" or "all"')
        self.model = model.eval()
        self.with_confidence = with_confidence

    def forward(self, image: Tensor, lift_index: Tensor, lift_valid: Tensor, reference: Tensor,
                visible: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        block = m.occupancy
        feats = m.image_features(image)
        _, C, hf, wf = feats.shape
        num_queries = KITTI_GRID_HALF.num_voxels
        if m.proposals is not None:
            prob = m.proposals.depth_head(feats).softmax(1)
            occ = prob.flatten(1)[0, lift_index] * lift_valid
            logits = m.proposals.qpn(occ.view(1, *KITTI_GRID.size))
            chosen = logits.argmax(1).reshape(-1).to(torch.bool)
            # too few proposals: fall back to what the camera sees, as the eager model does
            too_few = chosen.sum() < m.cfg.proposal.min_queries
            # (bool Where has no onnxruntime kernel, hence the logic form)
            chosen = (chosen & ~too_few) | (visible & too_few)
        else:
            chosen = torch.ones_like(visible)
        # (1, C, Hf, Wf) -> (1, Hf*Wf, C)
        value = feats.flatten(2).transpose(1, 2)
        queries = block.queries()
        sel = chosen.nonzero()[:, 0]
        q = queries[sel]
        ref_sel, vis_sel = reference[sel], visible[sel]
        for layer in block.dca:
            q = _cross_attention_layer(layer, q, value, ref_sel, vis_sel, (hf, wf), gather=False)
        x = block.mask_token.expand(num_queries, C).index_put((sel,), q)
        pos = block.positional_encoding()
        x = x[None]
        for layer in block.dsa:
            x = layer(x, pos, block.dsa_reference)
        x = x[0]
        if block.ica is not None:
            for layer in block.ica:
                x = _cross_attention_layer(layer, x, value, reference, visible, (hf, wf), gather=True)
        X, Y, Z = block.grid_size
        # (Q, C) -> (1, C, X, Y, Z)
        voxels = x.transpose(0, 1).reshape(1, C, X, Y, Z)
        labels, conf = m.head.predict(voxels, self.with_confidence)
        if conf is None:
            return (labels[0],)
        return labels[0], conf[0]


@dataclass(frozen=True)
class GraphGeometry:
    """Per-camera inputs of :class:`InferenceGraph` as numpy arrays (see there for shapes)."""

    lift_index: np.ndarray
    lift_valid: np.ndarray
    reference: np.ndarray
    visible: np.ndarray

    def as_tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (torch.from_numpy(self.lift_index), torch.from_numpy(self.lift_valid),
                torch.from_numpy(self.reference), torch.from_numpy(self.visible))


def compute_geometry(cfg: ModelConfig, K: np.ndarray, T_cam_grid: np.ndarray, image_hw: tuple[int, int],
                     feature_hw: tuple[int, int]) -> GraphGeometry:
    """Calibration-only inputs of the graph, with the eager model's own geometry functions.

    Args:
        cfg: the model configuration (depth bins).
        K: (3, 3). T_cam_grid: (4, 4). image_hw: (H, W). feature_hw: (Hf, Wf) of the stride-16 features.
    """
    lidar2img = lidar2img_from(torch.as_tensor(K, dtype=torch.float32)[None],
                               torch.as_tensor(T_cam_grid, dtype=torch.float32)[None])
    edges = torch.linspace(cfg.proposal.depth_min_m, cfg.proposal.depth_max_m, cfg.proposal.depth_bins + 1)
    centres = torch.from_numpy(KITTI_GRID.centres()).to(torch.float32)
    flat, valid = depth_lift_index(centres, lidar2img, image_hw, feature_hw, edges)
    half = torch.from_numpy(KITTI_GRID_HALF.centres()).to(torch.float32)
    reference, visible = project_voxels(half, lidar2img[:, None], image_hw)
    return GraphGeometry(
        flat[0].numpy().astype(np.int64),
        valid[0].numpy().astype(np.float32),
        reference[0, 0].numpy().astype(np.float32),
        visible[0, 0].numpy(),
    )


def export_onnx(model: MonoOccStudent, path: Path, *, image_hw: tuple[int, int], with_confidence: bool = False,
                config_name: str = "", opset: int = ONNX_OPSET) -> Path:
    """Export the inference path of ``model`` for images of exactly ``image_hw`` to ONNX.

    Written to a temporary file and moved into place, so a failed export leaves no partial file.
    Metadata (model config, image size, feature size, confidence flag) is stored in the model.

    Returns:
        ``path``.
    """
    path = Path(path)
    model = model.cpu().eval()
    h, w = image_hw
    graph = InferenceGraph(model, with_confidence)
    image = torch.rand(1, 3, h, w)
    with torch.no_grad():
        feature_hw = tuple(model.image_features(image).shape[2:])
    K, T = warmup_camera(image_hw)
    geometry = compute_geometry(model.cfg, K, T, image_hw, feature_hw)
    # trace with every voxel visible so no query set is empty while tracing: an empty set
    # would bake zero-length shapes into the graph
    geometry = replace(geometry, visible=np.ones_like(geometry.visible),
                       reference=np.clip(geometry.reference, 0.01, 0.99))
    outputs = ["labels", "confidence"] if with_confidence else ["labels"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # the trace turns shapes and loop bounds into constants on purpose: the image size is fixed
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            (image, *geometry.as_tensors()),
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=outputs,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    import onnx

    proto = onnx.load(str(tmp))
    meta = {
        "config_name": config_name,
        "model_config": model_config_to_dict(model.cfg),
        "image_hw": [h, w],
        "feature_hw": list(feature_hw),
        "with_confidence": with_confidence,
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
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


class _GeometryCache:
    """Geometry of the last calibration seen; recomputed only when K or T_cam_grid change."""

    def __init__(self, cfg: ModelConfig, image_hw: tuple[int, int], feature_hw: tuple[int, int]):
        self.cfg, self.image_hw, self.feature_hw = cfg, image_hw, feature_hw
        self._key: bytes | None = None
        self._geometry: GraphGeometry | None = None

    def get(self, K: np.ndarray, T: np.ndarray) -> GraphGeometry:
        key = K.tobytes() + T.tobytes()
        if key != self._key:
            geometry = compute_geometry(self.cfg, K, T, self.image_hw, self.feature_hw)
            if not geometry.visible.any():
                raise ValueError("no voxel of the grid projects into the image: check K and T_cam_grid")
            self._key, self._geometry = key, geometry
        return self._geometry


def _check_image_size(image: np.ndarray, image_hw: tuple[int, int], source: Path) -> None:
    if tuple(image.shape[:2]) != tuple(image_hw):
        raise ValueError(
            f"image is {image.shape[1]}x{image.shape[0]} but {source} was exported for "
            f"{image_hw[1]}x{image_hw[0]}; resize the image or export again with --image-hw"
        )


def _to_input(image: np.ndarray) -> np.ndarray:
    # (H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


class OnnxPredictor:
    """onnxruntime twin of :class:`~monoocc_ros.predictor.Predictor` (same ``predict`` signature).

    Args:
        path: a model written by :func:`export_onnx`.
        providers: onnxruntime execution providers; default CPU.
        threads: intra-op threads (0 = onnxruntime's default).
    """

    backend_name = "onnxruntime"

    def __init__(self, path: Path, *, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        meta = read_export_metadata(self.path)
        self.cfg = model_config_from_dict(meta["model_config"])
        self.image_hw = tuple(meta["image_hw"])
        self.confidence = bool(meta["with_confidence"])
        self._geometry = _GeometryCache(self.cfg, self.image_hw, tuple(meta["feature_hw"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: ort.InferenceSession | None = ort.InferenceSession(
            str(self.path), sess_options=options, providers=list(providers)
        )

    def predict(self, image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray) -> Prediction:
        """One frame: image (H, W, 3) uint8 RGB, K (3, 3), T_cam_grid (4, 4) -> Prediction."""
        image, K, T = Predictor.validate(image, K, T_cam_grid)
        _check_image_size(image, self.image_hw, self.path)
        if self.session is None:
            raise RuntimeError("OnnxPredictor was released; create a new one")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        g = self._geometry.get(K, T)
        feed = dict(zip(INPUT_NAMES, (_to_input(image), g.lift_index, g.lift_valid, g.reference, g.visible)))
        timings["preprocess"] = 1000.0 * (time.perf_counter() - start)
        start = time.perf_counter()
        outputs = self.session.run(None, feed)
        timings["onnxruntime"] = 1000.0 * (time.perf_counter() - start)
        return Prediction(labels=outputs[0], confidence=outputs[1] if self.confidence else None, timings_ms=timings)

    def warmup(self, image_hw: tuple[int, int] | None = None, iterations: int = 1) -> None:
        """Run dummy frames (of the exported size) so allocations are done before real ones."""
        run_warmup(self, tuple(image_hw or self.image_hw), iterations)

    def release(self) -> None:
        self.session = None


def _tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError("TensorRT is not installed (pip package `tensorrt`); use the ONNX or PyTorch backend") from exc
    return tensorrt


def build_tensorrt_engine(onnx_path: Path, engine_path: Path, *, fp16: bool = True, workspace_gib: float = 4.0) -> Path:
    """Build a serialized TensorRT engine from an exported ONNX model (ahead of time, never at node start).

    Written atomically; the ONNX metadata is copied to ``<engine>.json`` for the runner.
    """
    trt = _tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = read_export_metadata(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(engine_path, bytes(serialized))
    meta_path = engine_path.with_name(engine_path.name + ".json")
    write_text_atomic(meta_path, json.dumps({**meta, "fp16": fp16, "source": str(onnx_path)}))
    return engine_path


class TensorRTPredictor:
    """Runs an engine from :func:`build_tensorrt_engine` on CUDA (same ``predict`` signature).

    A missing engine is an error: engines are built ahead of time by ``monoocc export --tensorrt``.
    """

    backend_name = "tensorrt"

    def __init__(self, engine_path: Path, *, device: str = "cuda"):
        trt = _tensorrt()
        self.path = Path(engine_path)
        meta_path = self.path.with_name(self.path.name + ".json")
        if not self.path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(
                f"TensorRT engine {self.path} (or its .json) not found; build it with "
                f"`monoocc export CHECKPOINT --tensorrt {self.path}`"
            )
        meta = json.loads(meta_path.read_text())
        self.cfg = model_config_from_dict(meta["model_config"])
        self.image_hw = tuple(meta["image_hw"])
        self.confidence = bool(meta["with_confidence"])
        self._geometry = _GeometryCache(self.cfg, self.image_hw, tuple(meta["feature_hw"]))
        self.device = torch.device(device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{self.path}: not a TensorRT engine for this TensorRT version / GPU")
        self.context = self.engine.create_execution_context()
        self._cached_key: bytes | None = None
        self._inputs: dict[str, Tensor] = {}

    def predict(self, image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray) -> Prediction:
        image, K, T = Predictor.validate(image, K, T_cam_grid)
        _check_image_size(image, self.image_hw, self.path)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        g = self._geometry.get(K, T)
        key = K.tobytes() + T.tobytes()
        if key != self._cached_key:
            names = INPUT_NAMES[1:]
            self._inputs = {n: t.to(self.device) for n, t in zip(names, g.as_tensors())}
            self._cached_key = key
        img = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        # (H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]
        self._inputs["image"] = img.permute(2, 0, 1)[None].float().div_(255.0).contiguous()
        outputs = {
            "labels": torch.empty(KITTI_GRID.size, dtype=torch.uint8, device=self.device),
        }
        if self.confidence:
            outputs["confidence"] = torch.empty(KITTI_GRID.size, dtype=torch.uint8, device=self.device)
        for name, tensor in {**self._inputs, **outputs}.items():
            if name in self._inputs:
                self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        torch.cuda.synchronize(self.device)
        timings["preprocess"] = 1000.0 * (time.perf_counter() - start)
        start = time.perf_counter()
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.path} failed")
        stream.synchronize()
        timings["tensorrt"] = 1000.0 * (time.perf_counter() - start)
        conf = outputs["confidence"].cpu().numpy() if self.confidence else None
        return Prediction(labels=outputs["labels"].cpu().numpy(), confidence=conf, timings_ms=timings)

    def warmup(self, image_hw: tuple[int, int] | None = None, iterations: int = 1) -> None:
        """Run dummy frames (of the exported size) so allocations are done before real ones."""
        run_warmup(self, tuple(image_hw or self.image_hw), iterations)

    def release(self) -> None:
        self.context = None
        self.engine = None
        self._inputs = {}
        torch.cuda.empty_cache()
