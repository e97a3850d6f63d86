"""Ground truth of one grid and label set, re-expressed for a model with another.

Converted bags hold SemanticKITTI ground truth (256x256x32 voxels of 0.2 m, 20 classes). A model
whose config names a coarser grid over the same extent (e.g. 128x128x16 of 0.4 m) or another
label set trains on the same bags through :class:`Retarget`: train ids are translated through the
raw ids (source train id -> source raw id -> target ``learning_map``), then the voxel labels are
downsampled with VoxFormer's rule (:func:`~monoocc_ros.grid.downsample_labels`). A target label
set therefore writes its ``learning_map`` over the source's raw ids (SemanticKITTI's 0..259).

Example:
    >>> from monoocc_ros.grid import KITTI_GRID
    >>> from monoocc_ros.labels import SEMANTIC_KITTI
    >>> Retarget(KITTI_GRID, SEMANTIC_KITTI, KITTI_GRID.downscaled(2), SEMANTIC_KITTI).factor
    2
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from monoocc_ros.grid import KITTI_GRID, VoxelGrid, downsample_labels
from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI, LabelMap

__all__ = ["Retarget", "RetargetedDataset", "translation_lut"]


def translation_lut(source: LabelMap, target: LabelMap) -> np.ndarray:
    """(256,) uint8 source train id -> target train id through the raw ids; unmapped -> 255.

    Empty stays empty and 255 stays 255 whatever the label sets say.
    """
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for train in range(source.num_classes):
        raw = source.learning_map_inv.get(train)
        if raw is not None and raw in target.learning_map:
            lut[train] = target.learning_map[raw]
    lut[EMPTY] = EMPTY
    return lut


class Retarget:
    """Turns samples on ``source_grid`` / ``source_labels`` into samples for the target ones.

    Args:
        source_grid, source_labels: what the data holds (the bags: SemanticKITTI).
        target_grid, target_labels: what the model predicts (``ModelConfig.grid``, ``.label_set()``).

    Raises:
        ValueError: the target grid is not the source grid at an integer coarser resolution with
            the same origin (resampling other grids is not supported).
    """

    def __init__(self, source_grid: VoxelGrid, source_labels: LabelMap, target_grid: VoxelGrid, target_labels: LabelMap):
        ratio = target_grid.voxel_size_m / source_grid.voxel_size_m
        factor = int(round(ratio))
        if (
            factor < 1
            or abs(ratio - factor) > 1e-6
            or tuple(n * factor for n in target_grid.size) != tuple(source_grid.size)
            or not np.allclose(target_grid.origin_m, source_grid.origin_m)
        ):
            raise ValueError(
                f"model grid {target_grid} is not the data grid {source_grid} at an integer coarser "
                "resolution with the same origin"
            )
        self.factor = factor
        self.same_labels = source_labels is target_labels or (
            source_labels.names == target_labels.names and source_labels.learning_map == target_labels.learning_map
        )
        self.lut = translation_lut(source_labels, target_labels)

    @classmethod
    def for_model(cls, model_cfg, source_grid: VoxelGrid = KITTI_GRID, source_labels: LabelMap = SEMANTIC_KITTI):
        """The retarget from the bags' SemanticKITTI ground truth to ``model_cfg``, or None when they agree."""
        labels = model_cfg.label_set()
        if model_cfg.grid == source_grid and labels is source_labels:
            return None
        return cls(source_grid, source_labels, model_cfg.grid, labels)

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """(X, Y, Z) source train ids -> (X/f, Y/f, Z/f) uint8 target train ids."""
        out = np.asarray(labels).astype(np.uint8) if self.same_labels else self.lut[np.asarray(labels).astype(np.uint8)]
        return out if self.factor == 1 else downsample_labels(out, self.factor)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """A BagDataset sample with "labels", "labels_half" and "sem2d" in the target grid and label set."""
        if "proposals" in sample:
            raise ValueError("external query proposals are on the SemanticKITTI grid; they cannot be retargeted")
        sample = dict(sample)
        labels = self.labels(sample["labels"].numpy())
        sample["labels"] = torch.from_numpy(labels.astype(np.int64))
        sample["labels_half"] = torch.from_numpy(downsample_labels(labels).astype(np.int64))
        if not self.same_labels:
            sem2d = sample["sem2d"]
            sample["sem2d"] = torch.from_numpy(self.lut[sem2d.numpy().astype(np.uint8)].astype(np.int64)).to(sem2d.dtype)
        return sample


class RetargetedDataset(Dataset):
    """``base``'s samples passed through a :class:`Retarget`."""

    def __init__(self, base: Dataset, retarget: Retarget):
        self.base = base
        self.retarget = retarget

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.retarget(self.base[i])
