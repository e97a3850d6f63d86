"""Distillation losses: the released formula, bounded alternatives, masking."""

import pytest
import torch

from training.distill import (
    DistillLoss,
    cosine_loss,
    distill_mask,
    masked_voxels,
    normalized_mse_loss,
    released_kl_loss,
    softmax_kl_loss,
)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
def test_released_matches_literal_expression():
    torch.manual_seed(0)
    s, t = torch.randn(50, 16), torch.randn(50, 16)
    literal = torch.nn.KLDivLoss(reduction="mean", log_target=True)(s, t)
    by_hand = (t.exp() * (t - s)).mean()
    assert released_kl_loss(s, t) == pytest.approx(float(literal))
    assert released_kl_loss(s, t) == pytest.approx(float(by_hand), rel=1e-5)


def test_released_is_unbounded_below():
    # its gradient -exp(t)/numel does not depend on s: moving s along it lowers the loss forever
    t = torch.randn(10, 8)
    s = torch.zeros(10, 8)
    values = [float(released_kl_loss(s + k * t.exp(), t)) for k in (0, 10, 100)]
    assert values[0] > values[1] > values[2]
    assert values[2] < -10


@pytest.mark.parametrize("fn,upper", [(normalized_mse_loss, 4.0), (cosine_loss, 2.0)])
def test_bounded_losses_bounded_and_zero_at_equality(fn, upper):
    torch.manual_seed(1)
    t = torch.randn(200, 16)
    assert float(fn(t, t)) == pytest.approx(0.0, abs=1e-6)
    for scale in (1.0, 1e3, 1e6):
        v = float(fn(scale * torch.randn(200, 16), t))
        assert 0 <= v <= upper
    assert float(fn(-t, t)) == pytest.approx(upper, rel=1e-3)


def test_softmax_kl_nonnegative_and_zero_at_equality():
    torch.manual_seed(2)
    t = torch.randn(30, 16)
    assert float(softmax_kl_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(softmax_kl_loss(torch.randn(30, 16), t, 2.0)) > 0


def test_mask_and_gather():
    labels = torch.tensor([[[[0, 3], [255, 9]]]])  # (1, 1, 2, 2)
    mask = distill_mask(labels)
    assert mask.tolist() == [[[[False, True], [False, True]]]]
    feats = torch.arange(2 * 4, dtype=torch.float32).view(1, 2, 1, 2, 2)
    assert masked_voxels(feats, mask).tolist() == [[1.0, 5.0], [3.0, 7.0]]


def test_module_weights_masks_and_handles_empty_mask():
    torch.manual_seed(3)
    s = torch.randn(1, 8, 4, 4, 2, requires_grad=True)
    t = torch.randn(1, 8, 4, 4, 2)
    labels = torch.zeros(1, 4, 4, 2, dtype=torch.long)
    labels[0, :2] = 5
    loss = DistillLoss("released_kl", weight=3.5)(s, t, labels)
    m = distill_mask(labels)
    expected = 3.5 * released_kl_loss(masked_voxels(s, m), masked_voxels(t, m))
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert s.grad[:, :, 2:].abs().sum() == 0 and s.grad[:, :, :2].abs().sum() > 0
    empty = DistillLoss("mse", 1.0)(s, t, torch.zeros_like(labels))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="teacher features"):
        DistillLoss("mse", 1.0)(s, t[:, :4], labels)
    with pytest.raises(ValueError, match="mode"):
        DistillLoss("l1", 1.0)
