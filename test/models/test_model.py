"""Student network: configs, shapes, gradients, parameter count, attention layouts, head, trunk."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from monoocc_ros.losses import MonoOccLoss
from monoocc_ros.models.config import MODEL_CONFIGS, get_model_config, model_config_from_dict
from monoocc_ros.models.heads import OccupancyHead
from monoocc_ros.models.monoocc import MonoOccStudent, count_parameters, lidar2img_from
from monoocc_ros.models.trunk import load_torchvision_state_dict, resnet
from monoocc_ros.models.voxel_transformer import (
    DeformCrossAttention,
    DeformSelfAttention,
    LearnedPositionalEncoding,
    dsa_reference_points,
    project_voxels,
)

# MonoOcc-S with ICA, proposal stage and 2D decoder excluded (spec §1.11, exact):
# trunk to layer3 8,543,296 + FPN 278,784 + bev_embed 33,554,432 + mask token 128 + positional tables
# 65,536 + 6 DCA/ICA layers x 124,224 + 2 DSA layers x 198,144 + head 2,836
MONOOCC_S_PARAMS = 43_586_644


def _random_batch(image_hw=(96, 320), seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    K = torch.tensor([[184.0, 0, w / 2], [0, 184.0, h / 2], [0, 0, 1]])[None]
    T = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27], [0, 0, 0, 1]])[None]
    depth = torch.rand(1, h, w, generator=g) * 50
    depth[torch.rand(1, h, w, generator=g) > 0.1] = 0
    return {
        "image": torch.rand(1, 3, h, w, generator=g),
        "K": K,
        "T_cam_grid": T,
        "labels": torch.randint(0, 20, (1, 256, 256, 32), generator=g),
        "labels_half": torch.randint(0, 20, (1, 128, 128, 16), generator=g),
        "sem2d": torch.randint(0, 20, (1, h, w), generator=g),
        "depth": depth,
    }


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_every_config_builds_and_round_trips(name):
    cfg = get_model_config(name)
    assert model_config_from_dict(dataclasses.asdict(cfg)) == cfg
    model = MonoOccStudent(cfg)
    assert model.neck.out.out_channels == cfg.voxel.embed_dim
    assert not any(p.requires_grad for p in model.backbone.conv1.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.layer2.parameters())


def test_config_rejects_unknown_keys():
    d = dataclasses.asdict(get_model_config("tiny"))
    d["voxel"]["num_layers"] = 3
    with pytest.raises(ValueError, match="voxel.*num_layers"):
        model_config_from_dict(d)
    with pytest.raises(ValueError, match="proposal.mode"):
        model_config_from_dict({"proposal": {"mode": "stereo"}})
    with pytest.raises(KeyError, match="monoocc_s"):
        get_model_config("monoocc_xl")


def test_monoocc_s_parameter_count():
    model = MonoOccStudent(get_model_config("monoocc_s"))
    inference = count_parameters(model) - count_parameters(model.proposals) - count_parameters(model.sem_decoder)
    assert inference == MONOOCC_S_PARAMS
    assert abs(inference - 43.6e6) / 43.6e6 < 1e-3
    assert count_parameters(model.backbone) == 8_543_296
    assert count_parameters(model.occupancy.dca[0]) == 124_224
    assert count_parameters(model.occupancy.dsa[0]) == 198_144
    print(f"monoocc_s parameters: {inference} without, {count_parameters(model)} with proposal stage and 2D decoder")


def test_tiny_forward_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = MonoOccStudent(get_model_config("tiny")).train()
    # offsets and attention weights start at exactly zero (official init), which blocks gradients to
    # their inputs (e.g. the positional tables) on the first step only; nudge them so every path is live
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("sampling_offsets.weight", "attention_weights.weight")):
                p.normal_(std=1e-3)
    batch = _random_batch()
    out = model(batch["image"], batch["K"], batch["T_cam_grid"])
    assert out["ssc_logits"].shape == (1, 20, 256, 256, 32)
    assert out["voxel_features"].shape == (1, 16, 128, 128, 16)
    assert out["sem2d_logits"].shape == (1, 20, 24, 80)
    assert out["proposal_logits"].shape == (1, 2, 128, 128, 16)
    assert out["depth"].shape == (1, 1, 6, 20)
    losses = MonoOccLoss.for_model(model)(out, batch)
    assert {"loss_ce_3d", "loss_sem_scal", "loss_geo_scal", "loss_sem_2d", "loss_depth", "loss_proposal"} <= set(losses)
    losses["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert count_parameters(model) < 1_000_000
    no_grad = [n for n, p in trainable.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []
    assert all(bool(torch.isfinite(p.grad).all()) for p in trainable.values())


def _naive_deformable(value, shapes, loc, weights):
    """Per-point bilinear sampling with zero padding, align_corners=False pixel convention."""
    B, S, N, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = torch.zeros(B, Q, N, D, dtype=torch.float64)
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for b in range(B):
        for q in range(Q):
            for n in range(N):
                for lvl, (h, w) in enumerate(shapes):
                    vmap = value[b, starts[lvl] : starts[lvl + 1], n].reshape(h, w, D).double()
                    for p in range(P):
                        x = loc[b, q, n, lvl, p, 0].item() * w - 0.5
                        y = loc[b, q, n, lvl, p, 1].item() * h - 0.5
                        x0, y0 = int(np.floor(x)), int(np.floor(y))
                        acc = torch.zeros(D, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * vmap[yy, xx]
                        out[b, q, n] += weights[b, q, n, lvl, p].item() * acc
    return out.reshape(B, Q, N * D)


def test_deformable_attention_matches_naive_loop():
    from monoocc_ros.models.deform_attn import deformable_attention

    g = torch.Generator().manual_seed(1)
    shapes = [(5, 7), (3, 4)]
    value = torch.randn(2, 47, 3, 4, generator=g)
    # locations slightly outside [0, 1] exercise the zero padding
    loc = torch.rand(2, 6, 3, 2, 4, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(2, 6, 3, 2, 4, generator=g).softmax(-1)
    got = deformable_attention(value, shapes, loc, weights)
    want = _naive_deformable(value, shapes, loc, weights)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_dsa_layout_and_positional_encoding():
    ref = dsa_reference_points()
    i, j, k = 37, 77, 5
    n = (i * 128 + j) * 16 + k
    row, col = 4 * i + j // 32, (j % 32) * 16 + k
    assert (n // 512, n % 512) == (row, col)
    assert torch.allclose(ref[n], torch.tensor([(col + 0.5) / 512, (row + 0.5) / 512]))
    pe = LearnedPositionalEncoding(4, 512, 512)
    pos = pe()
    assert torch.equal(pos[n], torch.cat([pe.col_embed.weight[col], pe.row_embed.weight[row]]))

    # with zero offsets every query samples exactly its own pixel of the 512x512 map
    dsa = DeformSelfAttention(8, 2, 2, 0.0, chunk=100_000).eval()
    with torch.no_grad():
        dsa.sampling_offsets.bias.zero_()
    x = torch.randn(1, 512 * 512, 8)
    with torch.no_grad():
        got = dsa(x, torch.randn(512 * 512, 8), ref)
        want = x + dsa.output_proj(dsa.value_proj(x))
    assert torch.allclose(got, want, atol=1e-5)


def test_cross_attention_invisible_bias_and_view_average():
    torch.manual_seed(0)
    attn = DeformCrossAttention(8, 2, 2, 0.0, chunk=7).eval()
    with torch.no_grad():
        attn.output_proj.bias.normal_()
    q = torch.randn(1, 20, 8)
    value = torch.randn(1, 1, 12, 8)
    ref = torch.rand(1, 1, 20, 2)
    visible = torch.rand(1, 1, 20) > 0.5
    with torch.no_grad():
        one = attn(q, value, ref, visible, (3, 4))
        two = attn(q, value.repeat(1, 2, 1, 1), ref.repeat(1, 2, 1, 1), visible.repeat(1, 2, 1), (3, 4))
    hidden = ~visible[0, 0]
    assert torch.allclose(one[0, hidden], q[0, hidden] + attn.output_proj.bias, atol=1e-6)
    assert not torch.allclose(one[0, ~hidden], q[0, ~hidden] + attn.output_proj.bias, atol=1e-3)
    assert torch.allclose(one, two, atol=1e-5)


def test_chunked_head_equals_full_argmax():
    torch.manual_seed(0)
    head = OccupancyHead(8, 20, chunk_x=3).eval()
    with torch.no_grad():
        head.norm.weight.normal_()
        head.norm.bias.normal_()
    x = torch.randn(2, 8, 10, 12, 4)
    labels, conf = head.predict(x, with_confidence=True)
    with torch.no_grad():
        logits = head(x)
    assert labels.shape == (2, 20, 24, 8) and labels.dtype == torch.uint8
    assert torch.equal(labels, logits.argmax(1).to(torch.uint8))
    want_conf = (logits.softmax(1).max(1).values * 255).round()
    assert (conf.float() - want_conf).abs().max() <= 1


def _torchvision_resnet50_state(g: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's resnet50 key names and shapes (torchvision not needed)."""
    state = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=g)}

    def bn(prefix, c):
        state[f"{prefix}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.bias"] = torch.randn(c, generator=g)
        state[f"{prefix}.running_mean"] = torch.randn(c, generator=g)
        state[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(100)

    bn("bn1", 64)
    cin = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            state[f"{p}.conv1.weight"] = torch.randn(planes, cin, 1, 1, generator=g)
            bn(f"{p}.bn1", planes)
            state[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3, generator=g)
            bn(f"{p}.bn2", planes)
            state[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1, generator=g)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                state[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, cin, 1, 1, generator=g)
                bn(f"{p}.downsample.1", planes * 4)
            cin = planes * 4
    state["fc.weight"] = torch.randn(1000, 2048, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_torchvision_state_dict_loads_into_trunk():
    state = _torchvision_resnet50_state(torch.Generator().manual_seed(0))
    trunk = resnet(50, num_stages=3)
    result = load_torchvision_state_dict(trunk, dict(state))
    assert result["missing"] == []
    assert "fc.weight" in result["dropped"] and "layer4.2.conv3.weight" in result["dropped"]
    own = trunk.state_dict()
    assert torch.equal(own["layer3.5.bn3.running_var"], state["layer3.5.bn3.running_var"])
    assert torch.equal(own["layer2.0.downsample.0.weight"], state["layer2.0.downsample.0.weight"])
    bad = dict(state)
    bad["layer2.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(ValueError, match="layer2.0.conv1.weight"):
        load_torchvision_state_dict(resnet(50, num_stages=3), bad)


def test_external_proposals_are_required_and_used_as_given_however_few():
    """Official protocol: DCA runs on exactly the proposed voxels, even below min_queries, even none."""
    torch.manual_seed(0)
    tiny = get_model_config("tiny")
    cfg = dataclasses.replace(tiny, proposal=dataclasses.replace(tiny.proposal, mode="external"))
    model = MonoOccStudent(cfg).eval()
    batch = _random_batch()
    with torch.no_grad():
        with pytest.raises(ValueError, match="external"):
            model.encode(batch["image"], batch["K"], batch["T_cam_grid"])
        with pytest.raises(ValueError, match="128, 128, 16"):
            model.encode(batch["image"], batch["K"], batch["T_cam_grid"], torch.zeros(1, 64, 64, 8, dtype=torch.bool))
        lidar2img = lidar2img_from(batch["K"], batch["T_cam_grid"])[:, None]
        _, visible = project_voxels(model.occupancy.centres, lidar2img, (96, 320))
        few = torch.zeros(1, 128 * 128 * 16, dtype=torch.bool)
        few[0, visible[0, 0].nonzero()[:5, 0]] = True
        few = few.view(1, 128, 128, 16)
        assert 0 < int(few.sum()) < cfg.proposal.min_queries
        seen = []
        model.occupancy.dca[0].register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
        features = {}
        for fast in (False, True):  # the module path (hooked) and the fused inference path agree
            model.occupancy.fast_inference = fast
            for name, proposals in (("few", few), ("none", torch.zeros_like(few))):
                out = model.encode(batch["image"], batch["K"], batch["T_cam_grid"], proposals)
                assert "query_fallback" not in out
                features[fast, name] = out["voxel_features"]
    assert seen == [5, 0]
    for name in ("few", "none"):
        torch.testing.assert_close(features[True, name], features[False, name], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(features[False, "few"], features[False, "none"])
    assert features[False, "few"].shape == (1, 16, 128, 128, 16)
    assert bool(torch.isfinite(features[False, "few"]).all())


def test_monocular_fallback_below_min_queries_is_reported():
    torch.manual_seed(0)
    model = MonoOccStudent(get_model_config("tiny")).eval()  # tiny: monocular proposals
    assert model.cfg.proposal.mode == "monocular"
    batch = _random_batch()
    with torch.no_grad():
        out = model.encode(batch["image"], batch["K"], batch["T_cam_grid"])
    proposed = int(out["proposal_logits"].argmax(1).sum())
    assert out["query_fallback"].tolist() == [proposed < model.cfg.proposal.min_queries]


def test_trunk_factory_builds_resnet_by_depth_or_blocks():
    from monoocc_ros.models.config import RESNET_BLOCKS, TrunkConfig
    from monoocc_ros.models.trunk import build_trunk

    deep = TrunkConfig(base_width=8, depth=101)
    trunk = build_trunk(deep)
    assert [len(getattr(trunk, n)) for n in trunk.stage_names] == list(RESNET_BLOCKS[101][:3])
    assert (trunk.out_channels, trunk.stride) == (deep.out_channels, deep.stride) == (128, 16)
    assert trunk(torch.zeros(1, 3, 64, 64)).shape == (1, 128, 4, 4)
    two = TrunkConfig(blocks=(1, 2), base_width=8, num_stages=2)
    assert (build_trunk(two).out_channels, build_trunk(two).stride) == (two.out_channels, two.stride) == (64, 8)
    with pytest.raises(ValueError, match="trunk.depth"):
        TrunkConfig(depth=34)
    with pytest.raises(ValueError, match="num_stages"):
        TrunkConfig(blocks=(1, 1), num_stages=3)
    # the student builds its trunk from cfg.trunk through the factory
    cfg = get_model_config("tiny", ["trunk.depth=50"])
    model = MonoOccStudent(cfg)
    assert [len(getattr(model.backbone, n)) for n in model.backbone.stage_names] == [3, 4, 6]


def test_grid_is_a_model_config_change():
    """A 128x128x16 grid of 0.4 m: outputs, proposals and voxel features follow cfg.grid, loss and backward work."""
    cfg = get_model_config("tiny", ["grid.size=[128, 128, 16]", "grid.voxel_size_m=0.4"])
    assert cfg.coarse_grid.size == (64, 64, 8) and cfg.coarse_grid.voxel_size_m == pytest.approx(0.8)
    torch.manual_seed(0)
    model = MonoOccStudent(cfg).train()
    batch = _random_batch()
    g = torch.Generator().manual_seed(1)
    batch["labels"] = torch.randint(0, 20, (1, 128, 128, 16), generator=g)
    batch["labels_half"] = torch.randint(0, 20, (1, 64, 64, 8), generator=g)
    out = model(batch["image"], batch["K"], batch["T_cam_grid"])
    assert out["ssc_logits"].shape == (1, 20, 128, 128, 16)
    assert out["proposal_logits"].shape == (1, 2, 64, 64, 8)
    assert out["voxel_features"].shape == (1, 16, 64, 64, 8)
    # voxel centres are those of the configured grid (0.8 m coarse voxels from the same origin)
    assert model.occupancy.centres[0].tolist() == pytest.approx([0.4, -25.2, -1.6])
    MonoOccLoss.for_model(model)(out, batch)["loss"].backward()
    labels, _ = model.eval().predict(batch["image"], batch["K"], batch["T_cam_grid"])
    assert labels.shape == (1, 128, 128, 16)
    with pytest.raises(ValueError, match="multiples of 8"):
        get_model_config("tiny", ["grid.size=[100, 128, 16]"])


def test_label_set_must_match_the_head():
    cfg = get_model_config("tiny", ["head.num_classes=5"])
    with pytest.raises(ValueError, match="'semantic_kitti' has 20 classes but head.num_classes is 5"):
        cfg.label_set()
    with pytest.raises(ValueError, match="neither a known label set"):
        get_model_config("tiny", ["labels=/nonexistent/five.yaml"]).label_set()
    assert get_model_config("tiny").label_set().num_classes == 20
