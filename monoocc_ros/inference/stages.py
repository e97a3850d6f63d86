"""Ahead-of-time backends are built from the model itself: its dense stages are swapped for compiled twins.

The student's single-frame path has two kinds of work:

- dense, fixed-shape stages: the ResNet trunk with the FPN neck (normalised image -> stride-16
  features) and, in proposal mode "monocular", the query proposal network (256x256x32 soft
  occupancy -> 2-class logits at 128x128x16). Their shapes depend only on the image size, so they
  can be compiled once (ONNX, TensorRT, AOTInductor);
- data-dependent stages: how many voxels are proposed decides the DCA query set, geometry is cached
  per camera, the attention runs in query chunks. A trace freezes all of that into constants
  (``bench/probe_onnx_own_path.py``: 54 % label agreement on a new frame), so these stay on the
  model's own inference path.

A staged backend is therefore a :class:`~monoocc_ros.predictor.Predictor` over a copy of the model
whose dense modules are replaced by :class:`CompiledStage` s calling the compiled graphs. Everything
else (input checks, the lift, the min_queries fallback, the voxel stages, the head, autocast for
``precision``) is the eager predictor's code; there is no second forward to keep in step.

Example:
    >>> stages = dense_stages(model, image_hw=(185, 613))   # {"trunk": (module, example), "qpn": ...}
    >>> predictor = StagedPredictor(model, {"trunk": run_trunk, "qpn": run_qpn}, backend_name="onnxruntime",
    ...                             image_hw=(185, 613), source=Path("student.onnx"))
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.predictor import Prediction, Predictor, run_warmup

__all__ = ["STAGES", "CompiledStage", "StagedPredictor", "dense_stages", "stage_names", "stage_path"]

# the trunk first: its artefact is "the" artefact of a backend (written last, so present = complete)
STAGES = ("trunk", "qpn")


class _Trunk(nn.Sequential):
    """ResNet trunk then FPN neck: (1, 3, H, W) ImageNet-normalised image -> (1, C, Hf, Wf) features."""


def stage_names(model: MonoOccStudent) -> tuple[str, ...]:
    """The dense stages this model has: the trunk always, the proposal network in mode "monocular"."""
    return STAGES if model.proposals is not None else STAGES[:1]


def dense_stages(model: MonoOccStudent, image_hw: tuple[int, int]) -> dict[str, tuple[nn.Module, Tensor]]:
    """The model's own dense modules with an example input each (shapes of a frame of ``image_hw``).

    Returns:
        {"trunk": (backbone + neck, (1, 3, H, W)), "qpn": (proposal network, (1, *cfg.grid.size))}, the
        second only in proposal mode "monocular". The modules are the model's (shared parameters).
    """
    if model.cfg.proposal.mode == "external":
        raise ValueError('proposal mode "external" (VoxFormer query files) runs on the eager backend only')
    h, w = image_hw
    device = model.pixel_mean.device
    out = {"trunk": (_Trunk(model.backbone, model.neck).eval(), torch.rand(1, 3, h, w, device=device))}
    if model.proposals is not None:
        out["qpn"] = (model.proposals.qpn.eval(), torch.rand(1, *model.cfg.grid.size, device=device))
    return out


def stage_path(artefact: Path, stage: str, suffix: str) -> Path:
    """The file of ``stage`` beside a backend's ``artefact`` (the trunk's file): ``<name>.qpn<suffix>``."""
    artefact = Path(artefact)
    if stage == STAGES[0]:
        return artefact
    stem = artefact.name[: -len(suffix)] if artefact.name.endswith(suffix) else artefact.stem
    return artefact.with_name(f"{stem}.{stage}{suffix}")


class CompiledStage(nn.Module):
    """Stands in for a dense module: calls its compiled graph on the same input, returns the same output.

    Args:
        run: the compiled graph, contiguous tensor in -> tensor out.
        dtype: the graph's input dtype (bf16 graphs are compiled from a bf16 copy of the module).
    """

    def __init__(self, run: Callable[[Tensor], Tensor], name: str, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.run, self.name, self.dtype = run, name, dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x.to(self.dtype).contiguous())

    def extra_repr(self) -> str:
        return f"{self.name}, {self.dtype}"


def install_stages(model: MonoOccStudent, runs: dict[str, CompiledStage]) -> MonoOccStudent:
    """A copy of ``model`` whose dense modules are ``runs`` (the model itself is left as it is)."""
    staged = copy.deepcopy(model)
    missing = set(stage_names(model)) - set(runs)
    if missing:
        raise ValueError(f"compiled stages missing: {sorted(missing)}")
    if "trunk" in runs:
        # image_features() = neck(backbone(normalised image)): the compiled trunk is both
        staged.backbone, staged.neck = runs["trunk"], nn.Identity()
    if "qpn" in runs and staged.proposals is not None:
        staged.proposals.qpn = runs["qpn"]
    return staged


class StagedPredictor(Predictor):
    """The eager predictor over the model with compiled dense stages (:func:`install_stages`).

    Same ``predict``/``warmup``/``release`` as :class:`Predictor`; images must have the size the
    stages were compiled for.

    Args:
        model: the trained student (copied; not changed).
        runs: {stage name: compiled stage} for every name of :func:`stage_names`.
        backend_name: reported in the log and ``/diagnostics``.
        image_hw: the compiled image size (H, W).
        source: the artefact, named in errors.
        precision: autocast precision of the eager rest ("fp32" or "bf16"; "fp16" on CUDA).
    """

    def __init__(self, model: MonoOccStudent, runs: dict[str, CompiledStage], *, backend_name: str,
                 image_hw: tuple[int, int], source: Path, device: str = "cpu", precision: str = "fp32",
                 confidence: bool = False):
        super().__init__(install_stages(model, runs), device=device, precision=precision, confidence=confidence)
        self.backend_name = backend_name
        self.image_hw = tuple(image_hw)
        self.source = Path(source)

    def predict(self, image: np.ndarray, K: np.ndarray, T_cam_grid: np.ndarray,
                proposals: np.ndarray | None = None) -> Prediction:
        """One frame of the compiled size: image (H, W, 3) uint8 RGB, K (3, 3), T_cam_grid (4, 4)."""
        image, K, T = self.validate(image, K, T_cam_grid)
        if tuple(image.shape[:2]) != self.image_hw:
            h, w = self.image_hw
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]} but {self.source} was exported for {w}x{h}; "
                "resize the image or export again with --image-hw"
            )
        return super().predict(image, K, T, proposals)

    def warmup(self, image_hw: tuple[int, int] | None = None, iterations: int = 1) -> None:
        """Run dummy frames (of the compiled size) so allocations are done before real ones."""
        run_warmup(self, tuple(image_hw or self.image_hw), iterations)
