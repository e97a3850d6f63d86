"""Multi-scale deformable attention sampling in plain PyTorch (``grid_sample``).

Numerically the same as mmcv's ``multi_scale_deformable_attn_pytorch``: bilinear sampling,
zero padding, ``align_corners=False``, locations normalised to [0, 1] (x by width, y by height).

Example:
    >>> v = torch.randn(2, 24 * 77, 8, 16)
    >>> loc = torch.rand(2, 100, 8, 1, 8, 2)
    >>> w = torch.rand(2, 100, 8, 1, 8).softmax(-1)
    >>> deformable_attention(v, [(24, 77)], loc, w).shape
    torch.Size([2, 100, 128])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["deformable_attention"]


def deformable_attention(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinearly sampled values.

    Args:
        value: (B, S, N, Dh) per-head values; S = sum of H_l * W_l over levels, row-major per level.
        spatial_shapes: L pairs (H_l, W_l).
        sampling_locations: (B, Q, N, L, P, 2) (x, y) in [0, 1] of level l's map.
        attention_weights: (B, Q, N, L, P), already normalised by the caller.

    Returns:
        (B, Q, N * Dh).
    """
    B, S, N, Dh = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    if sum(h * w for h, w in spatial_shapes) != S or len(spatial_shapes) != L:
        raise ValueError(f"spatial_shapes {spatial_shapes} do not match value length {S} / {L} levels")
    grids = 2 * sampling_locations - 1
    sampled = []
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        # (B, h*w, N, Dh) -> (B*N, Dh, h, w)
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(B * N, Dh, h, w)
        start += h * w
        # (B, Q, N, P, 2) -> (B*N, Q, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(B * N, Q, P, 2)
        sampled.append(F.grid_sample(v, g.to(v.dtype), mode="bilinear", padding_mode="zeros", align_corners=False))
    # L x (B*N, Dh, Q, P) -> (B*N, Dh, Q, L*P)
    stacked = torch.cat(sampled, dim=-1)
    # (B, Q, N, L, P) -> (B*N, 1, Q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(B * N, 1, Q, L * P).to(stacked.dtype)
    out = (stacked * weights).sum(-1)
    # (B*N, Dh, Q) -> (B, Q, N*Dh)
    return out.view(B, N * Dh, Q).transpose(1, 2).contiguous()
