"""Stage 2 of MonoOcc: deformable cross-attention on proposed voxel queries, mask tokens,
deformable self-attention over the grid seen as a 512x512 map, and image-conditioned
cross-attention (ICA) over all voxels (spec §1.5-1.8).

Voxel order everywhere is the flat index (i * Y + j) * Z + k of the 128x128x16 half grid.
The DSA views those Q = 262144 voxels as a 512x512 image: row = n // 512, col = n % 512.
Another grid (``ModelConfig.grid``) gets the map of :func:`dsa_map_hw` (the most square factorisation).

Example:
    >>> block = OccupancyBlock(VoxelStageConfig(embed_dim=32, num_heads=4, num_points=4, ffn_dim=64,
    ...     num_dca_layers=1, num_dsa_layers=1, num_ica_layers=1, query_embedding="factorized"))
    >>> feats = torch.randn(1, 1, 32, 6, 20)
    >>> block(feats, torch.eye(4).expand(1, 1, 4, 4), (96, 320)).shape
    torch.Size([1, 32, 128, 128, 16])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from monoocc_ros.grid import KITTI_GRID_HALF, VoxelGrid
from monoocc_ros.models.config import VoxelStageConfig
from monoocc_ros.models.deform_attn import deformable_attention
from monoocc_ros.models.precision import autocast_off
from monoocc_ros.models.profiling import stage_timer
from monoocc_ros.models.voxel_embeddings import LearnedPositionalEncoding, VoxelQueries
from monoocc_ros.models.voxel_inference import forward_inference, pixel_reference
from monoocc_ros.native import tensors_key

__all__ = [
    "FFN",
    "DeformableSampler",
    "DeformCrossAttention",
    "DeformSelfAttention",
    "CrossAttentionLayer",
    "SelfAttentionLayer",
    "LearnedPositionalEncoding",
    "VoxelQueries",
    "OccupancyBlock",
    "project_voxels",
    "dsa_reference_points",
    "DSA_MAP_HW",
    "dsa_map_hw",
    "stage_timer",
]

DSA_MAP_HW = (512, 512)


def dsa_map_hw(num_voxels: int) -> tuple[int, int]:
    """(h, w) of the map DSA sees Q voxels as: h the largest divisor of Q with h <= w = Q / h.

    (512, 512) for the 128x128x16 SemanticKITTI working grid, (128, 256) for 64x64x8.
    """
    h = math.isqrt(num_voxels)
    while num_voxels % h:
        h -= 1
    return h, num_voxels // h


def _grid_bias(num_heads: int, num_groups: int, num_points: int) -> Tensor:
    """Deformable-DETR offset init: head h looks along angle 2*pi*h/N, point p at distance p+1."""
    thetas = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = grid / grid.abs().max(-1, keepdim=True)[0]
    grid = grid.view(num_heads, 1, 1, 2).repeat(1, num_groups, num_points, 1)
    grid *= torch.arange(1, num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
    return grid.reshape(-1)


class FFN(nn.Module):
    """x + Dropout(Linear(Dropout(ReLU(Linear(x))))) (mmcv FFN, two layers)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x)))))


class DeformableSampler(nn.Module):
    """MSDeformableAttention3D with one level and one anchor per query: offsets, weights, values.

    Args:
        dim: C. num_heads: N. num_points: P. chunk: queries sampled at once.
    """

    def __init__(self, dim: int, num_heads: int, num_points: int, chunk: int):
        super().__init__()
        self.num_heads, self.num_points, self.chunk = num_heads, num_points, chunk
        self.sampling_offsets = nn.Linear(dim, num_heads * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_points)
        self.value_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(_grid_bias(num_heads, 1, num_points))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)

    def forward(self, query: Tensor, value: Tensor, reference: Tensor, shape_hw: tuple[int, int]) -> Tensor:
        """
        Args:
            query: (B, Q, C). value: (B, S, C) with S = H*W. reference: (B, Q, 2) (x, y) in [0, 1].
            shape_hw: (H, W) of the value map.

        Returns:
            (B, Q, C) sampled features (no output projection).
        """
        B, Q, C = query.shape
        N, P = self.num_heads, self.num_points
        h, w = shape_hw
        # (B, S, C) -> (B, S, N, Dh)
        v = self.value_proj(value).view(B, -1, N, C // N)
        normalizer = query.new_tensor([w, h])
        outs = []
        for s in range(0, Q, self.chunk):
            q = query[:, s : s + self.chunk]
            n = q.shape[1]
            offsets = self.sampling_offsets(q).view(B, n, N, 1, P, 2)
            weights = self.attention_weights(q).view(B, n, N, P).softmax(-1).view(B, n, N, 1, P)
            loc = reference[:, s : s + self.chunk, None, None, None, :] + offsets / normalizer
            outs.append(deformable_attention(v, [shape_hw], loc, weights))
        return torch.cat(outs, 1)


class DeformCrossAttention(nn.Module):
    """Per-view deformable cross-attention on visible queries, averaged over views (spec §1.6).

    Invisible queries receive output_proj(0) = output_proj.bias plus the residual.
    """

    def __init__(self, dim: int, num_heads: int, num_points: int, dropout: float, chunk: int):
        super().__init__()
        self.deformable_attention = DeformableSampler(dim, num_heads, num_points, chunk)
        self.output_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, value: Tensor, reference: Tensor, visible: Tensor, shape_hw: tuple[int, int]) -> Tensor:
        """
        Args:
            query: (B, Q, C). value: (B, V, S, C). reference: (B, V, Q, 2) in [0, 1].
            visible: (B, V, Q) bool. shape_hw: (Hf, Wf).

        Returns:
            (B, Q, C).
        """
        B, V = value.shape[:2]
        per_sample = []
        for b in range(B):
            slots = torch.zeros_like(query[b])
            for v in range(V):
                idx = visible[b, v].nonzero(as_tuple=True)[0]
                if idx.numel() == 0:
                    continue
                out = self.deformable_attention(
                    query[b, idx][None], value[b, v][None], reference[b, v, idx][None], shape_hw
                )[0]
                slots = slots.index_add(0, idx, out.to(slots.dtype))
            per_sample.append(slots)
        count = visible.sum(1).clamp(min=1).to(query.dtype)
        slots = torch.stack(per_sample) / count[..., None]
        return query + self.dropout(self.output_proj(slots))


class DeformSelfAttention(nn.Module):
    """BEVFormer temporal self-attention with a queue of two copies of the current map (spec §1.7).

    Offsets and weights come from concat[x, x + pos]; values from x. Since both queue entries hold
    the same values, averaging the two sampled results equals one sampling with 2P points and
    halved weights, which is what this does.
    """

    num_queue = 2

    def __init__(self, dim: int, num_heads: int, num_points: int, dropout: float, chunk: int):
        super().__init__()
        self.num_heads, self.num_points, self.chunk = num_heads, num_points, chunk
        nq = self.num_queue
        self.sampling_offsets = nn.Linear(dim * nq, nq * num_heads * num_points * 2)
        self.attention_weights = nn.Linear(dim * nq, nq * num_heads * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(_grid_bias(num_heads, nq, num_points))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, map_hw: tuple[int, int] = DSA_MAP_HW) -> Tensor:
        """
        Args:
            x: (B, Q, C) voxel features in flat order, Q = h * w (512 * 512).
            pos: (Q, C) positional encoding. reference: (Q, 2) pixel centres in [0, 1].
            map_hw: (h, w) of the map the voxels are seen as (:func:`dsa_map_hw`).

        Returns:
            (B, Q, C).
        """
        B, Q, C = x.shape
        N, P, nq = self.num_heads, self.num_points, self.num_queue
        h, w = map_hw
        if Q != h * w:
            raise ValueError(f"DSA expects {h * w} voxels (a {h}x{w} map), got {Q}")
        # (B, Q, C) -> (B, Q, N, Dh); the flat voxel order is the row-major 512x512 map
        v = self.value_proj(x).view(B, Q, N, C // N)
        normalizer = x.new_tensor([w, h])
        outs = []
        for s in range(0, Q, self.chunk):
            xc = x[:, s : s + self.chunk]
            n = xc.shape[1]
            q = torch.cat([xc, xc + pos[s : s + self.chunk]], -1)
            # (B, n, N, queue, P, 2) -> (B, n, N, 1, queue*P, 2)
            offsets = self.sampling_offsets(q).view(B, n, N, nq, P, 2).reshape(B, n, N, 1, nq * P, 2)
            weights = self.attention_weights(q).view(B, n, N, nq, P).softmax(-1) / nq
            weights = weights.reshape(B, n, N, 1, nq * P)
            loc = reference[None, s : s + self.chunk, None, None, None, :] + offsets / normalizer
            outs.append(deformable_attention(v, [map_hw], loc, weights))
        return x + self.dropout(self.output_proj(torch.cat(outs, 1)))


class CrossAttentionLayer(nn.Module):
    """Post-norm layer: DeformCrossAttention -> LN -> FFN -> LN (DCA and ICA)."""

    def __init__(self, cfg: VoxelStageConfig):
        super().__init__()
        c = cfg.embed_dim
        self.attn = DeformCrossAttention(c, cfg.num_heads, cfg.num_points, cfg.dropout, cfg.query_chunk)
        self.norm1 = nn.LayerNorm(c)
        self.ffn = FFN(c, cfg.ffn_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(c)

    def forward(self, query: Tensor, value: Tensor, reference: Tensor, visible: Tensor, shape_hw: tuple[int, int]) -> Tensor:
        x = self.norm1(self.attn(query, value, reference, visible, shape_hw))
        return self.norm2(self.ffn(x))


class SelfAttentionLayer(nn.Module):
    """Post-norm layer: DeformSelfAttention -> LN -> FFN -> LN."""

    def __init__(self, cfg: VoxelStageConfig):
        super().__init__()
        c = cfg.embed_dim
        self.attn = DeformSelfAttention(c, cfg.num_heads, cfg.num_points, cfg.dropout, cfg.query_chunk)
        self.norm1 = nn.LayerNorm(c)
        self.ffn = FFN(c, cfg.ffn_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(c)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, map_hw: tuple[int, int] = DSA_MAP_HW) -> Tensor:
        return self.norm2(self.ffn(self.norm1(self.attn(x, pos, reference, map_hw))))


def project_voxels(centres: Tensor, lidar2img: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Project voxel centres into each view (official MonoOcc visibility rule, spec §1.5).

    Args:
        centres: (Q, 3) voxel centres in the grid frame (metres).
        lidar2img: (B, V, 4, 4) K4 @ T_cam_grid per view.
        image_hw: (H, W) of the image K belongs to.

    Returns:
        reference: (B, V, Q, 2) normalised (u/W, v/H); visible: (B, V, Q) bool.
    """
    h, w = image_hw
    lidar2img = lidar2img.to(torch.float32)
    pts = torch.cat([centres.to(torch.float32), centres.new_ones(centres.shape[0], 1, dtype=torch.float32)], 1)
    # (B, V, 4, 4) x (Q, 4) -> (B, V, Q, 4)
    with autocast_off(pts):
        cam = torch.einsum("bvij,qj->bvqi", lidar2img, pts)
    depth = cam[..., 2:3]
    uv = cam[..., :2] / depth.clamp(min=1e-5)
    reference = uv / uv.new_tensor([w, h])
    visible = (depth[..., 0] > 1e-5) & (reference > 0).all(-1) & (reference < 1).all(-1)
    return reference, visible


def dsa_reference_points(map_hw: tuple[int, int] = DSA_MAP_HW) -> Tensor:
    """(h*w, 2) centres ((col + 0.5) / w, (row + 0.5) / h) in flat order (h = w = 512 by default)."""
    h, w = map_hw
    ys, xs = torch.meshgrid(
        (torch.arange(h, dtype=torch.float32) + 0.5) / h,
        (torch.arange(w, dtype=torch.float32) + 0.5) / w,
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


class OccupancyBlock(nn.Module):
    """Improved occupancy prediction block: DCA on proposed queries + mask token + DSA + ICA.

    Works with V views (the teacher's temporal frames): DCA/ICA average over the views that
    see each voxel.
    """

    def __init__(self, cfg: VoxelStageConfig, grid: VoxelGrid = KITTI_GRID_HALF):
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        # the working (coarse) grid, ModelConfig.coarse_grid; DSA sees its voxels as a map_hw image
        self.grid_size = grid.size
        self.map_hw = dsa_map_hw(grid.num_voxels)
        self.queries = VoxelQueries(self.grid_size, c, cfg.query_embedding)
        self.mask_token = nn.Parameter(torch.randn(1, c))
        self.positional_encoding = LearnedPositionalEncoding(c // 2, *self.map_hw)
        self.dca = nn.ModuleList(CrossAttentionLayer(cfg) for _ in range(cfg.num_dca_layers))
        self.dsa = nn.ModuleList(SelfAttentionLayer(cfg) for _ in range(cfg.num_dsa_layers))
        self.ica = nn.ModuleList(CrossAttentionLayer(cfg) for _ in range(cfg.num_ica_layers)) if cfg.use_ica else None
        self.register_buffer(
            "centres", torch.from_numpy(grid.centres()).to(torch.float32), persistent=False
        )
        self.register_buffer("dsa_reference", dsa_reference_points(self.map_hw), persistent=False)
        # (2, Q) DSA reference points in map pixels, for the inference path
        self.register_buffer("dsa_pixel_ref", pixel_reference(self.dsa_reference, self.map_hw), persistent=False)
        self._camera_cache: tuple[tuple, dict[str, Tensor]] | None = None
        self._positions_cache: tuple[tuple, Tensor] | None = None

    # Inference (eval mode, no autograd, one frame, one view) takes the cache-friendly path of
    # voxel_inference; False forces the training path everywhere (benchmarks compare the two).
    fast_inference = True

    def inference_positions(self) -> Tensor:
        """(Q, C) DSA positional encoding, built once per version of its weights.

        Expanding and concatenating the row and column embeddings writes Q * C floats (16 MB at
        ``tiny``'s 512 x 512 map, 1.5 ms on 2 cores) that are the same in every frame.
        """
        key = tensors_key(self.positional_encoding.parameters())
        if self._positions_cache is None or self._positions_cache[0] != key:
            self._positions_cache = (key, self.positional_encoding())
        return self._positions_cache[1]

    def camera_geometry(self, lidar2img: Tensor, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Projection of the voxel centres for one camera, computed once per calibration.

        Args:
            lidar2img: (1, 1, 4, 4). image_hw: (H, W). feature_hw: (Hf, Wf) of the value map.

        Returns:
            "reference" (Q, 2) in [0, 1], "pixel_ref" (2, Q) in feature-map pixels,
            "visible" (Q,) bool, "visible_idx" (K,) int64. Recomputed when K, T or a size change.
        """
        key = (lidar2img.detach().to("cpu", torch.float64).numpy().tobytes(), tuple(image_hw), tuple(feature_hw),
               str(lidar2img.device))
        if self._camera_cache is None or self._camera_cache[0] != key:
            reference, visible = project_voxels(self.centres, lidar2img, image_hw)
            reference, visible = reference[0, 0], visible[0, 0]
            geometry = {
                "reference": reference,
                "pixel_ref": pixel_reference(reference, feature_hw),
                "visible": visible,
                "visible_idx": visible.nonzero(as_tuple=True)[0],
            }
            self._camera_cache = (key, geometry)
        return self._camera_cache[1]

    def _run(self, layer: nn.Module, *args) -> Tensor:
        if self.cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def forward(
        self,
        features: Tensor,
        lidar2img: Tensor,
        image_hw: tuple[int, int],
        proposals: Tensor | None = None,
        min_queries: int = 1,
        timings: dict[str, float] | None = None,
    ) -> Tensor:
        """
        Args:
            features: (B, V, C, Hf, Wf) image features per view.
            lidar2img: (B, V, 4, 4) grid frame -> homogeneous pixels per view.
            image_hw: (H, W) of the input images.
            proposals: (B, X, Y, Z) bool voxels to query in DCA; None = all voxels.
            min_queries: below this many proposals, all visible voxels are queried instead.
            timings: filled with milliseconds per stage when given.

        Returns:
            (B, C, X, Y, Z) voxel features (ICA output when ICA is on, else DSA output).
        """
        B, V, C, hf, wf = features.shape
        dev = features.device
        if self.fast_inference and B == 1 and V == 1 and not self.training and not torch.is_grad_enabled():
            return forward_inference(self, features, lidar2img, image_hw, proposals, min_queries, timings)
        # (B, V, C, Hf, Wf) -> (B, V, Hf*Wf, C)
        value = features.flatten(3).transpose(2, 3)
        reference, visible = project_voxels(self.centres, lidar2img, image_hw)
        any_visible = visible.any(1)
        queries = self.queries()
        with stage_timer(timings, "cross_attention", dev):
            dense = []
            for b in range(B):
                if proposals is None:
                    chosen = torch.ones_like(any_visible[b])
                else:
                    chosen = proposals[b].reshape(-1).to(torch.bool)
                    if int(chosen.sum()) < min_queries:
                        # too few proposals: fall back to what the camera sees, never zero queries
                        chosen = any_visible[b] if bool(any_visible[b].any()) else torch.ones_like(chosen)
                idx = chosen.nonzero(as_tuple=True)[0]
                q = queries[idx][None]
                for layer in self.dca:
                    q = self._run(layer, q, value[b : b + 1], reference[b : b + 1, :, idx], visible[b : b + 1, :, idx], (hf, wf))
                full = self.mask_token.expand(queries.shape[0], C).to(q.dtype)
                dense.append(full.index_copy(0, idx, q[0]))
            x = torch.stack(dense)
        with stage_timer(timings, "self_attention", dev):
            pos = self.positional_encoding()
            for layer in self.dsa:
                x = self._run(layer, x, pos, self.dsa_reference, self.map_hw)
        if self.ica is not None:
            with stage_timer(timings, "ica", dev):
                for layer in self.ica:
                    x = self._run(layer, x, value, reference, visible, (hf, wf))
        X, Y, Z = self.grid_size
        # (B, Q, C) -> (B, C, X, Y, Z)
        return x.transpose(1, 2).reshape(B, C, X, Y, Z)
