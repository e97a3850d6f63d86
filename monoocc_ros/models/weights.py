"""Foreign weights: torchvision ImageNet ResNets and the official MonoOcc (mmcv) checkpoints.

Each source has one explicit rename table (spec §7.2); shapes are checked, and everything that is
dropped or missing is reported. The DCA/ICA ``level_embeds[0] + cams_embeds[0]`` added to the
image features before ``value_proj`` are folded into its bias: W (f + e) + b = W f + (W e + b).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monoocc_ros.fileio import write_text_atomic
from monoocc_ros.models.checkpoint import SCHEMA, save_checkpoint
from monoocc_ros.models.config import ModelConfig, ProposalConfig, SemDecoderConfig, get_model_config
from monoocc_ros.models.official_io import load_official_file
from monoocc_ros.models.state_dict import clean_state_dict
from monoocc_ros.models.trunk import ResNet, load_torchvision_state_dict

__all__ = [
    "ConversionReport",
    "load_torchvision_resnet",
    "official_key_table",
    "detect_ica_trained",
    "ICA_CHOICES",
    "IcaDecision",
    "decide_ica",
    "convert_official_state_dict",
    "convert_official_checkpoint",
    "QPN_SCHEMA",
    "voxformer_qpn_key_table",
    "convert_voxformer_qpn",
    "load_qpn_weights",
]

QPN_SCHEMA = "monoocc_ros/qpn/1"

HEAD = "pts_bbox_head."
# official prefixes whose tensors the project never uses (spec §7.2)
_UNUSED_PREFIXES = (
    "img_backbone.layer4.",
    HEAD + "self_transformer.level_embeds",
    HEAD + "self_transformer.cams_embeds",
    HEAD + "header.open_mlp_head.",
    HEAD + "header.lidar_head.",
    HEAD + "header.conv_3d.",
    HEAD + "header.downsample.",
    HEAD + "mlp.",
    HEAD + "cvt.",
)


def load_torchvision_resnet(trunk: ResNet, path: Path) -> dict[str, list[str]]:
    """Load a torchvision ResNet ``.pth`` (e.g. resnet50-19c8e357.pth) into the trunk.

    Returns {"dropped": [...], "missing": [...]} (fc and layer4 keys are dropped on purpose).

    Raises:
        FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torchvision ResNet weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a weights-only state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    try:
        return load_torchvision_state_dict(trunk, state)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


ICA_CHOICES = ("on", "off")


@dataclass(frozen=True)
class IcaDecision:
    """Whether the converted model runs ICA, and why.

    Attributes:
        use_ica: the choice.
        weights_trained: evidence from the weights (:func:`detect_ica_trained`).
        config_look_ahead: ``look_ahead`` in the file's config text (``meta['config']``); None if absent.
        decided_by: "weights and config agree", "weights (config has no look_ahead)" or "--ica on|off".
    """

    use_ica: bool
    weights_trained: bool
    config_look_ahead: bool | None
    decided_by: str


def decide_ica(weights_trained: bool, config_look_ahead: bool | None, override: str | None, *, source: str) -> IcaDecision:
    """ICA on or off for a converted checkpoint.

    The official head runs ICA only with ``look_ahead=True``; the weights say whether ICA was
    trained. When the two disagree neither can be picked silently (2.6 % argmax agreement between
    the choices on the released file), so the caller must say which one with ``override``.

    Raises:
        ValueError: config and weights disagree and ``override`` is None; or ``override`` is not on/off.
    """
    if override is not None:
        if override not in ICA_CHOICES:
            raise ValueError(f"--ica must be one of {ICA_CHOICES}, got {override!r}")
        return IcaDecision(override == "on", weights_trained, config_look_ahead, f"--ica {override}")
    if config_look_ahead is None:
        return IcaDecision(weights_trained, weights_trained, None, "weights (config has no look_ahead)")
    if config_look_ahead != weights_trained:
        raise ValueError(
            f"{source}: ICA config and weights disagree: the config text says look_ahead={config_look_ahead} "
            f"(the official code {'runs' if config_look_ahead else 'skips'} ICA) but the ICA weights are "
            f"{'trained' if weights_trained else 'untrained (all-zero offsets and attention weights)'}; "
            "choose with --ica on (run ICA) or --ica off (skip it, as look_ahead=False does)"
        )
    return IcaDecision(weights_trained, weights_trained, config_look_ahead, "weights and config agree")


@dataclass
class ConversionReport:
    """What happened to every source tensor, and the evidence behind the ICA choice."""

    source: str
    ica_trained: bool
    sem_decoder_present: bool
    flags_from_config: dict[str, bool] = field(default_factory=dict)
    ica: dict[str, Any] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    folded: dict[str, list[str]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# FFN and post-norms: the same in every official transformer layer.
_FFN_NORM_PAIRS = {"ffns.0.layers.0.0": "ffn.fc1", "ffns.0.layers.1": "ffn.fc2", "norms.0": "norm1", "norms.1": "norm2"}


def _layer_table(src: str, dst: str, attention_pairs: dict[str, str]) -> dict[str, str]:
    pairs = attention_pairs | _FFN_NORM_PAIRS
    return {f"{src}.{a}.{p}": f"{dst}.{b}.{p}" for a, b in pairs.items() for p in ("weight", "bias")}


def _attention_layer_table(src: str, dst: str) -> dict[str, str]:
    """DCA/ICA layer: official (mmcv BaseTransformerLayer) -> project names, weights and biases."""
    return _layer_table(src, dst, {
        "attentions.0.deformable_attention.sampling_offsets": "attn.deformable_attention.sampling_offsets",
        "attentions.0.deformable_attention.attention_weights": "attn.deformable_attention.attention_weights",
        "attentions.0.deformable_attention.value_proj": "attn.deformable_attention.value_proj",
        "attentions.0.output_proj": "attn.output_proj",
    })  # fmt: skip


def _self_attention_layer_table(src: str, dst: str) -> dict[str, str]:
    """DSA layer: official names -> project names."""
    return _layer_table(src, dst, {
        "attentions.0.sampling_offsets": "attn.sampling_offsets",
        "attentions.0.attention_weights": "attn.attention_weights",
        "attentions.0.value_proj": "attn.value_proj",
        "attentions.0.output_proj": "attn.output_proj",
    })  # fmt: skip


def official_key_table(cfg: ModelConfig, *, sem_decoder: bool) -> dict[str, str]:
    """Official MonoOcc-S key -> project key, for every tensor the project model uses."""
    table: dict[str, str] = {
        "img_neck.lateral_convs.0.conv.weight": "neck.lateral.weight",
        "img_neck.lateral_convs.0.conv.bias": "neck.lateral.bias",
        "img_neck.fpn_convs.0.conv.weight": "neck.out.weight",
        "img_neck.fpn_convs.0.conv.bias": "neck.out.bias",
        HEAD + "bev_embed.weight": "occupancy.queries.weight",
        HEAD + "mask_embed.weight": "occupancy.mask_token",
        HEAD + "positional_encoding.row_embed.weight": "occupancy.positional_encoding.row_embed.weight",
        HEAD + "positional_encoding.col_embed.weight": "occupancy.positional_encoding.col_embed.weight",
        HEAD + "header.mlp_head.0.weight": "head.norm.weight",
        HEAD + "header.mlp_head.0.bias": "head.norm.bias",
        HEAD + "header.mlp_head.1.weight": "head.fc.weight",
        HEAD + "header.mlp_head.1.bias": "head.fc.bias",
    }
    for i in range(cfg.voxel.num_dca_layers):
        table.update(_attention_layer_table(f"{HEAD}cross_transformer.encoder.layers.{i}", f"occupancy.dca.{i}"))
    for i in range(cfg.voxel.num_dsa_layers):
        table.update(_self_attention_layer_table(f"{HEAD}self_transformer.encoder.layers.{i}", f"occupancy.dsa.{i}"))
    if cfg.voxel.use_ica:
        for i in range(cfg.voxel.num_ica_layers):
            table.update(_attention_layer_table(f"{HEAD}cross_transformer_late.encoder.layers.{i}", f"occupancy.ica.{i}"))
    if sem_decoder:
        bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        for up in ("upconv", "upconv2"):
            for p in ("conv1.weight", "conv1.bias", "pointwise.weight", *(f"bn.0.{b}" for b in bn)):
                table[f"{HEAD}sem_decoder.{up}.{p}"] = f"sem_decoder.{up}.{p}"
        for p in ("0.weight", *(f"1.{b}" for b in bn), "4.weight", "4.bias"):
            table[f"{HEAD}sem_decoder.head.{p}"] = f"sem_decoder.head.{p}"
    return table


def detect_ica_trained(state: dict[str, Tensor]) -> bool:
    """ICA (``cross_transformer_late``) was trained unless all its sampling-offset and
    attention-weight matrices are still exactly zero (their init; spec §7.1)."""
    keys = [
        k
        for k in state
        if k.startswith(HEAD + "cross_transformer_late.")
        and (k.endswith("sampling_offsets.weight") or k.endswith("attention_weights.weight"))
    ]
    return any(bool(state[k].abs().sum() > 0) for k in keys)


def _config_flags(meta: Any) -> dict[str, bool]:
    text = meta.get("config", "") if isinstance(meta, dict) else ""
    flags = {}
    for name in ("look_ahead", "use_sem", "distill"):
        m = re.search(rf"{name}\s*=\s*(True|False)", text if isinstance(text, str) else "")
        if m:
            flags[name] = m.group(1) == "True"
    return flags


def convert_official_state_dict(
    state: dict[str, Tensor], *, proposal_mode: str = "all", source: str = "<memory>", use_ica: bool | None = None
) -> tuple[ModelConfig, dict[str, Tensor], ConversionReport]:
    """Map an official MonoOcc-S state dict onto the project's ``monoocc_s`` model.

    Returns (config, project state dict, report). The 2D decoder is switched on only if the
    checkpoint has it; ICA as ``use_ica`` says (None: only if the checkpoint trained it).

    Raises:
        ValueError: a needed tensor is missing or has the wrong shape (key named).
    """
    from monoocc_ros.models.monoocc import MonoOccStudent

    if proposal_mode not in ("all", "external"):
        raise ValueError(
            f'proposal_mode for a converted checkpoint must be "all" or "external" (the official release '
            f'has no monocular proposal stage), got {proposal_mode!r}'
        )
    state = clean_state_dict(state)
    ica_trained = detect_ica_trained(state)
    ica = ica_trained if use_ica is None else use_ica
    sem = any(k.startswith(HEAD + "sem_decoder.") for k in state)
    base = get_model_config("monoocc_s")
    cfg = dataclasses.replace(
        base,
        voxel=dataclasses.replace(base.voxel, use_ica=ica),
        proposal=dataclasses.replace(base.proposal, mode=proposal_mode),
        sem_decoder=SemDecoderConfig(enabled=sem),
    )
    with torch.device("meta"):
        own = MonoOccStudent(cfg).state_dict()
    report = ConversionReport(source=source, ica_trained=ica_trained, sem_decoder_present=sem)
    out: dict[str, Tensor] = {}
    used: set[str] = set()

    def put(src: str, dst: str, value: Tensor) -> None:
        if dst not in own:
            raise ValueError(f"internal key table names {dst!r}, which the project model lacks")
        if tuple(value.shape) != tuple(own[dst].shape):
            raise ValueError(f"{src}: shape {tuple(value.shape)} does not fit {dst} {tuple(own[dst].shape)}")
        out[dst] = value.detach().clone()

    table = official_key_table(cfg, sem_decoder=sem)
    for src, dst in table.items():
        if src not in state:
            raise ValueError(f"official checkpoint {source} lacks {src} (needed for {dst})")
        put(src, dst, state[src])
        used.add(src)
        report.mapped[src] = dst
    for key in state:
        root = key.split(".", 1)[0]
        if root == "img_backbone":
            sub = key[len("img_backbone."):]
            if key.startswith("img_backbone.layer4.") or sub.endswith("num_batches_tracked"):
                continue
            put(key, "backbone." + sub, state[key])
            used.add(key)
            report.mapped[key] = "backbone." + sub
    stacks = [("cross_transformer", "dca", cfg.voxel.num_dca_layers)]
    if ica:
        stacks.append(("cross_transformer_late", "ica", cfg.voxel.num_ica_layers))
    for src, dst, layers in stacks:
        lvl, cam = f"{HEAD}{src}.level_embeds", f"{HEAD}{src}.cams_embeds"
        if lvl not in state or cam not in state:
            raise ValueError(f"official checkpoint {source} lacks {lvl} or {cam}")
        embed = state[lvl][0] + state[cam][0]
        for i in range(layers):
            w = f"occupancy.{dst}.{i}.attn.deformable_attention.value_proj"
            out[w + ".bias"] = out[w + ".bias"] + out[w + ".weight"] @ embed
            report.folded[w + ".bias"] = [lvl + "[0]", cam + "[0]"]
        used.update((lvl, cam))
    report.unused = sorted(k for k in state if k not in used)
    report.missing = sorted(set(own) - set(out))
    return cfg, out, report


def convert_official_checkpoint(
    src: Path, dst: Path, report_path: Path | None = None, *, proposal_mode: str = "all", ica: str | None = None
) -> ConversionReport:
    """Read an official MonoOcc-S release (mmcv ``{"meta", "state_dict", "optimizer"}``), write a
    project checkpoint to ``dst`` and the JSON report to ``report_path`` (default: ``dst`` with
    ``.report.json``).

    The file is read with ``weights_only=True`` and the numpy allow-list of
    :mod:`monoocc_ros.models.official_io`. ICA follows :func:`decide_ica` (``ica``: "on", "off" or None).

    Raises:
        FileNotFoundError / ValueError: one message naming the file and the problem.
    """
    src, dst = Path(src), Path(dst)
    ckpt = load_official_file(src, "official MonoOcc checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{src} is not an mmcv checkpoint: no 'state_dict' at the top level")
    if not isinstance(ckpt["state_dict"], dict):
        raise ValueError(f"{src}: 'state_dict' is a {type(ckpt['state_dict']).__name__}, not a dict of tensors")
    raw = clean_state_dict(ckpt["state_dict"])
    flags = _config_flags(ckpt.get("meta"))
    decision = decide_ica(detect_ica_trained(raw), flags.get("look_ahead"), ica, source=str(src))
    cfg, state, report = convert_official_state_dict(
        raw, proposal_mode=proposal_mode, source=str(src), use_ica=decision.use_ica
    )
    report.flags_from_config = flags
    report.ica = dataclasses.asdict(decision)
    if report.missing:
        raise ValueError(f"conversion of {src} left project tensors unset: {report.missing[:10]}")
    payload = {
        "schema": SCHEMA,
        "config_name": "monoocc_s",
        "model_config": dataclasses.asdict(cfg),
        "model": state,
        "meta": {
            "converted_from": str(src),
            "ica_trained": report.ica_trained,
            "use_ica": decision.use_ica,
            "ica_decided_by": decision.decided_by,
            "sem_decoder": report.sem_decoder_present,
        },
    }
    save_checkpoint(dst, payload)
    report_path = Path(report_path) if report_path is not None else dst.with_suffix(".report.json")
    write_text_atomic(report_path, report.to_json())
    return report


def voxformer_qpn_key_table(dilations: int = 3) -> dict[str, str]:
    """VoxFormer LMSCNet_SS (out_scale "1_2") key -> :class:`QueryProposalNet` key."""
    renames = {f"Encoder_block{n}.{i}": f"encoder{n}.{i}" for n in (1, 2, 3, 4) for i in ((0, 2) if n == 1 else (1, 3))}
    renames.update(
        {
            "conv_out_scale_1_8": "out_1_8",
            "deconv_1_8__1_2": "up_1_8_to_1_2",
            "deconv1_8": "up_1_8",
            "conv1_4": "conv_1_4",
            "conv_out_scale_1_4": "out_1_4",
            "deconv1_4": "up_1_4",
            "conv1_2": "conv_1_2",
            "conv_out_scale_1_2": "out_1_2",
            "seg_head_1_2.conv0": "seg_head.conv0",
            "seg_head_1_2.conv_classes": "seg_head.conv_classes",
        }
    )
    table = {f"{a}.{p}": f"{b}.{p}" for a, b in renames.items() for p in ("weight", "bias")}
    for i in range(dilations):
        for conv in ("conv1", "conv2"):
            table[f"seg_head_1_2.{conv}.{i}.weight"] = f"seg_head.{conv}.{i}.weight"
        for bn in ("bn1", "bn2"):
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                table[f"seg_head_1_2.{bn}.{i}.{p}"] = f"seg_head.{bn}.{i}.{p}"
    return table


def convert_voxformer_qpn(src: Path, dst: Path, report_path: Path | None = None) -> ConversionReport:
    """Convert VoxFormer's query proposal network (LMSCNet_SS, mmcv checkpoint) into weights for
    :class:`QueryProposalNet` with the default (LMSCNet) widths; load them with :func:`load_qpn_weights`.

    The official network reads stereo pseudo-LiDAR occupancy; fed with this project's monocular lift
    its input distribution differs, so treat the result as an initialisation.
    """
    from monoocc_ros.models.proposals import QueryProposalNet

    src, dst = Path(src), Path(dst)
    ckpt = load_official_file(src, "VoxFormer QPN checkpoint")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{src} holds no state dict")
    state = clean_state_dict(state)
    cfg = ProposalConfig()
    own = QueryProposalNet(cfg.qpn_widths, cfg.qpn_side_widths, cfg.qpn_head_planes, cfg.qpn_head_dilations).state_dict()
    report = ConversionReport(source=str(src), ica_trained=False, sem_decoder_present=False)
    out = {}
    for key, dst_key in voxformer_qpn_key_table(len(cfg.qpn_head_dilations)).items():
        if key not in state:
            raise ValueError(f"VoxFormer QPN checkpoint {src} lacks {key} (needed for {dst_key})")
        if tuple(state[key].shape) != tuple(own[dst_key].shape):
            raise ValueError(f"{src}: {key} has shape {tuple(state[key].shape)}, {dst_key} needs {tuple(own[dst_key].shape)}")
        out[dst_key] = state[key].detach().clone()
        report.mapped[key] = dst_key
    report.unused = sorted(set(state) - set(report.mapped))
    report.missing = sorted(set(own) - set(out))
    if report.missing:
        raise ValueError(f"conversion of {src} left proposal-network tensors unset: {report.missing}")
    payload = {"schema": QPN_SCHEMA, "config_name": "voxformer_qpn", "model_config": dataclasses.asdict(cfg), "model": out}
    save_checkpoint(dst, payload)
    report_path = Path(report_path) if report_path is not None else dst.with_suffix(".report.json")
    write_text_atomic(report_path, report.to_json())
    return report


def load_qpn_weights(model, path: Path) -> None:
    """Load converted VoxFormer QPN weights into ``model.proposals.qpn`` (monocular proposal mode)."""
    path = Path(path)
    if getattr(model, "proposals", None) is None:
        raise ValueError('the model has no proposal network (proposal mode must be "monocular")')
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read QPN weights {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("schema") != QPN_SCHEMA:
        raise ValueError(f"{path} is not a converted QPN file (schema {QPN_SCHEMA!r})")
    try:
        model.proposals.qpn.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: QPN weights do not fit the model's proposal network: {exc}") from exc
