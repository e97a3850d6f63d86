"""Under bf16 autocast (``precision: bf16``) only the network's GEMMs run in bf16: camera geometry
and the weight folds computed per frame give exactly what they give in fp32. When they did not,
``K @ T`` and the voxel projections were several pixels off and a trained ``monoocc_s`` agreed with
its own fp32 labels on 99.0 % of the voxels (README "Real time")."""

from __future__ import annotations

import torch

from monoocc_ros.camera import kitti_camera_from_calib
from monoocc_ros.grid import KITTI_GRID, KITTI_GRID_HALF
from monoocc_ros.models.heads import OccupancyHead
from monoocc_ros.models.monoocc import lidar2img_from
from monoocc_ros.models.proposals import depth_bin_edges, depth_lift_index
from monoocc_ros.models.voxel_transformer import project_voxels

IMAGE_HW = (370, 1226)


def _camera() -> tuple[torch.Tensor, torch.Tensor]:
    """SemanticKITTI sequence 08's P2 and Tr (calib.txt): K (1, 3, 3), T_cam_grid (1, 4, 4)."""
    P2 = [[707.0912, 0.0, 601.8873, 46.88783], [0.0, 707.0912, 183.1104, 0.1178601], [0.0, 0.0, 1.0, 0.006203918]]
    Tr = [[-0.001857739, -0.9999659, -0.008039975, -0.004784029],
          [-0.006481465, 0.008051860, -0.9999466, -0.07337429],
          [0.9999773, -0.001805528, -0.006496203, -0.3339843]]
    K, T = kitti_camera_from_calib(P2, Tr)
    return torch.from_numpy(K).float()[None], torch.from_numpy(T).float()[None]


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_camera_geometry_is_float32_under_autocast():
    K, T = _camera()
    lidar2img = lidar2img_from(K, T)
    centres = torch.from_numpy(KITTI_GRID_HALF.centres()).float()
    reference, visible = project_voxels(centres, lidar2img[:, None], IMAGE_HW)
    edges = depth_bin_edges(2.0, 58.0, 112)
    fine = torch.from_numpy(KITTI_GRID.centres()).float()
    flat, valid = depth_lift_index(fine, lidar2img, IMAGE_HW, (24, 77), edges)
    homogeneous = torch.cat([centres, torch.ones(len(centres), 1)], 1)
    exact = torch.einsum("bij,qj->bqi", lidar2img, homogeneous)
    with _bf16():
        lidar2img_amp = lidar2img_from(K, T)
        # the check has teeth: the same product under autocast is off by pixels at 50 m
        naive = torch.einsum("bij,qj->bqi", lidar2img, homogeneous)
        reference_amp, visible_amp = project_voxels(centres, lidar2img_amp[:, None], IMAGE_HW)
        flat_amp, valid_amp = depth_lift_index(fine, lidar2img_amp, IMAGE_HW, (24, 77), edges)
    assert naive.dtype == torch.bfloat16
    assert (naive.float() - exact).abs().max() > 1.0
    assert lidar2img_amp.dtype == torch.float32 and torch.equal(lidar2img_amp, lidar2img)
    assert reference_amp.dtype == torch.float32 and torch.equal(reference_amp, reference)
    assert torch.equal(visible_amp, visible)
    assert torch.equal(flat_amp, flat) and torch.equal(valid_amp, valid)


def test_head_bias_fold_is_float32_under_autocast():
    torch.manual_seed(0)
    head = OccupancyHead(128, 20).eval()
    with torch.no_grad():
        head.norm.bias.normal_()
        expected = head._folded_bias()
        with _bf16():
            got = head._folded_bias()
    assert got.dtype == torch.float32 and torch.equal(got, expected)
