"""Loss semantics: CE_3D plain mean, class weights, MonoScene scal losses, 2D CE, depth bins."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from monoocc_ros.labels import SEMANTIC_KITTI
from monoocc_ros.losses import LossConfig, MonoOccLoss, ce_3d_loss, depth_bin_loss, geo_scal_loss, sem_2d_loss, sem_scal_loss

# the official MonoOcc-S config's class weights (spec §5.1)
SPEC_WEIGHTS = [0.446, 0.603, 0.852, 0.856, 0.747, 0.734, 0.801, 0.796, 0.818, 0.557,
                0.653, 0.568, 0.683, 0.560, 0.603, 0.530, 0.688, 0.574, 0.716, 0.786]


def _case(seed=0, shape=(2, 20, 6, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g) * 2
    labels = torch.randint(0, 6, (shape[0], *shape[2:]), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.3] = 255
    return logits, labels


def test_class_weights_match_spec():
    loss = MonoOccLoss(LossConfig())
    assert np.allclose(loss.class_weights.numpy(), SPEC_WEIGHTS, atol=5e-4)


def test_ce_3d_is_plain_mean_over_valid_voxels():
    logits, labels = _case()
    w = torch.tensor(SPEC_WEIGHTS)
    got = ce_3d_loss(logits, labels, w)
    valid = labels != 255
    nll = -logits.log_softmax(1).movedim(1, -1)[valid].gather(1, labels[valid][:, None])[:, 0]
    want = (nll * w[labels[valid]]).sum() / valid.sum()
    assert torch.allclose(got, want, atol=1e-6)
    torch_mean = F.cross_entropy(logits, labels, weight=w, ignore_index=255)
    assert not torch.allclose(got, torch_mean, atol=1e-4)


def _monoscene_sem_scal(logits, labels):
    """MonoScene's per-class loop, written out."""
    probs = logits.softmax(1)
    mask = labels != 255
    total, count = 0.0, 0
    for c in range(logits.shape[1]):
        p = probs[:, c][mask]
        t = (labels[mask] == c).float()
        if t.sum() == 0:
            continue
        count += 1
        tp = (p * t).sum()
        one = torch.ones(())
        total = total + F.binary_cross_entropy(tp / p.sum(), one)
        total = total + F.binary_cross_entropy(tp / t.sum(), one)
        total = total + F.binary_cross_entropy(((1 - p) * (1 - t)).sum() / (1 - t).sum(), one)
    return total / count


def test_sem_scal_and_geo_scal_match_monoscene_and_reward_correct_predictions():
    logits, labels = _case(1)
    assert torch.allclose(sem_scal_loss(logits, labels), _monoscene_sem_scal(logits, labels), atol=1e-5)
    probs = logits.softmax(1)
    mask = labels != 255
    occ = (labels[mask] != 0).float()
    nonempty = 1 - probs[:, 0][mask]
    one = torch.ones(())
    inter = (occ * nonempty).sum()
    want_geo = (
        F.binary_cross_entropy(inter / nonempty.sum(), one)
        + F.binary_cross_entropy(inter / occ.sum(), one)
        + F.binary_cross_entropy(((1 - occ) * (1 - nonempty)).sum() / (1 - occ).sum(), one)
    )
    assert torch.allclose(geo_scal_loss(logits, labels), want_geo, atol=1e-5)
    perfect = F.one_hot(labels.clamp(max=19), 20).movedim(-1, 1).float() * 30
    assert sem_scal_loss(perfect, labels) < 1e-3 < sem_scal_loss(logits, labels)
    assert geo_scal_loss(perfect, labels) < 1e-3 < geo_scal_loss(logits, labels)


def test_sem_2d_loss_resizes_labels_nearest_and_ignores_255():
    labels = torch.full((1, 8, 8), 255)
    labels[0, ::4, ::4] = 3  # nearest x0.5 keeps exactly rows/cols 0, 2, 4, 6 -> these four are 0, 4
    logits = torch.zeros(1, 20, 4, 4)
    logits[0, 3, 0, 0] = 10.0
    logits[0, 3, 2, 2] = 10.0
    got = sem_2d_loss(logits, labels)
    small = F.interpolate(labels[:, None].float(), size=(4, 4), mode="nearest")[:, 0].long()
    assert int((small != 255).sum()) == 4
    assert torch.allclose(got, F.cross_entropy(logits, small, ignore_index=255))


def test_depth_bin_loss_uses_points_in_range():
    edges = torch.linspace(1.0, 9.0, 5)  # bins of 2 m
    logits = torch.zeros(1, 4, 2, 2)
    logits[0, 2, 0, 1] = 20.0  # cell (0, 1) is confident about 5-7 m
    depth = torch.zeros(1, 4, 4)
    depth[0, 0, 3] = 6.0  # falls into cell (0, 1), bin 2
    depth[0, 3, 3] = 50.0  # beyond the last edge: not used
    assert depth_bin_loss(logits, depth, edges) < 1e-6
    depth[0, 0, 3] = 2.0
    assert depth_bin_loss(logits, depth, edges) > 10


def test_total_is_weighted_sum():
    logits, labels = _case(2, shape=(1, 20, 4, 4, 4))
    cfg = LossConfig()
    out = MonoOccLoss(cfg)({"ssc_logits": logits}, {"labels": labels})
    want = cfg.ce_3d * out["loss_ce_3d"] + cfg.sem_scal * out["loss_sem_scal"] + cfg.geo_scal * out["loss_geo_scal"]
    assert torch.allclose(out["loss"], want)
    assert (cfg.ce_3d, cfg.sem_scal, cfg.geo_scal, cfg.sem_2d) == (2.0, 1.0, 0.5, 2.5)
    assert np.isclose(SEMANTIC_KITTI.class_weights()[0], 0.446, atol=5e-4)
