"""BagDataset samples: contents against the sources, temporal neighbours, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from monoocc_ros.camera import kitti_camera_from_calib, project_points
from monoocc_ros.data.bag_dataset import BagDataset, project_lidar
from monoocc_ros.data.kitti import KittiSequence
from monoocc_ros.grid import downsample_labels
from monoocc_ros.labels import SEMANTIC_KITTI

GT_FRAMES = (0, 2, 4)  # voxel frames of the tiny sequence in test/data/conftest.py


@pytest.fixture(scope="module")
def seq(tiny_kitti_src) -> KittiSequence:
    return KittiSequence(tiny_kitti_src[0], "00")


@pytest.fixture(scope="module")
def dataset(tiny_bag) -> BagDataset:
    return BagDataset([tiny_bag], temporal_offsets=(-1, 1))


def lidar_pose(seq, f):
    Tr = seq.calib["Tr"]
    return np.linalg.inv(Tr) @ seq.poses[f] @ Tr


def test_sample_contents(dataset, seq):
    assert len(dataset) == 3 and dataset.problems == []
    K, T_cam_velo = kitti_camera_from_calib(seq.calib["P2"], seq.calib["Tr"])
    for i, f in enumerate(GT_FRAMES):
        s = dataset[i]
        h, w = 48, 160
        expected_dtypes = {
            "image": (torch.float32, (3, h, w)),
            "K": (torch.float32, (3, 3)),
            "T_cam_grid": (torch.float32, (4, 4)),
            "labels": (torch.int64, (256, 256, 32)),
            "labels_half": (torch.int64, (128, 128, 16)),
            "sem2d": (torch.int64, (h, w)),
            "depth": (torch.float32, (h, w)),
            "temporal_images": (torch.float32, (2, 3, h, w)),
            "temporal_T_cam_grid": (torch.float32, (2, 4, 4)),
            "stamp_ns": (torch.int64, ()),
        }
        for key, (dtype, shape) in expected_dtypes.items():
            assert s[key].dtype == dtype and tuple(s[key].shape) == shape, key
        assert s["index"] == i and int(s["stamp_ns"]) == int(round(seq.times[f] * 1e9))
        image = seq.load_image(f)
        assert torch.equal(s["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        np.testing.assert_allclose(s["K"].numpy(), K, rtol=1e-6)
        np.testing.assert_allclose(s["T_cam_grid"].numpy(), T_cam_velo, atol=1e-5)
        vox = seq.load_voxels(f)
        labels = SEMANTIC_KITTI.remap_voxel_labels(vox.labels)
        labels[vox.invalid] = 255
        assert np.array_equal(s["labels"].numpy(), labels)
        assert np.array_equal(s["labels_half"].numpy(), downsample_labels(labels))


def test_sem2d_and_depth_nearest_point_wins(dataset, seq):
    s = dataset[1]
    f = GT_FRAMES[1]
    K, T = kitti_camera_from_calib(seq.calib["P2"], seq.calib["Tr"])
    scan = seq.load_scan(f)
    ids = SEMANTIC_KITTI.remap_point_labels(seq.load_point_labels(f))
    uv, z = project_points(scan[:, :3], K, T)
    depth = np.zeros((48, 160))
    sem = np.full((48, 160), 255)
    best_depth = np.full((48, 160), np.inf)
    best_label_depth = np.full((48, 160), np.inf)
    for (u, v), d, c in zip(uv, z, ids):
        if d <= 0 or not (0 <= u < 160 and 0 <= v < 48):
            continue
        r, q = int(v), int(u)
        if d < best_depth[r, q]:
            best_depth[r, q], depth[r, q] = d, d
        if c != 255 and d < best_label_depth[r, q]:
            best_label_depth[r, q], sem[r, q] = d, c
    assert (depth > 0).sum() > 100 and (sem != 255).sum() > 50
    np.testing.assert_allclose(s["depth"].numpy(), depth, rtol=1e-6)
    assert np.array_equal(s["sem2d"].numpy(), sem)


def test_temporal_neighbours(dataset, seq, tiny_bag):
    K, T_cam_velo = kitti_camera_from_calib(seq.calib["P2"], seq.calib["Tr"])
    for i, f in enumerate(GT_FRAMES):
        s = dataset[i]
        for k, offset in enumerate((-1, 1)):
            n = min(max(f + offset, 0), 5)
            assert torch.equal(
                s["temporal_images"][k],
                torch.from_numpy(seq.load_image(n)).permute(2, 0, 1) / 255.0,
            )
            expected = T_cam_velo @ np.linalg.inv(lidar_pose(seq, n)) @ lidar_pose(seq, f)
            np.testing.assert_allclose(s["temporal_T_cam_grid"][k].numpy(), expected, atol=1e-5)
    # Frame 0 has no predecessor: clamped to itself.
    s0 = dataset[0]
    assert torch.equal(s0["temporal_images"][0], s0["image"])
    np.testing.assert_allclose(
        s0["temporal_T_cam_grid"][0].numpy(), s0["T_cam_grid"].numpy(), atol=1e-6
    )
    # The camera drives 0.8 m forward per frame: a point 10 m ahead is 9.2 m ahead one frame later.
    p = np.linalg.inv(T_cam_velo) @ np.array([0.0, 0.0, 10.0, 1.0])
    assert (s0["temporal_T_cam_grid"][1].double().numpy() @ p)[2] == pytest.approx(9.2, abs=1e-4)


def test_no_temporal_offsets_and_frame_slice(tiny_bag):
    ds = BagDataset([tiny_bag, tiny_bag], frames=slice(2, 5))
    assert len(ds) == 3
    s = ds[0]
    assert s["temporal_images"].shape == (0, 3, 48, 160) and s["temporal_T_cam_grid"].shape == (
        0,
        4,
        4,
    )
    assert ds.items == [(0, 4), (1, 0), (1, 2)]


def test_dataloader_with_two_workers(dataset):
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [2, 1]
    assert batches[0]["labels"].shape == (2, 256, 256, 32) and batches[0][
        "temporal_images"
    ].shape == (2, 2, 3, 48, 160)
    assert batches[0]["index"].tolist() == [0, 1] and batches[1]["index"].tolist() == [2]
    assert torch.equal(batches[1]["labels"][0], dataset[2]["labels"])
    assert torch.equal(batches[0]["sem2d"][1], dataset[1]["sem2d"])


def test_no_ground_truth_is_a_clear_error(tiny_bag):
    with pytest.raises(ValueError, match=r"no ground-truth frames in .*tiny.*slice"):
        BagDataset([tiny_bag], frames=slice(10, 20))


def test_project_lidar_drops_points_behind_and_outside():
    K = np.array([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]])
    pts = np.array([[0, 0, 2.0], [0, 0, 1.0], [0, 0, -1.0], [100, 0, 1.0]])
    sem, depth = project_lidar(pts, np.array([3, 255, 4, 5], np.uint8), K, np.eye(4), (10, 10))
    assert (
        depth[5, 5] == 1.0 and sem[5, 5] == 3
    )  # nearest point unlabelled: label from the next one
    assert (depth > 0).sum() == 1 and (sem != 255).sum() == 1
