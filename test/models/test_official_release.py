"""Official release files as mmcv 1.x writes them: restricted loading (numpy-1 and numpy-2 pickle
paths), the ICA config/weights decision, and the converted model against a project model built from
the same tensors through the key map."""

from __future__ import annotations

import json
import pickle
import pickletools
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from monoocc_ros.cli import main
from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
from monoocc_ros.models.config import get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent, lidar2img_from
from monoocc_ros.models.official_io import load_official_file
from monoocc_ros.models.voxel_transformer import project_voxels
from monoocc_ros.models.weights import HEAD, official_key_table
from test_weights import _variant, official_monoocc_s_state

try:
    from numpy._core.multiarray import scalar as _NP_SCALAR
except ImportError:  # numpy < 1.26
    from numpy.core.multiarray import scalar as _NP_SCALAR

MONOOCC_S_CONFIG = """model = dict(
    type='MonoOcc',
    pts_bbox_head=dict(type='MonoOccHead', bev_h=128, bev_w=128, bev_z=16, look_ahead={look_ahead},
                       use_sem=True, distill=False, embed_dims=128))
optimizer = dict(type='AdamW', lr=0.0002, weight_decay=0.01)
"""


class _Numpy1Pickler(pickle._Pickler):
    """Pickles numpy scalars under the numpy-1.x module path (``numpy.core.multiarray``), the way
    every released file was written, whatever numpy runs the test."""

    def save_global(self, obj, name=None):
        if obj is _NP_SCALAR:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.SimpleNamespace(Pickler=_Numpy1Pickler, __name__="numpy1_pickle")


def mmcv_checkpoint(state: dict[str, torch.Tensor], *, look_ahead: bool) -> dict:
    """What mmcv 1.x ``save_checkpoint`` writes after an EvalHook kept the best mIoU."""
    names = ["img_neck.lateral_convs.0.conv.weight", "img_neck.lateral_convs.0.conv.bias"]
    return {
        "meta": {
            "config": MONOOCC_S_CONFIG.format(look_ahead=look_ahead),
            "epoch": 20,
            "iter": 77500,
            "hook_msgs": {
                "last_ckpt": "work_dirs/MonoOcc-S/epoch_20.pth",
                "best_score": np.float64(0.1401),
                "best_ckpt": "work_dirs/MonoOcc-S/best_semkitti_SSC_mIoU_epoch_20.pth",
            },
            "mmcv_version": "1.4.0",
            "time": "Sat Sep 30 12:00:00 2023",
            "env_info": "sys.platform: linux\nPython: 3.8.16\nCUDA available: True",
            "seed": 0,
            "exp_name": "MonoOcc-S.py",
        },
        "state_dict": state,
        "optimizer": {
            "state": {i: {"step": 77500, "exp_avg": torch.zeros_like(state[k]), "exp_avg_sq": torch.ones_like(state[k])}
                      for i, k in enumerate(names)},
            "param_groups": [{"lr": 2e-6, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False,
                              "initial_lr": 0.0002, "params": list(range(len(names)))}],
        },
    }


def write_mmcv(path: Path, state: dict[str, torch.Tensor], *, look_ahead: bool, numpy1: bool) -> Path:
    kwargs = {"pickle_module": NUMPY1_PICKLE} if numpy1 else {}
    torch.save(mmcv_checkpoint(state, look_ahead=look_ahead), path, **kwargs)
    return path


def _pickle_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    """Random official tensors scaled like a trained network's (He-scaled convolutions, 1/sqrt(fan-in)
    linears): 50 ResNet layers stay finite, and 3 attention layers do not amplify float rounding
    (the fold reassociates a sum) into different logits."""
    state = official_monoocc_s_state(ica_trained=True, sem_decoder=True, seed=1)
    for key, value in state.items():
        if key.startswith(("img_backbone.", "img_neck.")) and value.dim() == 4:
            state[key] = value * (2.0 / value[0].numel()) ** 0.5
        elif key.endswith(".weight") and value.dim() == 2 and "embed" not in key:
            state[key] = value / value.shape[1] ** 0.5
    return state


@pytest.mark.parametrize("numpy1", [True, False], ids=["numpy.core", "numpy._core"])
def test_mmcv_file_loads_restricted_under_both_numpy_paths(tmp_path, official, numpy1):
    small = {k: official[k] for k in ("img_neck.lateral_convs.0.conv.weight", "img_neck.lateral_convs.0.conv.bias")}
    path = write_mmcv(tmp_path / "best.pth", small, look_ahead=True, numpy1=numpy1)
    carried = _pickle_globals(path)
    want = "numpy.core.multiarray.scalar" if numpy1 else "numpy._core.multiarray.scalar"
    assert want in carried and "numpy.dtype" in carried, carried
    # the premise: plain weights-only loading refuses such a file
    with pytest.raises(pickle.UnpicklingError, match="multiarray.scalar"):
        torch.load(path, weights_only=True)
    ckpt = load_official_file(path, "official MonoOcc checkpoint")
    best = ckpt["meta"]["hook_msgs"]["best_score"]
    assert type(best) is np.float64 and best == np.float64(0.1401)
    assert torch.equal(ckpt["optimizer"]["state"][1]["exp_avg_sq"], torch.ones(128))
    # the allow-list was added for that one call only
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_other_globals_are_refused_by_name(tmp_path):
    torch.save({"meta": {"work_dir": Path("/x")}, "state_dict": {}}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"odd\.pth.*pathlib\.PosixPath.*not on the allow-list"):
        load_official_file(tmp_path / "odd.pth", "official MonoOcc checkpoint")


def _reference_model(official: dict[str, torch.Tensor], *, use_ica: bool) -> MonoOccStudent:
    """A project model given the official tensors through the key map, with the official
    ``value_proj(f + level_embeds[0] + cams_embeds[0])`` done by a pre-hook instead of folding."""
    import dataclasses

    base = get_model_config("monoocc_s")
    cfg = dataclasses.replace(
        base,
        voxel=dataclasses.replace(base.voxel, use_ica=use_ica),
        proposal=dataclasses.replace(base.proposal, mode="external"),
    )
    model = MonoOccStudent(cfg)
    state = {dst: official[src] for src, dst in official_key_table(cfg, sem_decoder=True).items()}
    for key, value in official.items():
        if key.startswith("img_backbone.") and not key.startswith("img_backbone.layer4.") and "num_batches" not in key:
            state["backbone." + key[len("img_backbone."):]] = value
    model.load_state_dict(state)
    stacks = [("dca", "cross_transformer")] + ([("ica", "cross_transformer_late")] if use_ica else [])
    for stack, name in stacks:
        embed = official[f"{HEAD}{name}.level_embeds"][0] + official[f"{HEAD}{name}.cams_embeds"][0]
        for layer in getattr(model.occupancy, stack):
            layer.attn.deformable_attention.value_proj.register_forward_pre_hook(lambda m, args, e=embed: (args[0] + e,))
    # the module path calls value_proj (and so the hook); the fused inference path reads its weights
    model.occupancy.fast_inference = False
    return model.eval()


@pytest.mark.slow
def test_converted_release_logits_equal_the_key_mapped_model(tmp_path, official):
    src = write_mmcv(tmp_path / "best.pth", official, look_ahead=True, numpy1=True)
    assert main(["convert-checkpoint", str(src), str(tmp_path / "s.pt"), "--proposal-mode", "external"]) == 0
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["ica"] == {"use_ica": True, "weights_trained": True, "config_look_ahead": True,
                             "decided_by": "weights and config agree"}
    converted, cfg = build_model_from_checkpoint(load_checkpoint(tmp_path / "s.pt"))
    converted.eval()
    reference = _reference_model(official, use_ica=True)
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 192)
    K = torch.tensor([[[110.0, 0.0, 96.0], [0.0, 110.0, 32.0], [0.0, 0.0, 1.0]]])
    T = torch.tensor([[[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    with torch.no_grad():
        # ICA layer by layer on a few thousand visible voxels with the real image features
        value = converted.image_features(image)
        assert torch.equal(value, reference.image_features(image))
        ref, vis = project_voxels(converted.occupancy.centres, lidar2img_from(K, T)[:, None], (64, 192))
        idx = vis[0, 0].nonzero()[:, 0][::7][:3000]
        q = torch.randn(1, idx.numel(), 128)
        for a, b in zip(converted.occupancy.ica, reference.occupancy.ica):
            args = (q, value.flatten(2).transpose(1, 2)[:, None], ref[:, :, idx], vis[:, :, idx], tuple(value.shape[2:]))
            torch.testing.assert_close(a(*args), b(*args), rtol=1e-4, atol=1e-4)
        # end to end (trunk, neck, DCA with its folded bias, head). DSA and ICA over all 262144
        # voxels take minutes on 2 cores: ICA is compared above; DSA's tensors are the key map's own.
        for model in (converted, reference):
            model.occupancy.dsa, model.occupancy.ica = torch.nn.ModuleList(), None
        saved = load_checkpoint(tmp_path / "s.pt")["model"]
        dsa = {dst: src for src, dst in official_key_table(cfg, sem_decoder=True).items() if dst.startswith("occupancy.dsa.")}
        assert len(dsa) == 32 and all(torch.equal(saved[dst], official[src]) for dst, src in dsa.items())
        proposals = torch.zeros(1, 128, 128, 16, dtype=torch.bool)
        proposals[0, 4:40, 48:80, 3:9] = True
        got = converted(image, K, T, proposals)["ssc_logits"]
        want = reference(image, K, T, proposals)["ssc_logits"]
    # float32 rounding differs between folded and unfolded biases; the bar for the official code
    relative_l2 = float((got - want).norm() / want.norm())
    agreement = float((got.argmax(1) == want.argmax(1)).float().mean())
    assert relative_l2 < 1e-5 and agreement > 0.9999, (relative_l2, agreement)
    assert got.std() > 0.1  # non-trivial logits


@pytest.mark.parametrize("look_ahead,ica_trained", [(False, True), (True, False)])
def test_ica_disagreement_stops_unless_chosen(tmp_path, official, capsys, look_ahead, ica_trained):
    state = _variant(official, ica_trained=ica_trained, sem_decoder=False)
    src = write_mmcv(tmp_path / "best.pth", state, look_ahead=look_ahead, numpy1=True)
    dst = tmp_path / "s.pt"
    assert main(["convert-checkpoint", str(src), str(dst)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ICA" in err and f"look_ahead={look_ahead}" in err and "--ica" in err, err
    assert not dst.exists()
    for choice in ("on", "off"):
        assert main(["convert-checkpoint", str(src), str(dst), "--ica", choice]) == 0
        report = json.loads(dst.with_suffix(".report.json").read_text())
        assert report["ica"] == {"use_ica": choice == "on", "weights_trained": ica_trained,
                                 "config_look_ahead": look_ahead, "decided_by": f"--ica {choice}"}
        ckpt = load_checkpoint(dst)
        _, cfg = build_model_from_checkpoint(ckpt)
        assert cfg.voxel.use_ica is (choice == "on")
        assert any(k.startswith("occupancy.ica.") for k in ckpt["model"]) is (choice == "on")
        assert ckpt["meta"]["ica_decided_by"] == f"--ica {choice}"


@pytest.mark.parametrize("look_ahead", [True, False, None])
def test_agreeing_or_silent_config_converts_without_flags(tmp_path, official, look_ahead):
    trained = look_ahead is not False
    state = _variant(official, ica_trained=trained, sem_decoder=True)
    ckpt = mmcv_checkpoint(state, look_ahead=bool(look_ahead))
    if look_ahead is None:
        ckpt["meta"]["config"] = "model = dict(type='MonoOcc')"
    torch.save(ckpt, tmp_path / "best.pth")
    assert main(["convert-checkpoint", str(tmp_path / "best.pth"), str(tmp_path / "s.pt")]) == 0
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["ica"]["use_ica"] is trained and report["ica"]["config_look_ahead"] == look_ahead
    assert report["ica"]["decided_by"] == ("weights (config has no look_ahead)" if look_ahead is None else "weights and config agree")
