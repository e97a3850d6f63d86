"""ResNet trunk with torchvision parameter names, cut after a chosen stage, frozen BatchNorm.

Submodule names (``conv1``, ``bn1``, ``layer1.0.downsample.1`` ...) follow torchvision so that
ImageNet state dicts load without renaming (see :func:`load_torchvision_state_dict`).

The model builds its trunk with :func:`build_trunk` from a :class:`TrunkConfig` (ResNet-50/101 by
``depth``, or any bottleneck counts by ``blocks``); every trunk has ``out_channels`` and ``stride``.

Example:
    >>> net = build_trunk(TrunkConfig(depth=50))
    >>> net(torch.zeros(1, 3, 64, 64)).shape, net.out_channels, net.stride
    (torch.Size([1, 1024, 4, 4]), 1024, 16)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from monoocc_ros.models.config import RESNET_BLOCKS, TrunkConfig
from monoocc_ros.models.pooling import max_pool_3x3_s2
from monoocc_ros.models.state_dict import clean_state_dict
from monoocc_ros.native import in_graph_capture, tensors_key

__all__ = [
    "FrozenBatchNorm2d",
    "fold_into_conv",
    "norm_affine",
    "Bottleneck",
    "ResNet",
    "build_trunk",
    "resnet",
    "load_torchvision_state_dict",
    "RESNET_BLOCKS",
]


def norm_affine(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """(scale, shift) of an eval-mode batch norm (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``eps``): norm(y) = y * scale + shift per channel."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


def fold_into_conv(conv: nn.Conv2d | nn.Conv3d, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """(weight, bias) of ``conv`` followed by ``y * scale + shift`` per output channel, as one convolution."""
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1)), bias


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine terms kept as buffers (torchvision semantics).

    ``num_batches_tracked`` of plain BN checkpoints is dropped on load.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self._folded: tuple[tuple, tuple[Tensor, Tensor]] | None = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = norm_affine(self)
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def folded_into(self, conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
        """(weight, bias) of ``conv`` followed by this norm, as one convolution; cached until the
        conv's weight or a buffer changes (a new version or storage)."""
        key = tensors_key((conv.weight, self.weight, self.bias, self.running_mean, self.running_var))
        if self._folded is None or self._folded[0] != key:
            weight, bias = fold_into_conv(conv, *norm_affine(self))
            self._folded = (key, (weight.detach(), bias.detach()))
        return self._folded[1]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def conv_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d, x: Tensor) -> Tensor:
    """``bn(conv(x))``; without autograd one convolution with the norm folded into its weight and bias:
    the norm's multiply and add are two passes over every activation of the small trunk."""
    if torch.is_grad_enabled() or in_graph_capture():
        return bn(conv(x))
    weight, bias = bn.folded_into(conv)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class Bottleneck(nn.Module):
    """torchvision ResNet v1.5 bottleneck (stride on the 3x3 conv, mmdet style='pytorch')."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), FrozenBatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        y = self.relu(conv_bn(self.conv1, self.bn1, x))
        y = self.relu(conv_bn(self.conv2, self.bn2, y))
        y = conv_bn(self.conv3, self.bn3, y)
        return self.relu(y + identity)


class ResNet(nn.Module):
    """ResNet stem and the first ``len(blocks)`` stages; returns the last stage's features.

    Args:
        blocks: bottleneck count per built stage, e.g. (3, 4, 6) = ResNet-50 up to layer3.
        base_width: stem / layer1 width (64 in torchvision).
        frozen_stages: 0 = nothing frozen, 1 = stem + layer1, k = stem + layer1..layerk.

    Attributes:
        gradient_checkpointing: in training, recompute the stages in backward (off by default).

    Shapes:
        input (B, 3, H, W) normalised image -> (B, base_width * 2**(S-1) * 4, H/stride, W/stride),
        stride = 4 * 2**(S-1) for S = len(blocks).
    """

    def __init__(self, blocks: tuple[int, ...], base_width: int = 64, frozen_stages: int = 1):
        super().__init__()
        if not 1 <= len(blocks) <= 4:
            raise ValueError(f"ResNet needs 1..4 stages, got blocks={blocks}")
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = base_width
        self.stage_names: list[str] = []
        for idx, count in enumerate(blocks):
            planes = base_width * 2**idx
            stride = 1 if idx == 0 else 2
            layers = [Bottleneck(in_ch, planes, stride)]
            in_ch = planes * Bottleneck.expansion
            layers += [Bottleneck(in_ch, planes) for _ in range(count - 1)]
            name = f"layer{idx + 1}"
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)
        self.out_channels = in_ch
        self.stride = 4 * 2 ** (len(blocks) - 1)
        self.frozen_stages = frozen_stages
        self.gradient_checkpointing = False
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_stages >= 1:
            for p in self.conv1.parameters():
                p.requires_grad_(False)
        for name in self.stage_names[: self.frozen_stages]:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(conv_bn(self.conv1, self.bn1, x))
        # without autograd, the strided-maxima pooling (the same values, 4x faster on CPU)
        x = self.maxpool(x) if torch.is_grad_enabled() else max_pool_3x3_s2(x)
        for name in self.stage_names:
            stage = getattr(self, name)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # recompute each stage in backward instead of keeping its activations
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x


def build_trunk(cfg: TrunkConfig) -> ResNet:
    """The image trunk a :class:`TrunkConfig` describes (a module with ``out_channels`` and ``stride``).

    Shapes:
        (B, 3, H, W) normalised image -> (B, cfg.out_channels, H/cfg.stride, W/cfg.stride).
    """
    return ResNet(cfg.stage_blocks, cfg.base_width, cfg.frozen_stages)


def resnet(depth: int, *, num_stages: int = 3, frozen_stages: int = 1) -> ResNet:
    """torchvision-compatible ResNet-50/101 truncated after ``num_stages`` stages."""
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    return build_trunk(TrunkConfig(depth=depth, num_stages=num_stages, frozen_stages=frozen_stages))


def load_torchvision_state_dict(trunk: ResNet, state_dict: dict[str, Tensor]) -> dict[str, list[str]]:
    """Load a torchvision-format ResNet state dict into a truncated trunk.

    Keys of stages that were not built (``layer4`` when cut after layer3) and of the classifier
    (``fc``) are dropped explicitly; everything else must match by name and shape.

    Returns:
        {"dropped": keys dropped on purpose, "missing": trunk keys absent from the file}.

    Raises:
        ValueError: on shape mismatches or keys that belong to no known part of a ResNet.
    """
    own = trunk.state_dict()
    built = {"conv1", "bn1", *trunk.stage_names}
    dropped, unexpected, load = [], [], {}
    for key, value in clean_state_dict(state_dict).items():
        root = key.split(".", 1)[0]
        if key.endswith("num_batches_tracked"):
            dropped.append(key)
        elif root not in built:
            if root in ("fc", "layer1", "layer2", "layer3", "layer4"):
                dropped.append(key)
            else:
                unexpected.append(key)
        elif key not in own:
            unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"torchvision ResNet key {key}: shape {tuple(value.shape)} does not fit the trunk's "
                f"{tuple(own[key].shape)}"
            )
        else:
            load[key] = value
    if unexpected:
        raise ValueError(f"keys that belong to no part of a torchvision ResNet: {unexpected[:10]}")
    missing = sorted(set(own) - set(load))
    with torch.no_grad():
        for key, value in load.items():
            own[key].copy_(value)
    return {"dropped": sorted(dropped), "missing": missing}
