"""Temperature scaling of a trained student on validation bags; the result goes into the checkpoint.

``run_training`` calls :func:`calibrate_checkpoint` on ``last.pt`` and ``best.pt`` after a
student run with validation bags (``calibrate=true``); ``monoocc train calibrate CKPT --val-bags
...`` does it for any student checkpoint. The checkpoint gains::

    "calibration": {"temperature": T, "ece_before": .., "ece_after": .., "voxels": N, "frames": F,
                    "bags": [...], "image_scale": s}

and :func:`monoocc_ros.models.checkpoint.build_model_from_checkpoint` hands ``T`` to the occupancy
head, so the predictor and the node publish calibrated confidence. ECE here is measured on the
fitting voxels; the held-out numbers come from ``monoocc evaluate ... --calibration``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from monoocc_ros.calibration import expected_calibration_error, fit_temperature
from monoocc_ros.labels import IGNORE

__all__ = ["VOXELS_PER_FRAME", "collect_logits", "calibrate", "calibrate_checkpoint"]

VOXELS_PER_FRAME = 50_000
"""Valid voxels sampled per frame for the fit (a 256x256x32 frame has ~2 M; T is one scalar)."""


@torch.no_grad()
def collect_logits(
    model: nn.Module, dataset: Dataset, *, voxels_per_frame: int = VOXELS_PER_FRAME, seed: int = 0,
    device: str = "cpu", progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSC logits and labels of randomly sampled valid voxels of every frame.

    Returns:
        logits (N, K) float32 and labels (N,) int64.
    """
    model = model.to(device).eval()
    rng = np.random.default_rng(seed)
    all_logits, all_labels = [], []
    for i in tqdm(range(len(dataset)), desc="calibrate", unit="frame", disable=not progress, leave=False):
        sample = dataset[i]
        proposals = sample.get("proposals")  # proposal mode "external" (data.queries)
        logits = model(sample["image"][None].to(device), sample["K"][None].to(device), sample["T_cam_grid"][None].to(device),
                       proposals[None].to(device) if proposals is not None else None)["ssc_logits"][0]
        labels = sample["labels"].reshape(-1)
        valid = np.flatnonzero(labels.numpy() != IGNORE)
        if valid.size > voxels_per_frame:
            valid = np.sort(rng.choice(valid, voxels_per_frame, replace=False))
        idx = torch.from_numpy(valid)
        # (K, X, Y, Z) -> (K, X*Y*Z) -> (n, K)
        all_logits.append(logits.reshape(logits.shape[0], -1)[:, idx.to(device)].t().float().cpu())
        all_labels.append(labels[idx].long())
    return torch.cat(all_logits), torch.cat(all_labels)


def _ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    prob, pred = (logits / temperature).softmax(1).max(1)
    return expected_calibration_error(prob.numpy(), (pred == labels).numpy())


def calibrate(model: nn.Module, dataset: Dataset, **kwargs: Any) -> dict[str, Any]:
    """Fit the temperature on ``dataset``; ECE before (T = 1) and after, on the same voxels."""
    logits, labels = collect_logits(model, dataset, **kwargs)
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "ece_before": _ece(logits, labels, 1.0),
        "ece_after": _ece(logits, labels, temperature),
        "voxels": int(labels.numel()),
        "frames": len(dataset),
    }


def calibrate_checkpoint(
    path: Path, val_bags: list[str] | tuple[str, ...], *, image_scale: float = 1.0, max_frames: int = 0,
    device: str = "cpu", progress: bool = True, queries: str = "",
) -> dict[str, Any]:
    """Fit the temperature of the student checkpoint ``path`` on ``val_bags`` and store it there (atomically).

    Raises:
        training.errors.TrainingError: missing or unreadable bags, a teacher checkpoint.
    """
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
    from training.data import open_dataset
    from training.errors import TrainingError

    path = Path(path)
    ckpt = load_checkpoint(path)
    if (ckpt.get("meta") or {}).get("role") == "teacher":
        raise TrainingError(f"{path} is a teacher checkpoint; only students publish confidence")
    model, _ = build_model_from_checkpoint(ckpt)
    dataset = open_dataset(tuple(val_bags), "val_bags", (), max_frames, image_scale, queries)
    record = calibrate(model, dataset, device=device, progress=progress)
    record.update(bags=[str(b) for b in val_bags], image_scale=image_scale)
    ckpt["calibration"] = record
    save_checkpoint(path, ckpt)
    print(
        f"[calibrate] {path}: temperature {record['temperature']:.3f}, ECE {100 * record['ece_before']:.2f} % -> "
        f"{100 * record['ece_after']:.2f} % on {record['voxels']} voxels of {record['frames']} validation frame(s)",
        file=sys.stderr,
    )
    return record
