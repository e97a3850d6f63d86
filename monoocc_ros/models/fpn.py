"""Single-level FPN neck (mmdet FPN with one input level and ``num_outs=1``).

Example:
    >>> import torch
    >>> FPN(1024, 128)(torch.zeros(1, 1024, 24, 77)).shape
    torch.Size([1, 128, 24, 77])
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FPN"]


class FPN(nn.Module):
    """1x1 lateral conv then 3x3 output conv, both with bias and no activation.

    Shapes:
        (B, C_in, H, W) -> (B, C_out, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.lateral = nn.Conv2d(in_channels, out_channels, 1)
        self.out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        for conv in (self.lateral, self.out):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.lateral(x))
