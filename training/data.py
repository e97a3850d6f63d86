"""Training data: converted bags opened as datasets, images resized, batches moved to the device.

:func:`open_dataset` turns a config's bag list into a :class:`FrameDataset` and reports a
missing bag or one without ground truth as a :class:`~training.errors.TrainingError` naming
the config key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from training.errors import TrainingError

__all__ = ["FrameDataset", "open_dataset", "to_device"]


class FrameDataset(Dataset):
    """A :class:`~monoocc_ros.data.bag_dataset.BagDataset` with images resized by ``scale``.

    Intrinsics follow the resize so that projections normalised by the image size are
    unchanged; the sparse LiDAR maps are resized with nearest neighbour. ``index`` is the
    position in this dataset (the teacher cache's key).
    """

    def __init__(self, base: Dataset, scale: float):
        self.base = base
        self.scale = scale

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.base[i])
        sample["index"] = i
        if self.scale == 1.0:
            return sample
        _, H, W = sample["image"].shape
        h, w = max(round(H * self.scale), 16), max(round(W * self.scale), 16)
        sample["image"] = _resize_images(sample["image"][None], (h, w))[0]
        if sample["temporal_images"].shape[0]:
            sample["temporal_images"] = _resize_images(sample["temporal_images"], (h, w))
        else:
            sample["temporal_images"] = sample["temporal_images"].new_zeros((0, 3, h, w))
        K = sample["K"].clone()
        K[0] *= w / W
        K[1] *= h / H
        sample["K"] = K
        for key in ("sem2d", "depth"):
            # (H, W) -> (1, 1, H, W) for interpolate
            sample[key] = F.interpolate(sample[key][None, None].float(), size=(h, w), mode="nearest")[0, 0].to(
                sample[key].dtype
            )
        return sample


def _resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 3, H, W) float in [0, 1] -> (N, 3, h, w), antialiased."""
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def open_dataset(
    bags: Sequence[str],
    key: str,
    temporal_offsets: Sequence[int],
    max_frames: int,
    scale: float,
    queries: str = "",
    model_cfg=None,
) -> FrameDataset:
    """The ground-truth frames of ``bags`` at ``scale``.

    Args:
        bags: converted bag folders.
        key: the config key they come from (named in errors, e.g. ``data.train_bags``).
        temporal_offsets: past frames to load with each frame (the teacher's views).
        max_frames: only the first N ground-truth frames (0 = all).
        scale: image resize factor.
        queries: folder of VoxFormer query files (official protocol), or "".
        model_cfg: the model's config; ground truth is re-expressed on its grid and label set when
            they differ from the bags' SemanticKITTI ones (:class:`~monoocc_ros.data.retarget.Retarget`).

    Raises:
        TrainingError: no bag, a missing bag, an unreadable one or one without ground truth.
    """
    from monoocc_ros.data.bag_dataset import BagDataset
    from monoocc_ros.data.bag_io import BagReadError

    if not bags:
        raise TrainingError(f"{key} is empty: list at least one converted bag folder")
    for i, bag in enumerate(bags):
        if not Path(bag).exists():
            raise TrainingError(f"{key}[{i}]: bag {bag} not found")
    try:
        base = BagDataset(
            [Path(b) for b in bags],
            temporal_offsets=temporal_offsets,
            frames=slice(0, max_frames) if max_frames else None,
            queries=Path(queries) if queries else None,
        )
    except (BagReadError, ValueError) as exc:
        raise TrainingError(f"{key}: {exc}") from None
    if model_cfg is not None:
        from monoocc_ros.data.retarget import Retarget, RetargetedDataset

        try:
            retarget = Retarget.for_model(model_cfg)
        except ValueError as exc:
            raise TrainingError(f"{key}: {exc}") from None
        if retarget is not None:
            if queries:
                raise TrainingError("data.queries: query files are on the SemanticKITTI grid; the model's grid differs")
            base = RetargetedDataset(base, retarget)
    return FrameDataset(base, scale)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device`` (non-blocking from pinned memory); other values as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
