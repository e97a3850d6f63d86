"""Grid geometry: index order, centres, voxelisation and VoxFormer's downsampling rule."""

import numpy as np
import pytest

from monoocc_ros.grid import KITTI_GRID, KITTI_GRID_HALF, VoxelGrid, downsample_labels


def test_kitti_grid_extent_and_half():
    assert KITTI_GRID.size == (256, 256, 32) and KITTI_GRID.num_voxels == 2_097_152
    assert KITTI_GRID.extent_m == pytest.approx((51.2, 51.2, 6.4))
    assert KITTI_GRID_HALF.size == (128, 128, 16)
    assert KITTI_GRID_HALF.voxel_size_m == pytest.approx(0.4)
    with pytest.raises(ValueError, match="not divisible"):
        VoxelGrid((3, 4, 4)).half()


def test_flat_order_matches_semantickitti_files():
    ijk = KITTI_GRID.index_grid()
    assert np.array_equal(KITTI_GRID.flat_index(ijk), np.arange(KITTI_GRID.num_voxels))
    assert KITTI_GRID.flat_index(np.array([1, 2, 3])) == (1 * 256 + 2) * 32 + 3


def test_centres_and_point_to_index_agree():
    grid = KITTI_GRID_HALF
    centres = grid.centres()
    assert centres[0] == pytest.approx([0.2, -25.4, -1.8])  # spec §1.5
    ijk, inside = grid.point_to_index(centres)
    assert inside.all()
    assert np.array_equal(grid.flat_index(ijk), np.arange(grid.num_voxels))
    _, inside = grid.point_to_index(np.array([[-0.01, 0, 0], [51.2, 0, 0], [10, 25.6, 0], [10, 0, 4.39]]))
    assert inside.tolist() == [False, False, False, True]


def test_voxelize_marks_hit_voxels_only():
    occ = KITTI_GRID.voxelize(np.array([[0.05, -25.55, -1.95], [10.0, 0.0, 0.0], [99.0, 0.0, 0.0]]))
    assert occ.sum() == 2
    assert occ[0, 0, 0] and occ[50, 128, 10]


def test_downsample_rule():
    labels = np.zeros((4, 2, 2), dtype=np.uint8)
    labels[2:] = 255
    labels[2, 0, 0] = 0  # block 1: one empty, seven unknown -> unknown
    out = downsample_labels(labels)
    assert out.shape == (2, 1, 1)
    assert out[:, 0, 0].tolist() == [0, 255]

    block = np.array([0, 0, 0, 0, 9, 9, 13, 255], dtype=np.uint8).reshape(2, 2, 2)
    assert downsample_labels(block)[0, 0, 0] == 9  # any semantic child wins; majority class
    tie = np.array([0, 0, 0, 0, 13, 13, 9, 9], dtype=np.uint8).reshape(2, 2, 2)
    assert downsample_labels(tie)[0, 0, 0] == 9  # ties go to the smaller id
    equal = np.array([0, 0, 0, 0, 255, 255, 255, 255], dtype=np.uint8).reshape(2, 2, 2)
    assert downsample_labels(equal)[0, 0, 0] == 255  # not more empty than unknown


def test_downsample_full_grid_shape():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, KITTI_GRID.size, dtype=np.uint8)
    assert downsample_labels(labels).shape == KITTI_GRID_HALF.size


def test_grid_is_validated_and_read_from_config_mappings():
    from monoocc_ros.config_io import ConfigError, from_mapping

    grid = from_mapping(VoxelGrid, {"size": [128, 128, 16], "voxel_size_m": 0.4})
    assert grid == VoxelGrid((128, 128, 16), 0.4) and grid.extent_m == pytest.approx(KITTI_GRID.extent_m)
    assert grid == KITTI_GRID.downscaled(2) == KITTI_GRID_HALF
    with pytest.raises(ValueError, match="three positive voxel counts"):
        VoxelGrid((128, 0, 16))
    with pytest.raises(ValueError, match="voxel_size_m > 0"):
        VoxelGrid(voxel_size_m=0.0)
    with pytest.raises(ConfigError, match="did you mean 'voxel_size_m'"):
        from_mapping(VoxelGrid, {"voxel_size": 0.4})
