"""Learned embeddings of the occupancy block: the voxel queries and the DSA map's positional encoding.

Example:
    >>> VoxelQueries((4, 4, 2), 8, "factorized")().shape
    torch.Size([32, 8])
    >>> LearnedPositionalEncoding(4, 3, 5)().shape
    torch.Size([15, 8])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LearnedPositionalEncoding", "VoxelQueries"]


class LearnedPositionalEncoding(nn.Module):
    """mmdet LearnedPositionalEncoding: pixel (row, col) -> [col_embed(col), row_embed(row)].

    Returns (H*W, 2F) in row-major pixel order.
    """

    def __init__(self, num_feats: int, rows: int, cols: int):
        super().__init__()
        self.row_embed = nn.Embedding(rows, num_feats)
        self.col_embed = nn.Embedding(cols, num_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self) -> Tensor:
        h, w = self.row_embed.num_embeddings, self.col_embed.num_embeddings
        f = self.row_embed.embedding_dim
        col = self.col_embed.weight[None].expand(h, w, f)
        row = self.row_embed.weight[:, None].expand(h, w, f)
        return torch.cat([col, row], -1).reshape(h * w, 2 * f)


class VoxelQueries(nn.Module):
    """Learned voxel queries in flat order: a per-voxel table (official) or per-axis sums."""

    def __init__(self, size: tuple[int, int, int], dim: int, kind: str):
        super().__init__()
        self.size, self.kind = size, kind
        if kind == "per_voxel":
            self.weight = nn.Parameter(torch.randn(size[0] * size[1] * size[2], dim))
        else:
            self.x_embed = nn.Parameter(torch.randn(size[0], dim) / math.sqrt(3))
            self.y_embed = nn.Parameter(torch.randn(size[1], dim) / math.sqrt(3))
            self.z_embed = nn.Parameter(torch.randn(size[2], dim) / math.sqrt(3))

    def forward(self) -> Tensor:
        """(X*Y*Z, C) queries."""
        if self.kind == "per_voxel":
            return self.weight
        x, y, z = self.size
        emb = self.x_embed[:, None, None] + self.y_embed[None, :, None] + self.z_embed[None, None, :]
        return emb.reshape(x * y * z, -1)
