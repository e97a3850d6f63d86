"""Official MonoOcc-S checkpoint conversion on a checkpoint built with the official key names and
shapes (spec §7.2): every tensor lands where it must, biases are folded, ICA is detected both ways."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
from monoocc_ros.models.weights import convert_official_checkpoint

H = "pts_bbox_head."


def _linear(state, g, prefix, out_f, in_f, zero_weight=False):
    state[prefix + ".weight"] = torch.zeros(out_f, in_f) if zero_weight else torch.randn(out_f, in_f, generator=g)
    state[prefix + ".bias"] = torch.randn(out_f, generator=g)


def _norm(state, g, prefix, c):
    state[prefix + ".weight"] = torch.rand(c, generator=g) + 0.5
    state[prefix + ".bias"] = torch.randn(c, generator=g)


def _bn(state, g, prefix, c):
    _norm(state, g, prefix, c)
    state[prefix + ".running_mean"] = torch.randn(c, generator=g)
    state[prefix + ".running_var"] = torch.rand(c, generator=g) + 0.5
    state[prefix + ".num_batches_tracked"] = torch.tensor(1000)


def _dca_stack(state, g, name, zero_offsets=False):
    state[f"{H}{name}.level_embeds"] = torch.randn(4, 128, generator=g)
    state[f"{H}{name}.cams_embeds"] = torch.randn(1, 128, generator=g)
    for i in range(3):
        p = f"{H}{name}.encoder.layers.{i}"
        a = f"{p}.attentions.0.deformable_attention"
        _linear(state, g, f"{a}.sampling_offsets", 128, 128, zero_weight=zero_offsets)
        _linear(state, g, f"{a}.attention_weights", 64, 128, zero_weight=zero_offsets)
        _linear(state, g, f"{a}.value_proj", 128, 128)
        _linear(state, g, f"{p}.attentions.0.output_proj", 128, 128)
        _linear(state, g, f"{p}.ffns.0.layers.0.0", 256, 128)
        _linear(state, g, f"{p}.ffns.0.layers.1", 128, 256)
        _norm(state, g, f"{p}.norms.0", 128)
        _norm(state, g, f"{p}.norms.1", 128)


def official_monoocc_s_state(*, ica_trained: bool, sem_decoder: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full official MonoOcc-S key set with its shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {"img_backbone.conv1.weight": torch.randn(64, 3, 7, 7, generator=g)}
    _bn(s, g, "img_backbone.bn1", 64)
    cin = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"img_backbone.layer{stage}.{b}"
            s[f"{p}.conv1.weight"] = torch.randn(planes, cin, 1, 1, generator=g)
            _bn(s, g, f"{p}.bn1", planes)
            s[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3, generator=g)
            _bn(s, g, f"{p}.bn2", planes)
            s[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1, generator=g)
            _bn(s, g, f"{p}.bn3", planes * 4)
            if b == 0:
                s[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, cin, 1, 1, generator=g)
                _bn(s, g, f"{p}.downsample.1", planes * 4)
            cin = planes * 4
    s["img_neck.lateral_convs.0.conv.weight"] = torch.randn(128, 1024, 1, 1, generator=g)
    s["img_neck.lateral_convs.0.conv.bias"] = torch.randn(128, generator=g)
    s["img_neck.fpn_convs.0.conv.weight"] = torch.randn(128, 128, 3, 3, generator=g)
    s["img_neck.fpn_convs.0.conv.bias"] = torch.randn(128, generator=g)
    s[H + "bev_embed.weight"] = torch.randn(262144, 128, generator=g)
    s[H + "mask_embed.weight"] = torch.randn(1, 128, generator=g)
    s[H + "positional_encoding.row_embed.weight"] = torch.randn(512, 64, generator=g)
    s[H + "positional_encoding.col_embed.weight"] = torch.randn(512, 64, generator=g)
    _dca_stack(s, g, "cross_transformer")
    _dca_stack(s, g, "cross_transformer_late", zero_offsets=not ica_trained)
    s[H + "self_transformer.level_embeds"] = torch.randn(4, 128, generator=g)
    s[H + "self_transformer.cams_embeds"] = torch.randn(1, 128, generator=g)
    for i in range(2):
        p = f"{H}self_transformer.encoder.layers.{i}"
        _linear(s, g, f"{p}.attentions.0.sampling_offsets", 256, 256)
        _linear(s, g, f"{p}.attentions.0.attention_weights", 128, 256)
        _linear(s, g, f"{p}.attentions.0.value_proj", 128, 128)
        _linear(s, g, f"{p}.attentions.0.output_proj", 128, 128)
        _linear(s, g, f"{p}.ffns.0.layers.0.0", 256, 128)
        _linear(s, g, f"{p}.ffns.0.layers.1", 128, 256)
        _norm(s, g, f"{p}.norms.0", 128)
        _norm(s, g, f"{p}.norms.1", 128)
    _norm(s, g, H + "header.mlp_head.0", 128)
    _linear(s, g, H + "header.mlp_head.1", 20, 128)
    _norm(s, g, H + "header.open_mlp_head.0", 128)
    _linear(s, g, H + "header.open_mlp_head.1", 20, 128)
    _norm(s, g, H + "mlp.0", 768)
    _linear(s, g, H + "mlp.1", 128, 768)
    if sem_decoder:
        for up in ("upconv", "upconv2"):
            s[f"{H}sem_decoder.{up}.conv1.weight"] = torch.randn(128, 1, 1, 1, generator=g)
            s[f"{H}sem_decoder.{up}.conv1.bias"] = torch.randn(128, generator=g)
            s[f"{H}sem_decoder.{up}.pointwise.weight"] = torch.randn(128, 128, 1, 1, generator=g)
            _bn(s, g, f"{H}sem_decoder.{up}.bn.0", 128)
        s[H + "sem_decoder.head.0.weight"] = torch.randn(128, 128, 3, 3, generator=g)
        _bn(s, g, H + "sem_decoder.head.1", 128)
        s[H + "sem_decoder.head.4.weight"] = torch.randn(20, 128, 1, 1, generator=g)
        s[H + "sem_decoder.head.4.bias"] = torch.randn(20, generator=g)
    return s


def _write_official(path, state, *, look_ahead: bool = True):
    config = f"model = dict(pts_bbox_head=dict(look_ahead={look_ahead}, use_sem=True, distill=False))"
    torch.save({"meta": {"config": config, "epoch": 20}, "state_dict": state}, path)


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return official_monoocc_s_state(ica_trained=True, sem_decoder=True)


def _variant(official, *, ica_trained: bool, sem_decoder: bool) -> dict[str, torch.Tensor]:
    """A shallow copy with ICA reset to its (all-zero) init and/or without the 2D decoder."""
    state = {k: v for k, v in official.items() if sem_decoder or not k.startswith(H + "sem_decoder.")}
    if not ica_trained:
        for k in state:
            if k.startswith(H + "cross_transformer_late.") and k.endswith(("sampling_offsets.weight", "attention_weights.weight")):
                state[k] = torch.zeros_like(state[k])
    return state


def test_official_checkpoint_converts_every_tensor(tmp_path, official):
    _write_official(tmp_path / "best.pth", official)
    report = convert_official_checkpoint(tmp_path / "best.pth", tmp_path / "student.pt")
    assert report.ica_trained and report.sem_decoder_present
    assert report.flags_from_config == {"look_ahead": True, "use_sem": True, "distill": False}
    saved = json.loads((tmp_path / "student.report.json").read_text())
    assert saved["ica_trained"] is True
    assert any(k.startswith("img_backbone.layer4.") for k in report.unused)
    assert H + "header.open_mlp_head.1.weight" in report.unused
    assert H + "self_transformer.level_embeds" in report.unused
    assert report.missing == []

    model, cfg = build_model_from_checkpoint(load_checkpoint(tmp_path / "student.pt"))
    assert cfg.voxel.use_ica and cfg.sem_decoder.enabled and cfg.proposal.mode == "all"
    own = model.state_dict()
    expect = {
        "backbone.layer3.5.conv2.weight": "img_backbone.layer3.5.conv2.weight",
        "backbone.bn1.running_var": "img_backbone.bn1.running_var",
        "neck.lateral.weight": "img_neck.lateral_convs.0.conv.weight",
        "neck.out.bias": "img_neck.fpn_convs.0.conv.bias",
        "occupancy.queries.weight": H + "bev_embed.weight",
        "occupancy.mask_token": H + "mask_embed.weight",
        "occupancy.positional_encoding.col_embed.weight": H + "positional_encoding.col_embed.weight",
        "occupancy.dca.2.attn.deformable_attention.sampling_offsets.weight":
            H + "cross_transformer.encoder.layers.2.attentions.0.deformable_attention.sampling_offsets.weight",
        "occupancy.dca.1.attn.output_proj.bias": H + "cross_transformer.encoder.layers.1.attentions.0.output_proj.bias",
        "occupancy.dca.0.ffn.fc1.weight": H + "cross_transformer.encoder.layers.0.ffns.0.layers.0.0.weight",
        "occupancy.dca.0.norm2.weight": H + "cross_transformer.encoder.layers.0.norms.1.weight",
        "occupancy.dsa.1.attn.sampling_offsets.weight": H + "self_transformer.encoder.layers.1.attentions.0.sampling_offsets.weight",
        "occupancy.dsa.0.ffn.fc2.bias": H + "self_transformer.encoder.layers.0.ffns.0.layers.1.bias",
        "occupancy.ica.2.attn.deformable_attention.attention_weights.weight":
            H + "cross_transformer_late.encoder.layers.2.attentions.0.deformable_attention.attention_weights.weight",
        "head.norm.weight": H + "header.mlp_head.0.weight",
        "head.fc.bias": H + "header.mlp_head.1.bias",
        "sem_decoder.upconv2.bn.0.running_mean": H + "sem_decoder.upconv2.bn.0.running_mean",
        "sem_decoder.head.4.weight": H + "sem_decoder.head.4.weight",
    }
    for dst, src in expect.items():
        assert torch.equal(own[dst], official[src]), dst
    for stack, name in (("dca", "cross_transformer"), ("ica", "cross_transformer_late")):
        embed = official[f"{H}{name}.level_embeds"][0] + official[f"{H}{name}.cams_embeds"][0]
        for i in range(3):
            src = f"{H}{name}.encoder.layers.{i}.attentions.0.deformable_attention.value_proj"
            folded = own[f"occupancy.{stack}.{i}.attn.deformable_attention.value_proj.bias"]
            assert torch.allclose(folded, official[src + ".bias"] + official[src + ".weight"] @ embed, atol=1e-4)
            # the fold is exact: value_proj(f + e) == folded projection of f
            f = torch.randn(5, 128)
            want = (f + embed) @ official[src + ".weight"].T + official[src + ".bias"]
            assert torch.allclose(f @ official[src + ".weight"].T + folded, want, atol=1e-3)


def test_untrained_ica_and_missing_decoder_are_detected(tmp_path, official):
    _write_official(tmp_path / "s.pth", _variant(official, ica_trained=False, sem_decoder=False), look_ahead=False)
    report = convert_official_checkpoint(tmp_path / "s.pth", tmp_path / "s.pt", proposal_mode="external")
    assert not report.ica_trained and not report.sem_decoder_present
    assert any(k.startswith(H + "cross_transformer_late.") for k in report.unused)
    ckpt = load_checkpoint(tmp_path / "s.pt")
    assert not any(k.startswith(("occupancy.ica.", "sem_decoder.")) for k in ckpt["model"])
    _, cfg = build_model_from_checkpoint(ckpt)
    assert not cfg.voxel.use_ica and not cfg.sem_decoder.enabled and cfg.proposal.mode == "external"


def test_conversion_errors_name_the_problem(tmp_path, official):
    state = _variant(official, ica_trained=True, sem_decoder=False)
    del state[H + "mask_embed.weight"]
    _write_official(tmp_path / "broken.pth", state)
    with pytest.raises(ValueError, match="mask_embed"):
        convert_official_checkpoint(tmp_path / "broken.pth", tmp_path / "out.pt")
    state[H + "mask_embed.weight"] = torch.zeros(1, 64)
    _write_official(tmp_path / "broken.pth", state)
    with pytest.raises(ValueError, match="mask_embed.*shape"):
        convert_official_checkpoint(tmp_path / "broken.pth", tmp_path / "out.pt")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "broken.pth").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pth"):
        convert_official_checkpoint(tmp_path / "cut.pth", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def _voxformer_qpn_state(g: torch.Generator) -> dict[str, torch.Tensor]:
    """LMSCNet_SS (f = 32, out_scale "1_2") key names and shapes, including the unused 1/1 deconvs."""
    s: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k, bias=True, dims=2):
        s[name + ".weight"] = torch.randn(cout, cin, *([k] * dims), generator=g)
        if bias:
            s[name + ".bias"] = torch.randn(cout, generator=g)

    conv("Encoder_block1.0", 32, 32, 3)
    conv("Encoder_block1.2", 32, 32, 3)
    for n, (cin, cout) in zip((2, 3, 4), ((32, 48), (48, 64), (64, 80))):
        conv(f"Encoder_block{n}.1", cout, cin, 3)
        conv(f"Encoder_block{n}.3", cout, cout, 3)
    conv("conv_out_scale_1_8", 4, 80, 3)
    conv("deconv_1_8__1_2", 4, 4, 4)
    conv("deconv_1_8__1_1", 4, 4, 8)
    conv("deconv1_8", 4, 4, 6)
    conv("conv1_4", 64, 68, 3)
    conv("conv_out_scale_1_4", 8, 64, 3)
    conv("deconv_1_4__1_1", 8, 8, 4)
    conv("deconv1_4", 8, 8, 6)
    conv("conv1_2", 48, 60, 3)
    conv("conv_out_scale_1_2", 16, 48, 3)
    conv("seg_head_1_2.conv0", 8, 1, 3, dims=3)
    for i in range(3):
        conv(f"seg_head_1_2.conv1.{i}", 8, 8, 3, bias=False, dims=3)
        conv(f"seg_head_1_2.conv2.{i}", 8, 8, 3, bias=False, dims=3)
        for bn in ("bn1", "bn2"):
            _bn(s, g, f"seg_head_1_2.{bn}.{i}", 8)
    conv("seg_head_1_2.conv_classes", 2, 8, 3, dims=3)
    return s


def test_voxformer_qpn_converts_and_loads(tmp_path):
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent
    from monoocc_ros.models.weights import convert_voxformer_qpn, load_qpn_weights

    state = _voxformer_qpn_state(torch.Generator().manual_seed(3))
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "qpn.pth")
    report = convert_voxformer_qpn(tmp_path / "qpn.pth", tmp_path / "qpn.pt")
    assert report.unused == sorted(k for k in state if "__1_1" in k)
    assert report.missing == []
    with torch.device("meta"):
        model = MonoOccStudent(get_model_config("monoocc_s"))
    model.proposals.qpn.to_empty(device="cpu")
    load_qpn_weights(model, tmp_path / "qpn.pt")
    qpn = model.proposals.qpn.state_dict()
    assert torch.equal(qpn["encoder3.3.weight"], state["Encoder_block3.3.weight"])
    assert torch.equal(qpn["up_1_8_to_1_2.bias"], state["deconv_1_8__1_2.bias"])
    assert torch.equal(qpn["seg_head.bn2.1.running_var"], state["seg_head_1_2.bn2.1.running_var"])
    assert torch.equal(qpn["seg_head.conv_classes.weight"], state["seg_head_1_2.conv_classes.weight"])
    with pytest.raises(ValueError, match="no proposal network"):
        tiny = get_model_config("tiny")
        load_qpn_weights(MonoOccStudent(dataclasses.replace(tiny, proposal=dataclasses.replace(tiny.proposal, mode="all"))), tmp_path / "qpn.pt")
