"""Learning test that image features must pass: two scenes, same geometry, classes only in the image.

``swapped_scenes`` share occupancy and camera; their car box and vegetation box trade classes,
and only the painted image says which is which. The student uses factorised queries (per-axis
sums, no per-voxel table that could memorise a scene), so the labels of those boxes can only
come from image features reaching the voxels through the projection, DCA and ICA.

The same fit with the image features zeroed gets identical inputs for both scenes, hence
identical outputs: on the voxels whose class differs between the scenes it is right in at most
one scene of the two, i.e. at most 50 % — the test asserts that it fails.

To fit the 2-core CPU budget the run leaves out what cannot carry image information to a voxel
or is not under test: DSA layers (voxel-to-voxel mixing), the 2D decoder, and the proposal
network (the proposals are the scenes' shared occupancy, so they carry no class information).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from monoocc_ros.labels import EMPTY, IGNORE
from monoocc_ros.losses import MonoOccLoss
from monoocc_ros.metrics import SSCMetrics
from monoocc_ros.models.config import ProposalConfig, SemDecoderConfig, get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent

MAX_STEPS = 30
LR = 1e-2
TARGET_ACCURACY = 0.9  # on the voxels whose class only the image tells
TARGET_MIOU = 0.5  # over the classes present in the scenes, both scenes together


def _proposals(labels: np.ndarray) -> torch.Tensor:
    """(256, 256, 32) labels -> (1, 128, 128, 16) bool: a 2x2x2 block with any occupied voxel."""
    occupied = (labels != EMPTY) & (labels != IGNORE)
    return torch.from_numpy(occupied.reshape(128, 2, 128, 2, 16, 2).any(axis=(1, 3, 5)))[None]


def _scores(pred: np.ndarray, gts: np.ndarray, dependent: np.ndarray) -> tuple[float, float]:
    """(accuracy on image-dependent voxels over both scenes, mIoU over present classes)."""
    accuracy = float(np.mean(pred[:, dependent] == gts[:, dependent]))
    metrics = SSCMetrics(20)
    metrics.update(pred, gts)
    present = [c for c in np.unique(gts) if c not in (EMPTY, IGNORE)]
    return accuracy, float(np.mean(metrics.compute().iou[present]))


def fit_swapped_scenes(scenes, *, zero_image_features: bool, max_steps: int = MAX_STEPS) -> dict:
    """Fit the tiny factorised-query student to both scenes at once (a batch of two).

    Returns the steps used, the per-step (accuracy, mIoU) history and the final scores of the
    inference path (chunked argmax head).
    """
    torch.manual_seed(0)
    base = get_model_config("tiny")
    assert base.voxel.query_embedding == "factorized"
    cfg = dataclasses.replace(
        base,
        voxel=dataclasses.replace(base.voxel, num_dsa_layers=0),
        proposal=ProposalConfig(mode="external"),
        sem_decoder=SemDecoderConfig(enabled=False),
    )
    model = MonoOccStudent(cfg).train()
    if zero_image_features:
        model.neck.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
    loss_fn = MonoOccLoss.for_model(model)
    image = torch.stack([torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255 for s in scenes])
    K = torch.stack([torch.from_numpy(s["K"]).float() for s in scenes])
    T = torch.stack([torch.from_numpy(s["T_cam_grid"]).float() for s in scenes])
    gts = np.stack([s["labels"] for s in scenes])
    proposals = _proposals(gts[0]).expand(len(scenes), -1, -1, -1)
    assert np.array_equal(_proposals(gts[0]), _proposals(gts[1])), "the scenes must share their geometry"
    dependent = (gts[0] != gts[1]) & (gts[0] != IGNORE) & (gts[1] != IGNORE)
    batch = {"labels": torch.from_numpy(gts).long()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
    history = []
    for _ in range(max_steps):
        out = model(image, K, T, proposals)
        losses = loss_fn(out, batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        pred = out["ssc_logits"].detach().argmax(1).to(torch.uint8).numpy()
        history.append(tuple(round(v, 3) for v in _scores(pred, gts, dependent)))
        if history[-1][0] >= TARGET_ACCURACY + 0.02 and history[-1][1] >= TARGET_MIOU + 0.02:
            break
    model.eval()
    labels, _ = model.predict(image, K, T, proposals)
    accuracy, miou = _scores(labels.numpy(), gts, dependent)
    return {"steps": len(history), "history": history, "accuracy": accuracy, "miou": miou}


@pytest.mark.slow
def test_image_dependent_labels_need_image_features(swapped_scenes):
    fitted = fit_swapped_scenes(swapped_scenes, zero_image_features=False)
    print(f"[overfit-image] with image features: {fitted}")
    assert fitted["accuracy"] >= TARGET_ACCURACY, fitted
    assert fitted["miou"] >= TARGET_MIOU, fitted
    # the same budget without image features: identical inputs, so at most one scene is right
    blind = fit_swapped_scenes(swapped_scenes, zero_image_features=True, max_steps=fitted["steps"])
    print(f"[overfit-image] image features zeroed: {blind}")
    assert blind["accuracy"] <= 0.5 + 1e-9, blind
    assert blind["accuracy"] < TARGET_ACCURACY
