"""The inference path (fused CPU kernels, cached camera geometry, chunked layers) gives the training
path's labels; each fused piece equals the PyTorch operators it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monoocc_ros.models import cpu_kernels


def _trained_like(name: str = "tiny"):
    """A random model whose sampling offsets and attention weights are not at their (zero) init,
    so every point samples somewhere else with its own weight, as in a trained model."""
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    torch.manual_seed(3)
    model = MonoOccStudent(get_model_config(name)).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "sampling_offsets.weight" in key or "attention_weights.weight" in key:
                p.normal_(0, 0.2)
            if key.endswith("norm.weight"):
                p.normal_(1, 0.3)
    return model


@pytest.fixture
def reference_path(monkeypatch):
    """Switch the occupancy block to its training path (the eager reference)."""
    from monoocc_ros.models.voxel_transformer import OccupancyBlock

    def use(flag: bool) -> None:
        monkeypatch.setattr(OccupancyBlock, "fast_inference", flag)

    return use


def test_inference_path_gives_the_training_path_labels(small_frame, reference_path):
    from monoocc_ros.predictor import Predictor

    predictor = Predictor(_trained_like(), confidence=True)
    fast = predictor.predict(*small_frame)
    reference_path(False)
    reference = predictor.predict(*small_frame)
    assert len(np.unique(reference.labels)) > 3, "the frame must exercise several classes"
    assert float((fast.labels == reference.labels).mean()) >= 0.9995
    differs = np.abs(fast.confidence.astype(np.int16) - reference.confidence.astype(np.int16))
    assert float(np.mean(differs <= 1)) >= 0.995


def test_pytorch_fallback_gives_the_same_labels(small_frame, reference_path, monkeypatch):
    """Without a C compiler the inference path uses grid_sample and the tensor head: same labels."""
    from monoocc_ros.predictor import Predictor

    predictor = Predictor(_trained_like())
    monkeypatch.setitem(cpu_kernels._state, "lib", None)
    fallback = predictor.predict(*small_frame)
    reference_path(False)
    reference = predictor.predict(*small_frame)
    assert float((fallback.labels == reference.labels).mean()) >= 0.9995


@pytest.mark.parametrize("dh", [8, 16, 12])
def test_fused_sampling_equals_grid_sample(dh):
    from monoocc_ros.models.deform_attn import deformable_attention

    if cpu_kernels.load() is None:
        pytest.skip(cpu_kernels.kernel_status())  # the fallback is what runs then; covered above
    torch.manual_seed(0)
    N, P, m, h, w = 3, 5, 700, 13, 41
    value = torch.randn(1, h * w, N, dh)
    # locations in [-0.2, 1.2]: some corners and some whole points fall outside the map
    loc = torch.rand(1, m, N, 1, P, 2) * 1.4 - 0.2
    weights = torch.rand(1, m, N, 1, P).softmax(-1)
    expected = deformable_attention(value, [(h, w)], loc, weights)[0]
    # (1, m, N, 1, P, 2) -> (N, P, 2, m) in pixels
    loc_px = (loc[0, :, :, 0] * torch.tensor([w, h]) - 0.5).permute(1, 2, 3, 0).contiguous()
    got = cpu_kernels.deform_sample(value[0].reshape(h * w, N * dh), (h, w), loc_px, weights[0, :, :, 0].permute(1, 2, 0))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dilation,bias", [(1, True), (2, False), (3, False)])
def test_conv3d_as_conv2d_equals_conv3d(dilation, bias):
    from monoocc_ros.models.proposals import conv3d_as_conv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 4, 3, padding=dilation, dilation=dilation, bias=bias)
    x = torch.randn(2, 3, 7, 10, 9)
    with torch.no_grad():
        torch.testing.assert_close(conv3d_as_conv2d(x, conv), conv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_confidence", [False, True])
def test_fused_head_equals_tensor_head(with_confidence, monkeypatch):
    from monoocc_ros.models.heads import OccupancyHead

    if cpu_kernels.load() is None:
        pytest.skip(cpu_kernels.kernel_status())
    torch.manual_seed(0)
    head = OccupancyHead(16, 20, chunk_x=3).eval()
    with torch.no_grad():
        head.norm.weight.normal_(1, 0.3)
        head.norm.bias.normal_(0, 0.3)
        head.fc.weight.normal_(0, 1.0)
    # channels-last voxel rows viewed as (1, C, X, Y, Z), as the occupancy block returns them
    x = torch.randn(10 * 12 * 6, 16).t().reshape(1, 16, 10, 12, 6)
    fused = head.predict(x, with_confidence)
    monkeypatch.setitem(cpu_kernels._state, "lib", None)
    tensor = head.predict(x, with_confidence)
    assert float((fused[0] == tensor[0]).float().mean()) >= 0.9995
    logits = head(x)
    assert float((logits.argmax(1).to(torch.uint8) == fused[0]).float().mean()) >= 0.9995
    if with_confidence:
        assert int((fused[1].int() - tensor[1].int()).abs().max()) <= 1


def test_camera_geometry_is_cached_per_calibration():
    from monoocc_ros.grid import KITTI_GRID_HALF
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.voxel_transformer import OccupancyBlock, project_voxels

    block = OccupancyBlock(get_model_config("tiny").voxel).eval()
    K = torch.tensor([[120.0, 0, 160, 0], [0, 120, 48, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    T = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    first = block.camera_geometry((K @ T)[None, None], (96, 320), (6, 20))
    assert block.camera_geometry((K @ T)[None, None], (96, 320), (6, 20)) is first  # same camera: reused
    T2 = T.clone()
    T2[2, 3] = 2.0
    second = block.camera_geometry((K @ T2)[None, None], (96, 320), (6, 20))
    centres = torch.from_numpy(KITTI_GRID_HALF.centres()).float()
    reference, visible = project_voxels(centres, (K @ T2)[None, None], (96, 320))
    assert torch.equal(second["visible"], visible[0, 0])
    assert not torch.equal(second["visible"], first["visible"])
    torch.testing.assert_close(second["pixel_ref"], (reference[0, 0] * torch.tensor([20, 6]) - 0.5).t())


def test_checkpoint_keys_unchanged():
    """Caches and derived buffers of the inference path stay out of the state dict."""
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    keys = set(MonoOccStudent(get_model_config("tiny")).state_dict())
    assert not any("pixel_ref" in k or "cache" in k for k in keys)
    assert "occupancy.dsa.0.attn.sampling_offsets.weight" in keys
