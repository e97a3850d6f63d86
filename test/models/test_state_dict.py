"""Wrapper prefixes (DDP ``module.``, torch.compile ``_orig_mod.``) are removed by one function,
and every loader goes through it: weights saved from a compiled and DDP-wrapped model load."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from monoocc_ros.models.state_dict import clean_key, clean_state_dict


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.trunk(x))


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, so that the DDP keys come from DDP itself."""
    if dist.is_initialized():
        pytest.fail("a process group is already initialised in this test process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_compiled_then_ddp_and_ddp_then_compiled_keys_load_into_the_plain_model(process_group):
    torch.manual_seed(0)
    net = _Net()
    plain = net.state_dict()
    compiled_ddp = nn.parallel.DistributedDataParallel(torch.compile(net)).state_dict()
    ddp_compiled = torch.compile(nn.parallel.DistributedDataParallel(net)).state_dict()
    assert next(iter(compiled_ddp)).startswith("module._orig_mod.")
    assert next(iter(ddp_compiled)).startswith("_orig_mod.module.")
    for state in (compiled_ddp, ddp_compiled):
        cleaned = clean_state_dict(state)
        assert list(cleaned) == list(plain)
        fresh = _Net()
        fresh.load_state_dict(cleaned, strict=True)
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in plain.items())


def test_a_compiled_submodule_loses_its_inner_prefix_but_real_layer_names_stay():
    net = _Net()
    net.trunk = torch.compile(net.trunk)
    keys = list(net.state_dict())
    assert "trunk._orig_mod.0.weight" in keys
    assert list(clean_state_dict(net.state_dict())) == list(_Net().state_dict())
    # ``module`` is a wrapper only at the front; deeper it can be a real layer's name
    assert clean_key("head.module.weight") == "head.module.weight"
    assert clean_key("module.module.head.weight") == "head.weight"


def test_keys_that_collide_after_cleaning_are_an_error_not_a_silent_overwrite():
    with pytest.raises(ValueError, match="collide.*'module.head.weight' -> 'head.weight'"):
        clean_state_dict({"head.weight": 1, "module.head.weight": 2})


def test_project_checkpoint_from_a_compiled_ddp_model_builds(tmp_path):
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, make_payload
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    model = MonoOccStudent(get_model_config("tiny"))
    payload = make_payload(model, "tiny")
    payload["model"] = {f"module._orig_mod.{k}": v for k, v in payload["model"].items()}
    built, _ = build_model_from_checkpoint(payload)
    assert all(torch.equal(built.state_dict()[k], v) for k, v in model.state_dict().items())


def test_torchvision_resnet_state_from_a_compiled_ddp_model_loads():
    from monoocc_ros.models.trunk import load_torchvision_state_dict, resnet

    src, dst = resnet(50, num_stages=1), resnet(50, num_stages=1)
    with torch.no_grad():
        src.conv1.weight.normal_()
    report = load_torchvision_state_dict(dst, {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()})
    assert report["missing"] == []
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
