"""Cross View Transformer: GMFlow-style windowed attention between consecutive views.

The privileged branch refines the stride-16 FPN features of its V views before the voxel
stage (spec §3, official ``TVT(num_layers=6, d_model=128, nhead=1, ffn_dim_expansion=4)``).
Each block runs single-head self-attention inside windows, then single-head cross-attention
from every view to its partner view and an MLP on ``concat[x, message]``. Windows come from a
``splits x splits`` partition of the map; odd blocks shift the windows by half a window and
mask attention across the wrap-around, as in Swin. A DETR-style sine position encoding of
one window is added to every window once, before the first block.

Partners: view j attends to view j + 1, the last view to view V - 2, so with two views this
is exactly GMFlow's symmetric pair; a single view is returned unchanged.

Difference to the official code: the official transformer is skipped when the feature map
has an odd height or width (so it never runs on 1226-pixel-wide KITTI sequences, W_f = 77).
Here the map is zero-padded up to a multiple of ``splits``; padded positions are masked as
keys and cropped away at the end, so every image size gets the transformer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sine_position_encoding", "CrossViewTransformer", "CrossViewBlock"]

_MASKED = -1.0e4  # finite so fully masked rows stay finite in fp16/bf16 softmax


def sine_position_encoding(height: int, width: int, channels: int, device=None) -> Tensor:
    """DETR sine encoding (normalised, temperature 10000) of an H x W map.

    Returns:
        (C, H, W) float32: the first C/2 channels encode y, the rest x.
    """
    if channels % 4:
        raise ValueError(f"position encoding needs channels divisible by 4, got {channels}")
    half = channels // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    pos_y = y[:, None] / dim_t  # (H, C/2)
    pos_x = x[:, None] / dim_t  # (W, C/2)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    return torch.cat(
        (pos_y[:, None, :].expand(height, width, half), pos_x[None, :, :].expand(height, width, half)),
        dim=2,
    ).permute(2, 0, 1)


def _windows(x: Tensor, splits: int) -> Tensor:
    """(B, H, W, C) -> (B * splits^2, H/splits * W/splits, C)."""
    B, H, W, C = x.shape
    h, w = H // splits, W // splits
    # (B, s, h, s, w, C) -> (B, s, s, h, w, C)
    x = x.view(B, splits, h, splits, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * splits * splits, h * w, C)


def _merge_windows(x: Tensor, B: int, H: int, W: int, splits: int) -> Tensor:
    """Inverse of :func:`_windows`: (B * s^2, h * w, C) -> (B, H, W, C)."""
    h, w = H // splits, W // splits
    C = x.shape[-1]
    x = x.view(B, splits, splits, h, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def _attention_bias(valid: Tensor, splits: int, shift: tuple[int, int]) -> Tensor:
    """Additive attention bias per window.

    Args:
        valid: (H, W) bool, False at padded positions.
        splits: windows per axis.
        shift: (sh, sw) window shift in pixels, (0, 0) for unshifted blocks.

    Returns:
        (s^2, L, L) float: 0 where query and key may attend, a large negative value where the
        key is padding or lies in another Swin region of the shifted map.
    """
    H, W = valid.shape
    region = torch.zeros(H, W, dtype=torch.long, device=valid.device)
    sh, sw = shift
    if sh or sw:
        h, w = H // splits, W // splits
        count = 0
        h_slices = (slice(0, -h), slice(-h, -sh), slice(-sh, None)) if sh else (slice(None),)
        w_slices = (slice(0, -w), slice(-w, -sw), slice(-sw, None)) if sw else (slice(None),)
        for hs in h_slices:
            for ws in w_slices:
                region[hs, ws] = count
                count += 1
    # region ids are assigned on the already-rolled map (Swin); padding is rolled with the features
    valid = torch.roll(valid, shifts=(-sh, -sw), dims=(0, 1))
    region_w = _windows(region[None, :, :, None], splits)[..., 0]  # (s^2, L)
    valid_w = _windows(valid[None, :, :, None], splits)[..., 0]  # (s^2, L)
    blocked = (region_w[:, :, None] != region_w[:, None, :]) | ~valid_w[:, None, :]
    return blocked.float() * _MASKED


class _WindowAttention(nn.Module):
    """Single-head attention inside windows: q/k/v/merge linears without bias, then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)

    def forward(self, source: Tensor, target: Tensor, bias: Tensor, splits: int, shift) -> Tensor:
        """Message from ``target`` to ``source``, both (B, H, W, C); returns (B, H, W, C)."""
        B, H, W, C = source.shape
        sh, sw = shift
        q = torch.roll(self.q_proj(source), shifts=(-sh, -sw), dims=(1, 2))
        k = torch.roll(self.k_proj(target), shifts=(-sh, -sw), dims=(1, 2))
        v = torch.roll(self.v_proj(target), shifts=(-sh, -sw), dims=(1, 2))
        q, k, v = (_windows(t, splits) for t in (q, k, v))  # (B * s^2, L, C)
        scores = q @ k.transpose(1, 2) / math.sqrt(C)  # (B * s^2, L, L)
        # bias is (s^2, L, L); windows are ordered batch-major
        scores = scores.view(B, -1, *scores.shape[1:]) + bias.to(scores.dtype)
        message = scores.softmax(-1).flatten(0, 1) @ v
        message = _merge_windows(message, B, H, W, splits)
        message = torch.roll(message, shifts=(sh, sw), dims=(1, 2))
        return self.norm1(self.merge(message))


class CrossViewBlock(nn.Module):
    """One CVT block: windowed self-attention, then cross-attention + MLP on concat[x, message].

    Args:
        dim: C, feature width (128 in the official teacher).
        ffn_expansion: MLP hidden width is ``2 * dim * ffn_expansion``.
    """

    def __init__(self, dim: int, ffn_expansion: int = 4):
        super().__init__()
        self.self_attn = _WindowAttention(dim)
        self.cross_attn = _WindowAttention(dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, 2 * dim * ffn_expansion, bias=False),
            nn.GELU(),
            nn.Linear(2 * dim * ffn_expansion, dim, bias=False),
        )
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, partner: Tensor, bias: Tensor, splits: int, shift) -> Tensor:
        """x: (B, H, W, C) views, partner: (B,) index of each view's partner -> (B, H, W, C)."""
        x = x + self.self_attn(x, x, bias, splits, shift)
        message = self.cross_attn(x, x[partner], bias, splits, shift)
        return x + self.norm2(self.mlp(torch.cat((x, message), dim=-1)))


class CrossViewTransformer(nn.Module):
    """Refine features of V views of one scene with attention between consecutive views.

    Args:
        dim: C, feature width.
        num_layers: blocks (6 in the official teacher); odd blocks use shifted windows.
        splits: windows per axis (2 = 2x2 windows, the official ``attn_num_splits``).
        ffn_expansion: MLP width factor.

    Example:
        >>> cvt = CrossViewTransformer(dim=32, num_layers=2)
        >>> cvt(torch.randn(2, 3, 32, 5, 7)).shape
        torch.Size([2, 3, 32, 5, 7])
    """

    def __init__(self, dim: int = 128, num_layers: int = 6, splits: int = 2, ffn_expansion: int = 4):
        super().__init__()
        if dim % 4:
            raise ValueError(f"CrossViewTransformer dim must be divisible by 4, got {dim}")
        self.dim = dim
        self.splits = splits
        self.layers = nn.ModuleList(CrossViewBlock(dim, ffn_expansion) for _ in range(num_layers))

    def forward(self, features: Tensor) -> Tensor:
        """(B, V, C, H, W) per-view features -> (B, V, C, H, W) refined features."""
        B, V, C, H, W = features.shape
        if C != self.dim:
            raise ValueError(f"CrossViewTransformer expects {self.dim} channels, got {C}")
        if V < 2:
            return features
        s = self.splits
        Hp, Wp = math.ceil(H / s) * s, math.ceil(W / s) * s
        x = nn.functional.pad(features.flatten(0, 1), (0, Wp - W, 0, Hp - H))  # (B*V, C, Hp, Wp)
        pos = sine_position_encoding(Hp // s, Wp // s, C, device=x.device).to(x.dtype)
        x = x + pos.repeat(1, s, s)
        x = x.permute(0, 2, 3, 1)  # (B*V, Hp, Wp, C)
        valid = torch.zeros(Hp, Wp, dtype=torch.bool, device=x.device)
        valid[:H, :W] = True
        partner_view = torch.arange(1, V + 1, device=x.device)
        partner_view[-1] = V - 2
        partner = (torch.arange(B, device=x.device)[:, None] * V + partner_view).flatten()
        shift_hw = ((Hp // s) // 2, (Wp // s) // 2)
        biases = {}
        for i, layer in enumerate(self.layers):
            shift = shift_hw if i % 2 else (0, 0)
            if shift not in biases:
                biases[shift] = _attention_bias(valid, s, shift)
            x = layer(x, partner, biases[shift], s, shift)
        x = x.permute(0, 3, 1, 2)[:, :, :H, :W]  # (B*V, C, H, W)
        return x.reshape(B, V, C, H, W)
