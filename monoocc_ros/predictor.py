"""Inference front end: numpy image + calibration in, 256x256x32 labels (and confidence) out.

Used by the ROS node, evaluation and benchmarks. All input checks run before any device work.

Example:
    >>> predictor = Predictor.from_checkpoint("student.pt", device="cuda", precision="fp16")
    >>> pred = predictor.predict(image_rgb_u8, K, T_cam_grid)
    >>> pred.labels.shape, pred.timings_ms.keys()
    ((256, 256, 32), dict_keys(['preprocess', 'backbone_neck', 'proposals', ...]))
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from monoocc_ros.camera import check_intrinsics, check_rigid
from monoocc_ros.models.monoocc import MonoOccStudent

__all__ = ["Prediction", "Predictor", "PRECISIONS"]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _compile_static_stages(model: MonoOccStudent, mode: str) -> None:
    """``nn.Module.compile`` keeps parameter names, so checkpoints stay loadable."""
    stages = [model.backbone, model.neck, *model.occupancy.dsa]
    if model.proposals is not None:
        stages += [model.proposals.depth_head, model.proposals.qpn]
    for stage in stages:
        stage.compile(mode=mode, dynamic=False)


@dataclass
class Prediction:
    """labels (256, 256, 32) uint8 train ids; confidence same shape uint8 (max prob * 255) or None;
    timings_ms: milliseconds per stage."""

    labels: np.ndarray
    confidence: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class Predictor:
    """Runs a :class:`MonoOccStudent` on single frames.

    Args:
        model: the network (moved to ``device`` and set to eval mode).
        device: "cpu", "cuda", "cuda:1", ...
        precision: "fp32", "fp16" (CUDA only) or "bf16" (autocast).
        confidence: also return the max softmax probability per voxel.
        compile: ``torch.compile`` the fixed-shape stages (backbone, neck, proposal network, DSA
            layers) in place; DCA/ICA have data-dependent query counts and stay eager.
        cuda_graphs: with ``compile``, replay those stages as CUDA graphs (mode "reduce-overhead",
            CUDA only, fixed image size).
        channels_last: run the convolutional trunk in channels-last layout (helps tensor cores).
    """

    backend_name = "eager"  # monoocc_ros.inference.backends: one interface for every backend

    def __init__(
        self,
        model: MonoOccStudent,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        confidence: bool = False,
        compile: bool = False,
        cuda_graphs: bool = False,
        channels_last: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if self.device.type == "cpu" and precision == "fp16":
            raise ValueError('precision "fp16" needs a CUDA device; on CPU use "fp32" or "bf16"')
        self.precision = precision
        self.confidence = confidence
        self.model: MonoOccStudent | None = model.to(self.device).eval()
        if cuda_graphs and (not compile or self.device.type != "cuda"):
            raise ValueError("cuda_graphs needs compile=True and a CUDA device")
        self.channels_last = channels_last
        if channels_last:
            model.backbone.to(memory_format=torch.channels_last)
            model.neck.to(memory_format=torch.channels_last)
        if compile:
            _compile_static_stages(model, "reduce-overhead" if cuda_graphs else "default")

    @classmethod
    def from_checkpoint(cls, path: Path, *, device: str = "cpu", precision: str = "fp32", confidence: bool = False) -> Predictor:
        from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

        model, _ = build_model_from_checkpoint(load_checkpoint(path))
        return cls(model, device=device, precision=precision, confidence=confidence)

    @staticmethod
    def validate(image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Check inputs; returns (image, K float64, T float64).

        Raises:
            ValueError: naming the input and the problem (shape, dtype, NaN, non-rigid transform).
        """
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got {image.dtype}")
        if image.shape[0] < 16 or image.shape[1] < 16:
            raise ValueError(f"image {image.shape[1]}x{image.shape[0]} is too small (min 16x16)")
        K = check_intrinsics(K, name="K")
        T = check_rigid(T_cam_grid, name="T_cam_grid")
        return image, K, T

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _require_model(self) -> MonoOccStudent:
        if self.model is None:
            raise RuntimeError("Predictor was released; create a new one")
        return self.model

    def predict(
        self, image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray, proposals: np.ndarray | None = None
    ) -> Prediction:
        """One frame: image (H, W, 3) uint8 RGB, K (3, 3), T_cam_grid (4, 4) -> :class:`Prediction`.

        ``proposals`` (128, 128, 16) bool: the frame's query proposals (a VoxFormer ``.query`` file,
        :func:`~monoocc_ros.models.proposals.read_query_file`); required by a checkpoint in proposal
        mode "external" (the official protocol) and refused by the others.
        """
        image, K, T = self.validate(image, K, T_cam_grid)
        model = self._require_model()
        proposals_t = _proposal_tensor(model, proposals, self.device)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        # Bag readers hand out read-only buffers; torch needs a writable one (copied only then).
        img = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device)
        # (H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]
        img = img.permute(2, 0, 1)[None].float().div_(255.0)
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        Kt = torch.from_numpy(K).to(self.device, torch.float32)[None]
        Tt = torch.from_numpy(T).to(self.device, torch.float32)[None]
        timings["preprocess"] = 1000.0 * (time.perf_counter() - start)
        with torch.inference_mode(), self._autocast():
            labels, conf = model.predict(img, Kt, Tt, proposals_t, with_confidence=self.confidence, timings=timings)
        start = time.perf_counter()
        out = Prediction(
            labels=labels[0].cpu().numpy(),
            confidence=conf[0].cpu().numpy() if conf is not None else None,
            timings_ms=timings,
        )
        timings["postprocess"] = 1000.0 * (time.perf_counter() - start)
        return out

    def warmup(self, image_hw: tuple[int, int], iterations: int = 1) -> None:
        """Run dummy frames of size (H, W) so kernels and allocators are ready."""
        if self._require_model().cfg.proposal.mode == "external":
            # dummy frames of an external-proposal model query every voxel (the slowest case)
            K, T = warmup_camera(image_hw)
            every = np.ones(self._require_model().cfg.coarse_grid.size, dtype=bool)
            for _ in range(iterations):
                self.predict(np.zeros((*image_hw, 3), dtype=np.uint8), K, T, proposals=every)
            return
        run_warmup(self, image_hw, iterations)

    def release(self) -> None:
        """Drop the model and free cached device memory."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _proposal_tensor(model: MonoOccStudent, proposals: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """Check ``proposals`` against the model's proposal mode; (1, 128, 128, 16) bool tensor or None.

    Raises:
        ValueError: missing in mode "external", given in another mode, or of the wrong shape.
    """
    mode = model.cfg.proposal.mode
    if proposals is None:
        if mode == "external":
            raise ValueError(
                'this checkpoint is in proposal mode "external" (official protocol): give the frame\'s query '
                "proposals (a VoxFormer .query file; monoocc eval --queries DIR)"
            )
        return None
    if mode != "external":
        raise ValueError(f'proposals given, but the checkpoint makes its own (proposal mode "{mode}")')
    proposals = np.asarray(proposals)
    size = model.cfg.coarse_grid.size
    if proposals.shape != size:
        raise ValueError(f"proposals must be {size} (the model's coarse grid, 128x128x16 for KITTI), got {proposals.shape}")
    return torch.from_numpy(np.ascontiguousarray(proposals, dtype=bool)).to(device)[None]


def warmup_camera(image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A plausible camera for dummy frames: K (3, 3) with a 0.6 W focal length, T_cam_grid (4, 4)."""
    h, w = image_hw
    K = np.array([[0.6 * w, 0, w / 2], [0, 0.6 * w, h / 2], [0, 0, 1]], dtype=np.float64)
    # velodyne (x fwd, y left, z up) -> optical (x right, y down, z fwd)
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    return K, T


def run_warmup(predictor, image_hw: tuple[int, int], iterations: int) -> None:
    """``iterations`` black frames of (H, W) through anything with ``predict(image, K, T)``."""
    K, T = warmup_camera(image_hw)
    image = np.zeros((*image_hw, 3), dtype=np.uint8)
    for _ in range(iterations):
        predictor.predict(image, K, T)
