"""Frustum skipping in DCA/ICA is exact: sampling only visible queries equals sampling all of them
and zeroing the invisible ones (which then get output_proj.bias plus the residual)."""

from __future__ import annotations

import torch

from monoocc_ros.models.voxel_transformer import DeformCrossAttention


def _dense_reference(attn: DeformCrossAttention, query, value, reference, visible, shape_hw):
    """The non-skipping formulation: every query samples, a mask removes the invisible ones."""
    sampled = attn.deformable_attention(query, value[:, 0], reference[:, 0], shape_hw)
    slots = sampled * visible[:, 0, :, None].to(sampled.dtype)
    return query + attn.output_proj(slots)


def test_visible_only_sampling_equals_dense_masked_sampling():
    torch.manual_seed(0)
    C, hf, wf, Q = 16, 6, 20, 700
    attn = DeformCrossAttention(C, num_heads=2, num_points=4, dropout=0.0, chunk=128).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)  # non-trivial offsets, weights and biases
    query = torch.randn(1, Q, C)
    value = torch.randn(1, 1, hf * wf, C)
    reference = torch.rand(1, 1, Q, 2) * 1.4 - 0.2
    visible = ((reference > 0) & (reference < 1)).all(-1)
    assert 0 < int(visible.sum()) < Q
    with torch.no_grad():
        skipped = attn(query, value, reference, visible, (hf, wf))
        dense = _dense_reference(attn, query, value, reference, visible, (hf, wf))
        bias_only = query + attn.output_proj.bias
    torch.testing.assert_close(skipped, dense, rtol=1e-5, atol=1e-5)
    invisible = ~visible[0, 0]
    torch.testing.assert_close(skipped[0, invisible], bias_only[0, invisible], rtol=0, atol=1e-6)

