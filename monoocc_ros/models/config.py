"""Typed model configurations and the named variants ``monoocc_s`` and ``tiny``.

A variant is a function returning a :class:`ModelConfig`; ``MODEL_CONFIGS`` maps names to them.
Configurations round-trip through plain dicts (``dataclasses.asdict`` / :func:`model_config_from_dict`)
so checkpoints can store them; unknown keys are rejected.

Example:
    >>> cfg = get_model_config("tiny")
    >>> cfg.voxel.embed_dim
    16
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

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
]

PROPOSAL_MODES = ("monocular", "all", "external")
QUERY_EMBEDDINGS = ("per_voxel", "factorized")


@dataclass(frozen=True)
class TrunkConfig:
    """ResNet trunk cut after ``num_stages`` stages (3 = layer3, stride 16).

    Attributes:
        blocks: bottleneck blocks per stage; (3, 4, 6) is ResNet-50 up to layer3.
        base_width: channels of the stem and of layer1's bottleneck (64 in torchvision).
        num_stages: how many of layer1..layer4 to build.
        frozen_stages: 1 freezes the stem and layer1 (official setup); 0 freezes only nothing.
    """

    blocks: tuple[int, ...] = (3, 4, 6)
    base_width: int = 64
    num_stages: int = 3
    frozen_stages: int = 1

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
        num_classes: 20 SemanticKITTI train ids.
        chunk_x: output x-slabs processed at once by the inference (argmax) path.
    """

    num_classes: int = 20
    chunk_x: int = 16


@dataclass(frozen=True)
class ModelConfig:
    """The whole student: one section per stage."""

    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    voxel: VoxelStageConfig = field(default_factory=VoxelStageConfig)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    sem_decoder: SemDecoderConfig = field(default_factory=SemDecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self):
        if self.neck.out_channels != self.voxel.embed_dim:
            raise ValueError(
                f"neck.out_channels ({self.neck.out_channels}) must equal voxel.embed_dim "
                f"({self.voxel.embed_dim}): image features are the attention values"
            )


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


def get_model_config(name: str) -> ModelConfig:
    """The named variant's configuration (KeyError lists the known names)."""
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {sorted(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name]()


def model_config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _SECTIONS.get(name) if cls is ModelConfig else None
        if sub is not None:
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_SECTIONS = {
    "trunk": TrunkConfig,
    "neck": NeckConfig,
    "voxel": VoxelStageConfig,
    "proposal": ProposalConfig,
    "sem_decoder": SemDecoderConfig,
    "head": HeadConfig,
}


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of ``dataclasses.asdict``; missing keys take defaults, unknown keys raise ValueError."""
    return _build(ModelConfig, data, "model_config")
