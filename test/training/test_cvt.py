"""Cross View Transformer: shapes, odd sizes by padding, view interaction, gradients."""

import pytest
import torch

from training.cvt import CrossViewTransformer, sine_position_encoding


@pytest.mark.parametrize("hw", [(6, 20), (5, 7), (3, 77), (1, 1)])
def test_shapes_including_odd_sizes(hw):
    torch.manual_seed(0)
    cvt = CrossViewTransformer(dim=32, num_layers=6)
    x = torch.randn(2, 3, 32, *hw)
    y = cvt(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert not torch.allclose(y, x)


def test_padded_keys_and_other_regions_are_masked():
    from training.cvt import _attention_bias

    valid = torch.ones(6, 8, dtype=torch.bool)
    valid[5] = False  # a padded last row
    plain = _attention_bias(valid, 2, (0, 0))  # (4 windows, 12, 12)
    assert plain.shape == (4, 12, 12)
    # windows 2 and 3 hold the last row as their last 4 tokens: those keys are blocked
    assert (plain[2:, :, -4:] < -1e3).all() and (plain[2:, :, :-4] == 0).all()
    assert (plain[:2] == 0).all()
    shifted = _attention_bias(torch.ones(6, 8, dtype=torch.bool), 2, (1, 2))
    # Swin: after the shift the wrapped-around cells of the last window form separate regions
    assert (shifted[0] == 0).all() and (shifted[3] < -1e3).any()
    assert torch.equal(shifted, shifted.transpose(1, 2))


def test_views_exchange_information():
    torch.manual_seed(0)
    cvt = CrossViewTransformer(dim=16, num_layers=2).eval()
    x = torch.randn(1, 2, 16, 4, 6)
    y = cvt(x)
    x2 = x.clone()
    x2[:, 1] = torch.randn(16, 4, 6)
    assert not torch.allclose(cvt(x2)[:, 0], y[:, 0])
    single = torch.randn(1, 1, 16, 4, 6)
    assert torch.equal(cvt(single), single)


def test_gradients_reach_all_parameters():
    cvt = CrossViewTransformer(dim=16, num_layers=2)
    cvt(torch.randn(1, 3, 16, 5, 7)).square().sum().backward()
    for name, p in cvt.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sine_encoding_shape_and_range():
    pe = sine_position_encoding(3, 5, 32)
    assert pe.shape == (32, 3, 5)
    assert pe.abs().max() <= 1
    assert not torch.allclose(pe[:, 0, 0], pe[:, 2, 4])
