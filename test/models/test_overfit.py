"""Learning test: the tiny student memorises one painted scene (SSC mIoU over present classes >= 0.8)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from monoocc_ros.labels import IGNORE
from monoocc_ros.losses import MonoOccLoss
from monoocc_ros.metrics import SSCMetrics
from monoocc_ros.models.config import ProposalConfig, SemDecoderConfig, get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent
from monoocc_ros.predictor import Predictor

MAX_STEPS = 40
TARGET_MIOU = 0.8
LR = 1.5e-2
QUERY_LR = 0.5
# the official per-voxel query table (tiny defaults to factorised queries to stay small) memorises fastest
QUERY_EMBEDDING = "per_voxel"


def _present_miou(pred: np.ndarray, gt: np.ndarray) -> float:
    metrics = SSCMetrics(20)
    metrics.update(pred, gt)
    scores = metrics.compute()
    present = [c for c in np.unique(gt) if c not in (0, IGNORE)]
    return float(np.mean(scores.iou[present]))


@pytest.mark.slow
def test_tiny_overfits_one_scene(box_scene):
    torch.manual_seed(0)
    base = get_model_config("tiny")
    # every voxel is a query, no 2D decoder: only the SSC path is being fitted here
    cfg = dataclasses.replace(
        base,
        voxel=dataclasses.replace(base.voxel, query_embedding=QUERY_EMBEDDING),
        proposal=ProposalConfig(mode="all"),
        sem_decoder=SemDecoderConfig(enabled=False),
    )
    model = MonoOccStudent(cfg).train()
    loss_fn = MonoOccLoss.for_model(model)
    image = torch.from_numpy(box_scene["image"]).permute(2, 0, 1)[None].float() / 255
    K = torch.from_numpy(box_scene["K"]).float()[None]
    T = torch.from_numpy(box_scene["T_cam_grid"]).float()[None]
    gt = box_scene["labels"]
    batch = {"labels": torch.from_numpy(gt).long()[None]}
    # per-voxel queries are a lookup table: a large step lets them memorise the scene quickly
    queries = list(model.occupancy.queries.parameters())
    others = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("occupancy.queries.")]
    opt = torch.optim.Adam([{"params": queries, "lr": QUERY_LR}, {"params": others, "lr": LR}])
    history = []
    for step in range(MAX_STEPS):
        out = model(image, K, T)
        losses = loss_fn(out, batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        pred = out["ssc_logits"].detach().argmax(1)[0].to(torch.uint8).numpy()
        history.append(round(_present_miou(pred, gt), 3))
        if history[-1] >= TARGET_MIOU + 0.01:
            break
    predicted = Predictor(model).predict(box_scene["image"], box_scene["K"], box_scene["T_cam_grid"])
    final = _present_miou(predicted.labels, gt)
    assert final >= TARGET_MIOU, f"mIoU over present classes {final:.3f} after {len(history)} steps: {history}"
