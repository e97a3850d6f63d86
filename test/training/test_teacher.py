"""Privileged teacher: V-view forward, views matter, gradients, torchvision ResNet-101 weights."""

import pytest
import torch

from monoocc_ros.models.config import get_model_config
from monoocc_ros.models.trunk import RESNET_BLOCKS, ResNet
from training.config import TeacherConfig
from training.teacher import MonoOccTeacher


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return MonoOccTeacher(get_model_config("tiny"), TeacherConfig(cvt_layers=2))


def test_forward_with_five_views_uses_every_view(teacher, small_camera):
    K, T, T_past = small_camera
    torch.manual_seed(1)
    image = torch.rand(1, 3, 64, 160)
    past = torch.rand(1, 4, 3, 64, 160, requires_grad=True)
    teacher.train()
    out = teacher(image, K, T, past, T_past)
    C = get_model_config("tiny").voxel.embed_dim
    assert out["voxel_features"].shape == (1, C, 128, 128, 16)
    assert out["ssc_logits"].shape == (1, 20, 256, 256, 32)
    assert out["sem2d_logits"].shape[:2] == (1, 20)
    out["voxel_features"].square().mean().backward()
    # every past frame reaches the voxel features through its own projection and the CVT
    assert all(past.grad[0, v].abs().sum() > 0 for v in range(4))
    for name in ("cvt.layers.0.cross_attn.q_proj.weight", "backbone.layer3.22.conv2.weight"):
        grad = dict(teacher.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert len(teacher.backbone.layer3) == RESNET_BLOCKS[101][2]


def test_bad_temporal_shapes_raise(teacher, small_camera):
    K, T, T_past = small_camera
    with pytest.raises(ValueError, match="temporal_T_cam_grid"):
        teacher(torch.rand(1, 3, 64, 160), K, T, torch.rand(1, 4, 3, 64, 160), T_past[:, :2])


def test_loads_torchvision_format_resnet101(tmp_path, teacher):
    full = ResNet(RESNET_BLOCKS[101], base_width=8, frozen_stages=0)  # torchvision names, all 4 stages
    state = dict(full.state_dict())
    state["fc.weight"] = torch.zeros(10, 8 * 8 * 4)
    state["bn1.num_batches_tracked"] = torch.tensor(3)
    path = tmp_path / "resnet101.pth"
    torch.save(state, path)
    report = teacher.load_backbone(path)
    assert any(k.startswith("layer4.") for k in report["dropped"]) and "fc.weight" in report["dropped"]
    assert torch.equal(teacher.backbone.layer3[22].conv2.weight, full.layer3[22].conv2.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        teacher.load_backbone(tmp_path / "missing.pth")
