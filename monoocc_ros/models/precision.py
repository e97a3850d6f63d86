"""Arithmetic that stays float32 when the caller runs the network under autocast.

Autocast (``precision: bf16`` or ``fp16``) runs every matrix product in the reduced dtype: ``@``,
``einsum``, ``linear`` and convolutions alike. That is what the network's GEMMs want, but not camera
geometry or products of weights folded once per frame: bf16 keeps 8 significant bits, so a KITTI
``K @ T`` (focal length 707 px) and the projection of a voxel 50 m ahead come out several pixels
off, which moves every reference point and sampling location of the frame; the trained
``monoocc_s`` then agreed with its fp32 labels on 99.0 % of the voxels instead of over 99.5 %
(``bench/bench_backends.py``, README "Real time"). Those few products cost nothing in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor


def autocast_off(like: Tensor) -> torch.autocast:
    """A context in which autocast is off for ``like``'s device: float32 products stay float32."""
    return torch.autocast(like.device.type, enabled=False)
