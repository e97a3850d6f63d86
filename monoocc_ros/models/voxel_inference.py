"""Inference path of the occupancy block's attention layers: same parameters, same maths, less memory traffic.

The training path (``voxel_transformer``) builds every intermediate for the whole query set
(offsets, locations, the (B*N, Dh, Q, P) sampled tensor, its weighted copy) and transposes them
between layouts. Here, with one frame and one view and no autograd, each layer runs in chunks of
queries sized so that every intermediate stays in the CPU caches, and the layouts are chosen so
that no large tensor is transposed:

- locations are kept in pixels (reference * (W, H) - 0.5 + offset, the offset projection's own unit);
- the offsets and attention logits come from one GEMM over the chunk's queries, and the softmax,
  bilinear corners, sampling and the sum over points are one C loop over those rows
  (:func:`fused_layers.deform_attend`) that reads each corner's channels as one contiguous value row
  (in bf16 when the value rows are: under bf16 autocast the GEMMs make them so);
- without a C compiler (the fallback and reference) the offsets and logits are computed transposed,
  (heads, points, 2, m) and (heads, groups, points, m), so the softmax runs over an outer axis,
  ``grid_sample`` reads the transposed locations as a strided grid and the (heads, Dh, points, m)
  samples are weighted in place and summed;
- the output projection, residual, LayerNorm, FFN and LayerNorm run on the chunk's rows while they are
  in cache;
- for narrow models (C <= 64: ``tiny``) all of the above is one C pass per query instead
  (:mod:`fused_layers`), with this operator chain as its fallback and reference.

The module reads the layers' parameters; it owns none, so checkpoints are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monoocc_ros.models import fused_layers
from monoocc_ros.models.profiling import stage_timer

__all__ = ["forward_inference", "cross_attention_layer", "self_attention_layer", "post_attention", "chunk_size", "sample_weighted", "pixel_reference"]

# Floats of all intermediates of one chunk (32 MB, within a server L3). Larger chunks also mean
# fewer operator calls: each parallel call costs a thread barrier, which on a loaded machine (the
# node shares its cores with the camera driver and the consumers) can cost a scheduler time slice.
CHUNK_FLOATS = 1 << 23
MIN_CHUNK = 1024


def chunk_size(floats_per_query: int) -> int:
    """Queries per chunk so that ``floats_per_query * chunk`` stays near :data:`CHUNK_FLOATS`."""
    return max(MIN_CHUNK, CHUNK_FLOATS // max(1, floats_per_query))


def _floats_per_query(dim: int, points: int, ffn_dim: int) -> int:
    """Intermediates per query of one layer: queries, locations and logits (3 per point), the
    sampled row, FFN hidden, LayerNorm outputs."""
    return 2 * dim + 3 * points + dim + ffn_dim + 2 * dim


def sample_weighted(value_rows: Tensor, map_hw: tuple[int, int], loc_t: Tensor, logits_t: Tensor, groups: int = 1) -> Tensor:
    """Bilinear samples of each head's value map, weighted by softmax(logits) and summed over points.

    Args:
        value_rows: (H * W, N * Dh) value rows, head-major channels.
        map_hw: (H, W).
        loc_t: (N, P, 2, m) sampling locations in pixels (x, y), the centre of pixel i at i.
        logits_t: (N, G, P / G, m) attention logits; the softmax runs within each of the G groups
            (the DSA's queue copies), and the weights are divided by G.

    Returns:
        (m, N * Dh) sampled features.
    """
    N, P, _, m = loc_t.shape
    h, w = map_hw
    value_rows = value_rows.float()  # a no-op in fp32; under bf16 autocast the sampling stays fp32
    weights = logits_t.softmax(2).reshape(N, P, m)
    if groups > 1:
        weights = weights.mul_(1.0 / groups)
    # grid_sample: (H*W, N*Dh) rows -> (N, Dh, H, W); pixels -> [-1, 1]; (N, P, 2, m) read as a strided (N, P, m, 2)
    value = value_rows.t().reshape(N, -1, h, w)
    scale = loc_t.new_tensor([2.0 / w, 2.0 / h]).view(1, 1, 2, 1)
    grid = (loc_t + 0.5).mul_(scale).sub_(1.0)
    sampled = F.grid_sample(value, grid.transpose(2, 3), mode="bilinear", padding_mode="zeros", align_corners=False)
    # (N, Dh, P, m) * (N, 1, P, m) summed over P -> (N*Dh, m) -> rows
    return sampled.mul_(weights[:, None].to(sampled.dtype)).sum(2).reshape(-1, m).t()


def pixel_reference(reference: Tensor, map_hw: tuple[int, int]) -> Tensor:
    """(Q, 2) reference points in [0, 1] -> (2, Q) pixel coordinates (pixel i centred at i)."""
    h, w = map_hw
    return (reference * reference.new_tensor([w, h]) - 0.5).t().contiguous()


def post_attention(layer: nn.Module, x: Tensor) -> Tensor:
    """LN -> FFN -> LN of a post-norm layer on rows (m, C) (eval mode: no dropout)."""
    x = F.layer_norm(x, x.shape[-1:], layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    ffn = layer.ffn
    hidden = F.relu_(F.linear(x, ffn.fc1.weight, ffn.fc1.bias))
    x = _residual(F.linear(hidden, ffn.fc2.weight, ffn.fc2.bias), x)
    return F.layer_norm(x, x.shape[-1:], layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)


def _residual(update: Tensor, x: Tensor) -> Tensor:
    """``x + update`` in float32: under bf16 autocast a GEMM's output is bf16, and the sum must not
    round the residual stream to bf16 (a no-op cast in fp32)."""
    return update.float().add_(x)


def _projection(sampler: nn.Module) -> tuple[Tensor, Tensor]:
    """The sampling-offset and attention-weight projections as one (3 N G P, Din) weight and bias:
    one GEMM gives a query's whole :func:`fused_layers.deform_attend` row."""
    weight = torch.cat([sampler.sampling_offsets.weight, sampler.attention_weights.weight], 0)
    return weight, torch.cat([sampler.sampling_offsets.bias, sampler.attention_weights.bias], 0)


def _value_rows(layer: nn.Module, x: Tensor) -> Tensor:
    """(m, C) rows -> (m, C) value rows of a SelfAttentionLayer."""
    return F.linear(x, layer.attn.value_proj.weight, layer.attn.value_proj.bias)


def _scatter_rows(fill: Tensor, n: int, idx: Tensor, rows: Tensor) -> Tensor:
    """(n, C): ``rows`` at ``idx``, the (1, C) row ``fill`` everywhere else."""
    return fill.expand(n, rows.shape[1]).index_copy(0, idx, rows)


def self_attention_layer(layer: nn.Module, x: Tensor, pos: Tensor, pixel_ref: Tensor, map_hw: tuple[int, int],
                         value: Tensor | None = None) -> Tensor:
    """One :class:`SelfAttentionLayer` on a single map.

    Args:
        layer: the SelfAttentionLayer (its ``attn`` is a DeformSelfAttention).
        x: (Q, C) voxel rows in flat order, Q = H * W of ``map_hw``.
        pos: (Q, C) positional encoding.
        pixel_ref: (2, Q) reference points in pixels (:func:`pixel_reference`).
        value: (Q, C) the value projection of ``x`` when the caller has it; computed here otherwise.

    Returns:
        (Q, C).
    """
    attn = layer.attn
    Q, C = x.shape
    N, P, nq = attn.num_heads, attn.num_points, attn.num_queue
    # the flat voxel order is the row-major map: value rows are the map's pixels
    if value is None:
        value = _value_rows(layer, x)
    if fused_layers.supports(x, P, layer.ffn.fc1.out_features, nq, N):
        return fused_layers.fused_layer(layer, attn, x, value, map_hw, pixel_ref, pos=pos, groups=nq)
    out = torch.empty_like(x)
    step = chunk_size(_floats_per_query(C, N * nq * P, layer.ffn.fc1.out_features))
    if fused_layers.attend_usable(value, N, P, nq):
        proj_w, proj_b = _projection(attn)
        for s in range(0, Q, step):
            xc = x[s : s + step]
            proj = F.linear(torch.cat([xc, xc + pos[s : s + step]], 1), proj_w, proj_b).float()
            sampled = fused_layers.deform_attend(proj, pixel_ref[:, s : s + step], value, map_hw, N, nq, P)
            rows = _residual(F.linear(sampled, attn.output_proj.weight, attn.output_proj.bias), xc)
            out[s : s + step] = post_attention(layer, rows)
        return out
    g_weight, g_bias = attn.sampling_offsets.weight, attn.sampling_offsets.bias[:, None]
    a_weight, a_bias = attn.attention_weights.weight, attn.attention_weights.bias[:, None]
    for s in range(0, Q, step):
        e = min(s + step, Q)
        xc = x[s:e]
        q = torch.cat([xc, xc + pos[s:e]], 1)
        m = e - s
        # (N*nq*P*2, m): rows (head, queue, point, xy), the same order as the training path; the
        # offsets are in pixels, so location = pixel reference + offset
        # float32 from here on: under bf16 autocast only the matmuls run in bf16, and a 512-pixel
        # coordinate keeps its sub-pixel part
        loc_t = torch.addmm(g_bias, g_weight, q.t()).float().view(N, nq * P, 2, m)
        loc_t.add_(pixel_ref[None, None, :, s:e])
        logits_t = torch.addmm(a_bias, a_weight, q.t()).float().view(N, nq, P, m)
        sampled = sample_weighted(value, map_hw, loc_t, logits_t, groups=nq)
        rows = _residual(F.linear(sampled.to(xc.dtype), attn.output_proj.weight, attn.output_proj.bias), xc)
        out[s:e] = post_attention(layer, rows)
    return out


def cross_attention_layer(
    layer: nn.Module, x: Tensor, value_map: Tensor, pixel_ref: Tensor, visible_idx: Tensor, feature_hw: tuple[int, int]
) -> Tensor:
    """One :class:`CrossAttentionLayer` (DCA or ICA) with one view.

    Visible queries sample the image features; the others get output_proj(0) = its bias, as in
    the training path.

    Args:
        x: (M, C) query rows.
        value_map: (C, Hf * Wf) image features, channel-major.
        pixel_ref: (2, M) reference points of the queries in feature-map pixels (:func:`pixel_reference`).
        visible_idx: (K,) int64 indices of the visible queries.
        feature_hw: (Hf, Wf).

    Returns:
        (M, C).
    """
    attn = layer.attn
    sampler = attn.deformable_attention
    M, C = x.shape
    N, P = sampler.num_heads, sampler.num_points
    # (C, Hf*Wf) -> (Hf*Wf, C) value rows
    value = torch.addmm(sampler.value_proj.bias, value_map.t(), sampler.value_proj.weight.t())
    if fused_layers.supports(x, P, layer.ffn.fc1.out_features, 1, N):
        visible = torch.zeros(M, dtype=torch.bool, device=x.device).index_fill_(0, visible_idx, True)
        return fused_layers.fused_layer(layer, sampler, x, value, feature_hw, pixel_ref, visible=visible)
    rows = x + attn.output_proj.bias
    step = chunk_size(_floats_per_query(C, N * P, layer.ffn.fc1.out_features))
    fast = fused_layers.attend_usable(value, N, P, 1)
    if fast:
        proj_w, proj_b = _projection(sampler)
    else:
        g_weight, g_bias = sampler.sampling_offsets.weight, sampler.sampling_offsets.bias[:, None]
        a_weight, a_bias = sampler.attention_weights.weight, sampler.attention_weights.bias[:, None]
    for s in range(0, visible_idx.numel(), step):
        idx = visible_idx[s : s + step]
        m = idx.numel()
        q = x.index_select(0, idx)
        if fast:
            proj = F.linear(q, proj_w, proj_b).float()
            sampled = fused_layers.deform_attend(proj, pixel_ref.index_select(1, idx), value, feature_hw, N, 1, P)
            rows.index_add_(0, idx, F.linear(sampled, attn.output_proj.weight).to(rows.dtype))
            continue
        loc_t = torch.addmm(g_bias, g_weight, q.t()).float().view(N, P, 2, m)
        loc_t.add_(pixel_ref[:, idx][None, None])
        logits_t = torch.addmm(a_bias, a_weight, q.t()).float().view(N, 1, P, m)
        sampled = sample_weighted(value, feature_hw, loc_t, logits_t)
        rows.index_add_(0, idx, (sampled @ attn.output_proj.weight.t()).to(rows.dtype))
    out = torch.empty_like(x)
    for s in range(0, M, step):
        out[s : s + step] = post_attention(layer, rows[s : s + step])
    return out


def forward_inference(
    block: nn.Module,
    features: Tensor,
    lidar2img: Tensor,
    image_hw: tuple[int, int],
    proposals: Tensor | None,
    min_queries: int,
    timings: dict[str, float] | None,
) -> Tensor:
    """``OccupancyBlock.forward`` of ``block`` for one frame and one view without autograd (same arguments
    and result): camera geometry cached per calibration, layers on query rows."""
    _, _, C, hf, wf = features.shape
    dev = features.device
    geometry = block.camera_geometry(lidar2img, image_hw, (hf, wf))
    # (1, 1, C, Hf, Wf) -> (C, Hf*Wf) image features; each layer projects them to value rows
    value_map = features[0, 0].reshape(C, hf * wf)
    queries = block.queries()
    num_queries = queries.shape[0]
    with stage_timer(timings, "cross_attention", dev):
        if proposals is None:
            idx = torch.arange(num_queries, device=dev)
        else:
            chosen = proposals[0].reshape(-1).to(torch.bool)
            if int(chosen.sum()) < min_queries:
                visible = geometry["visible"]
                chosen = visible if bool(visible.any()) else torch.ones_like(chosen)
            idx = chosen.nonzero(as_tuple=True)[0]
        # index_select, not advanced indexing: 0.8 against 2.9 ms for tiny's 262144 x 16 queries
        q = queries.index_select(0, idx)
        pixel_ref = geometry["pixel_ref"].index_select(1, idx)
        seen = geometry["visible"].index_select(0, idx).nonzero(as_tuple=True)[0]
        for layer in block.dca:
            q = cross_attention_layer(layer, q, value_map, pixel_ref, seen, (hf, wf))
        x = _scatter_rows(block.mask_token.to(q.dtype), num_queries, idx, q)
    with stage_timer(timings, "self_attention", dev):
        pos = block.inference_positions()
        for i, layer in enumerate(block.dsa):
            # the first layer's value rows: the rows not proposed all hold the mask token, so its
            # value projection is computed once, not once per voxel (262144 x 16 x 16 for tiny)
            value = _scatter_rows(_value_rows(layer, block.mask_token.to(q.dtype)), num_queries, idx,
                                  _value_rows(layer, q)) if i == 0 else None
            x = self_attention_layer(layer, x, pos, block.dsa_pixel_ref, block.map_hw, value=value)
    if block.ica is not None:
        with stage_timer(timings, "ica", dev):
            for layer in block.ica:
                x = cross_attention_layer(layer, x, value_map, geometry["pixel_ref"], geometry["visible_idx"], (hf, wf))
    X, Y, Z = block.grid_size
    # (Q, C) rows -> (1, C, X, Y, Z), a channels-last view
    return x.t().reshape(1, C, X, Y, Z)
