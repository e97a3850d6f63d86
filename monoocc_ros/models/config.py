"""Typed model configurations and the named variants ``monoocc_s`` and ``tiny``.

A variant is a function returning a :class:`ModelConfig`; ``MODEL_CONFIGS`` maps names to them.
Configurations round-trip through plain dicts (``dataclasses.asdict`` / :func:`model_config_from_dict`,
read by the project's one typed loader :mod:`monoocc_ros.config_io`) so checkpoints can store them;
unknown keys are rejected, missing ones take the defaults (so configs stored before a field existed
load as they were). The output grid (``grid``) and the label set (``labels``) are part of the
config: another grid or label set is a config change, e.g. ``get_model_config("tiny",
["grid.size=[128,128,16]", "grid.voxel_size_m=0.4", "labels=five.yaml", "head.num_classes=5"])``.

Example:
    >>> cfg = get_model_config("tiny")
    >>> cfg.voxel.embed_dim, cfg.grid.size, cfg.coarse_grid.size, cfg.labels
    (16, (256, 256, 32), (128, 128, 16), 'semantic_kitti')
    >>> get_model_config("tiny", ["grid.size=[128,128,16]", "grid.voxel_size_m=0.4"]).coarse_grid.size
    (64, 64, 8)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from monoocc_ros.config_io import apply_overrides, from_mapping
from monoocc_ros.grid import VoxelGrid
from monoocc_ros.labels import LabelMap, load_label_set

__all__ = [
    "TrunkConfig",
    "NeckConfig",
    "VoxelStageConfig",
    "ProposalConfig",
    "SemDecoderConfig",
    "HeadConfig",
    "ModelConfig",
    "PROPOSAL_MODES",
    "QUERY_EMBEDDINGS",
    "MODEL_CONFIGS",
    "get_model_config",
    "model_config_from_dict",
    "model_config_to_dict",
    "RESNET_BLOCKS",
]

PROPOSAL_MODES = ("monocular", "all", "external")
QUERY_EMBEDDINGS = ("per_voxel", "factorized")
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
"""Bottleneck blocks per stage of the torchvision ResNets the trunk factory builds."""


@dataclass(frozen=True)
class TrunkConfig:
    """ResNet trunk cut after ``num_stages`` stages (3 = layer3, stride 16); built by ``build_trunk``.

    Attributes:
        blocks: bottleneck blocks per stage; (3, 4, 6) is ResNet-50 up to layer3. Used when
            ``depth`` is 0.
        base_width: channels of the stem and of layer1's bottleneck (64 in torchvision).
        num_stages: how many of layer1..layer4 to build.
        frozen_stages: 1 freezes the stem and layer1 (official setup); 0 freezes only nothing.
        depth: 50 or 101 takes the blocks of that torchvision ResNet (``blocks`` is then ignored);
            0 (default, and every config stored before this field) uses ``blocks``.
    """

    blocks: tuple[int, ...] = (3, 4, 6)
    base_width: int = 64
    num_stages: int = 3
    frozen_stages: int = 1
    depth: int = 0

    def __post_init__(self):
        if self.depth and self.depth not in RESNET_BLOCKS:
            raise ValueError(f"trunk.depth must be 0 or one of {sorted(RESNET_BLOCKS)}, got {self.depth}")
        if not 1 <= self.num_stages <= 4 or len(self.stage_blocks) != self.num_stages:
            raise ValueError(
                f"trunk.num_stages={self.num_stages} needs 1..4 stages with a block count each, "
                f"blocks={self.blocks}, depth={self.depth}"
            )

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        """Blocks of the stages actually built."""
        blocks = RESNET_BLOCKS[self.depth] if self.depth else self.blocks
        return tuple(blocks[: self.num_stages])

    @property
    def out_channels(self) -> int:
        return self.base_width * 2 ** (self.num_stages - 1) * 4

    @property
    def stride(self) -> int:
        return 4 * 2 ** (self.num_stages - 1)


@dataclass(frozen=True)
class NeckConfig:
    """Single-level FPN: 1x1 lateral conv then 3x3 conv, both with bias, no activation."""

    out_channels: int = 128


@dataclass(frozen=True)
class VoxelStageConfig:
    """Stage 2: DCA on proposed queries, mask token, DSA, ICA (spec §1.6-1.8).

    Attributes:
        embed_dim: C, width of voxel features (must equal the neck's out_channels).
        num_heads: N attention heads.
        num_points: P sampling points per head.
        ffn_dim: hidden width of the post-attention FFN.
        dropout: dropout after attention and inside the FFN.
        num_dca_layers / num_dsa_layers / num_ica_layers: layer counts.
        use_ica: run the image-conditioned cross-attention over all voxels.
        query_embedding: "per_voxel" (official, X*Y*Z*C parameters) or "factorized"
            (sum of per-axis embeddings; keeps test variants small).
        query_chunk: queries processed at once in DSA/ICA sampling, bounds peak memory.
        gradient_checkpointing: recompute attention layers in backward to save memory.
    """

    embed_dim: int = 128
    num_heads: int = 8
    num_points: int = 8
    ffn_dim: int = 256
    dropout: float = 0.1
    num_dca_layers: int = 3
    num_dsa_layers: int = 2
    num_ica_layers: int = 3
    use_ica: bool = True
    query_embedding: str = "per_voxel"
    query_chunk: int = 32768
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if self.query_embedding not in QUERY_EMBEDDINGS:
            raise ValueError(
                f"voxel.query_embedding must be one of {QUERY_EMBEDDINGS}, got {self.query_embedding!r}"
            )
        if self.embed_dim % self.num_heads or self.embed_dim % 2:
            raise ValueError(
                f"voxel.embed_dim={self.embed_dim} must be even and divisible by num_heads={self.num_heads}"
            )
        if self.query_chunk < 1:
            raise ValueError(f"voxel.query_chunk must be >= 1, got {self.query_chunk}")


@dataclass(frozen=True)
class ProposalConfig:
    """Where the DCA queries come from.

    Attributes:
        mode: "monocular" (depth head + lift + LMSCNet-style net), "all" (every voxel is a
            query) or "external" (the caller passes a (B,128,128,16) bool mask).
        depth_bins: D, number of depth classes of the depth head (uniform in metres).
        depth_min_m / depth_max_m: range covered by the depth bins.
        qpn_widths: channels of the 2D encoder at 1/1, 1/2, 1/4, 1/8 of the 256x256 plane
            (LMSCNet: 32, 48, 64, 80 with the 32 height cells as input channels).
        qpn_side_widths: channels of the 1/8 and 1/4 side outputs (LMSCNet: 4, 8).
        qpn_head_planes / qpn_head_dilations: the 3D ASPP head (LMSCNet: 8, (1, 2, 3)).
        class_weights: CE weights (empty, occupied) of the proposal loss (VoxFormer 0.46/0.54).
        min_queries: in "monocular" mode, if fewer voxels are proposed, all visible voxels are used
            instead (reported as ``query_fallback``). "external" proposals are used as given, however
            few, as in the official head.
    """

    mode: str = "monocular"
    depth_bins: int = 64
    depth_min_m: float = 1.0
    depth_max_m: float = 60.0
    qpn_widths: tuple[int, int, int, int] = (32, 48, 64, 80)
    qpn_side_widths: tuple[int, int] = (4, 8)
    qpn_head_planes: int = 8
    qpn_head_dilations: tuple[int, ...] = (1, 2, 3)
    class_weights: tuple[float, float] = (0.46, 0.54)
    min_queries: int = 16

    def __post_init__(self):
        if self.mode not in PROPOSAL_MODES:
            raise ValueError(f"proposal.mode must be one of {PROPOSAL_MODES}, got {self.mode!r}")
        if not 0 < self.depth_min_m < self.depth_max_m:
            raise ValueError("proposal.depth_min_m must be > 0 and < depth_max_m")


@dataclass(frozen=True)
class SemDecoderConfig:
    """2D semantic decoder (training only): two x2 separable deconvs + conv head, stride 4."""

    enabled: bool = True


@dataclass(frozen=True)
class HeadConfig:
    """Occupancy head: trilinear x2 -> LayerNorm -> Linear(C, num_classes).

    Attributes:
        num_classes: train ids of the label set including empty (20 for SemanticKITTI).
        chunk_x: output x-slabs processed at once by the inference (argmax) path.
    """

    num_classes: int = 20
    chunk_x: int = 16


@dataclass(frozen=True)
class ModelConfig:
    """The whole student: one section per stage, the output grid and the label set.

    Attributes:
        grid: the output grid (voxel counts, voxel size, origin in the grid frame); the voxel
            stage works on :attr:`coarse_grid`, the same extent at half resolution.
        labels: label set name (``semantic_kitti`` = ``monoocc_ros/semantic_kitti.yaml``) or the
            path of a label YAML file; ``head.num_classes`` must equal its class count.
    """

    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    voxel: VoxelStageConfig = field(default_factory=VoxelStageConfig)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    sem_decoder: SemDecoderConfig = field(default_factory=SemDecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    grid: VoxelGrid = field(default_factory=VoxelGrid)
    labels: str = "semantic_kitti"

    def __post_init__(self):
        if self.neck.out_channels != self.voxel.embed_dim:
            raise ValueError(
                f"neck.out_channels ({self.neck.out_channels}) must equal voxel.embed_dim "
                f"({self.voxel.embed_dim}): image features are the attention values"
            )
        # the voxel stage runs at half resolution; the proposal net halves the plane three more times
        if any(n % 2 for n in self.grid.size) or any(n % 8 for n in self.grid.size[:2]):
            raise ValueError(
                f"grid.size {self.grid.size}: X and Y must be multiples of 8 and Z even "
                "(coarse stage at half resolution, proposal net down to 1/8 of the plane)"
            )

    @property
    def coarse_grid(self) -> VoxelGrid:
        """The voxel stage's grid: same extent, half the voxels per axis (128x128x16 for SemanticKITTI)."""
        return self.grid.half()

    def label_set(self) -> LabelMap:
        """The label set named by ``labels``, checked against ``head.num_classes``.

        Raises:
            ValueError: unknown name / unreadable file, or a class count other than the head's.
        """
        label_set = load_label_set(self.labels)
        if label_set.num_classes != self.head.num_classes:
            raise ValueError(
                f"labels {self.labels!r} has {label_set.num_classes} classes but head.num_classes is "
                f"{self.head.num_classes}: set both"
            )
        return label_set


def monoocc_s() -> ModelConfig:
    """MonoOcc-S as in the paper: ResNet-50 to layer3, C=128, ICA and 2D decoder on."""
    return ModelConfig()


def tiny() -> ModelConfig:
    """Same architecture at small widths (a few hundred thousand parameters) for CPU tests."""
    return ModelConfig(
        trunk=TrunkConfig(blocks=(1, 1, 1), base_width=8, num_stages=3, frozen_stages=1),
        neck=NeckConfig(out_channels=16),
        voxel=VoxelStageConfig(
            embed_dim=16,
            num_heads=2,
            num_points=4,
            ffn_dim=32,
            dropout=0.0,
            num_dca_layers=1,
            num_dsa_layers=1,
            num_ica_layers=1,
            query_embedding="factorized",
            query_chunk=131072,
        ),
        proposal=ProposalConfig(
            depth_bins=16, qpn_widths=(8, 8, 16, 16), qpn_side_widths=(4, 4), qpn_head_planes=4, qpn_head_dilations=(1,)
        ),
    )


def tiny_per_voxel() -> ModelConfig:
    """``tiny`` with the official per-voxel query table (4.2 M of its parameters).

    The table learns where a street's classes usually are relative to the car within a few
    dozen steps, so ``make demo`` shows learning on a CPU in minutes.
    """
    base = tiny()
    return dataclasses.replace(base, voxel=dataclasses.replace(base.voxel, query_embedding="per_voxel"))


def ablated(base: Callable[[], ModelConfig], *, ica: bool, sem2d: bool) -> Callable[[], ModelConfig]:
    """``base`` with ICA and/or the 2D semantic decoder (hence its loss) switched off (ablations)."""

    def make() -> ModelConfig:
        cfg = base()
        return dataclasses.replace(
            cfg, voxel=dataclasses.replace(cfg.voxel, use_ica=ica), sem_decoder=SemDecoderConfig(enabled=sem2d)
        )

    make.__doc__ = f"{base.__name__} with ICA {'on' if ica else 'off'}, 2D decoder {'on' if sem2d else 'off'}."
    return make


MODEL_CONFIGS: dict[str, Callable[[], ModelConfig]] = {
    "monoocc_s": monoocc_s,
    "tiny": tiny,
    "tiny_per_voxel": tiny_per_voxel,
}
# the ablation ladder of ``monoocc experiment ablation``: <base>_base (VoxFormer-like: no ICA, no
# 2D loss) -> <base>_ica (+ ICA) -> <base> (+ 2D semantic loss)
for _name in ("monoocc_s", "tiny"):
    MODEL_CONFIGS[f"{_name}_base"] = ablated(MODEL_CONFIGS[_name], ica=False, sem2d=False)
    MODEL_CONFIGS[f"{_name}_ica"] = ablated(MODEL_CONFIGS[_name], ica=True, sem2d=False)


def get_model_config(name: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """The named variant's configuration, then dotted ``key=value`` overrides (``grid.voxel_size_m=0.4``).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        ConfigError: an override names no field or has the wrong type.
    """
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {sorted(MODEL_CONFIGS)}")
    cfg = MODEL_CONFIGS[name]()
    return apply_overrides(cfg, list(overrides), source=f"model {name} overrides") if overrides else cfg


def model_config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of ``dataclasses.asdict`` (configs stored in checkpoints); missing keys take defaults.

    Raises:
        ConfigError: an unknown key (a ValueError).
        TypeError: a value of the wrong type (stored configs are never text to convert).
        ValueError: a value the config's own checks reject.
    """
    return from_mapping(ModelConfig, data, exact=True)
