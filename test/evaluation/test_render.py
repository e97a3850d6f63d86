"""The renderer draws each voxel in its class colour on the pixels it covers; 0 and 255 stay blank."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.camera import CameraModel
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI
from monoocc_ros.render import BACKGROUND_RGB, FACE_SHADE, render_comparison, render_grid

CAR, ROAD, BUILDING = 1, 9, 13


def forward_camera(h: int = 120, w: int = 160) -> CameraModel:
    """Camera at the grid frame's origin looking along +x (KITTI velodyne -> optical axes)."""
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]  # x_cam = -y, y_cam = -z, z_cam = x
    K = np.array([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]])
    return CameraModel(K=K, T_cam_grid=T, image_hw=(h, w))


def pixel_of(camera: CameraModel, point) -> tuple[int, int]:
    uv, _, visible = camera.project(np.asarray([point], dtype=np.float64))
    assert visible[0]
    return int(uv[0, 1]), int(uv[0, 0])  # (row, col)


def shaded(cls: int, face: str) -> np.ndarray:
    return np.round(SEMANTIC_KITTI.colors_rgb[cls] * FACE_SHADE[face]).astype(np.uint8)


def test_voxel_blocks_show_their_class_colour_where_they_project():
    camera = forward_camera()
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    # A car block left of the axis and a building block right of it, both 10 m ahead,
    # spanning z = -1 .. +1 m; the camera sees their -x faces.
    labels[50:55, 138:148, 5:15] = CAR  # y in [2, 4) m (left)
    labels[50:55, 108:118, 5:15] = BUILDING  # y in [-4, -2) m (right)
    img = render_grid(labels, camera=camera)
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    car_px = pixel_of(camera, (10.0, 3.0, 0.0))
    bld_px = pixel_of(camera, (10.0, -3.0, 0.0))
    assert car_px[1] < 80 < bld_px[1]  # left / right of the image centre
    np.testing.assert_array_equal(img[car_px], shaded(CAR, "-x"))
    np.testing.assert_array_equal(img[bld_px], shaded(BUILDING, "-x"))
    # Straight ahead there is nothing: background.
    np.testing.assert_array_equal(img[pixel_of(camera, (20.0, 0.0, 0.0))], BACKGROUND_RGB)


def test_empty_and_unknown_voxels_are_not_drawn_and_occlusion_is_respected():
    camera = forward_camera()
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    labels[40:45, 120:136, 5:15] = IGNORE  # unknown wall in front (8 m) ...
    labels[60:65, 120:136, 5:15] = ROAD  # ... of a road-coloured wall at 12 m
    labels[80:85, 120:136, 5:15] = CAR  # hidden behind the road wall
    img = render_grid(labels, camera=camera)
    px = pixel_of(camera, (12.0, 0.0, 0.0))
    np.testing.assert_array_equal(img[px], shaded(ROAD, "-x"))
    assert not np.any(np.all(img == shaded(CAR, "-x"), axis=-1))

    blank = render_grid(np.where(labels == IGNORE, IGNORE, 0).astype(np.uint8), camera=camera)
    assert np.all(blank == np.asarray(BACKGROUND_RGB, np.uint8))


def test_top_view_default_camera_and_resized_render():
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    labels[:, :, 0] = ROAD  # a flat road everywhere
    chase = render_grid(labels, size=(60, 80))
    assert chase.shape == (60, 80, 3)
    # The chase view looks down at the road: its top faces fill the lower image.
    np.testing.assert_array_equal(chase[55, 40], shaded(ROAD, "+z"))
    # Rendering at half the calibrated size gives the same picture, sampled coarser.
    camera = forward_camera(120, 160)
    labels[50:55, 120:136, 5:15] = CAR
    full = render_grid(labels, camera=camera)
    half = render_grid(labels, camera=camera, size=(60, 80))
    np.testing.assert_array_equal(half[30, 40], full[60, 80])


def _car_predicted_where_a_building_is():
    """camera, a flat grey 120x160 image, and a prediction (car) and truth (building) of one box."""
    camera = forward_camera()
    image = np.full((120, 160, 3), 7, np.uint8)
    pred = np.zeros(KITTI_GRID.size, np.uint8)
    gt = np.zeros(KITTI_GRID.size, np.uint8)
    pred[50:55, 120:136, 5:15] = CAR
    gt[50:55, 120:136, 5:15] = BUILDING
    return camera, image, pred, gt


def test_comparison_puts_image_prediction_and_truth_side_by_side():
    camera, image, pred, gt = _car_predicted_where_a_building_is()
    out = render_comparison(image, pred, gt, camera, captions=False)
    assert out.shape == (120, 480, 3)
    r, c = pixel_of(camera, (10.0, 0.0, 0.0))
    np.testing.assert_array_equal(out[:, :160], image)
    np.testing.assert_array_equal(out[r, 160 + c], shaded(CAR, "-x"))
    np.testing.assert_array_equal(out[r, 320 + c], shaded(BUILDING, "-x"))


def test_bad_input_is_rejected_with_a_clear_message():
    camera = forward_camera()
    with pytest.raises(ValueError, match="shape"):
        render_grid(np.zeros((128, 128, 16), np.uint8))
    bad = np.zeros(KITTI_GRID.size, np.uint8)
    bad[0, 0, 0] = 42
    with pytest.raises(ValueError, match="42"):
        render_grid(bad)
    with pytest.raises(ValueError, match="calibrated"):
        render_comparison(np.zeros((10, 10, 3), np.uint8), bad * 0, bad * 0, camera)


def test_captioned_comparison_has_title_panel_names_and_a_class_colour_legend():
    """The figure reads without the code: header (title, panel names) and a legend of every class."""
    from monoocc_ros.labels import SEMANTIC_KITTI

    camera, image, pred, gt = _car_predicted_where_a_building_is()
    bare = render_comparison(image, pred, gt, camera, captions=False)
    fig = render_comparison(image, pred, gt, camera, title="frame 000005 | IoU 12.0 %")
    untitled = render_comparison(image, pred, gt, camera)
    assert fig.shape[1] == 480 and fig.shape[0] > 120 and untitled.shape[0] < fig.shape[0]
    # the panels are untouched (no text drawn over them), between the header and the legend
    top = next(r for r in range(fig.shape[0] - 119) if np.array_equal(fig[r:r + 120], bare))
    header, legend = fig[:top], fig[top + 120:]
    # text of at least 16 px: the white header text spans that many rows in one line
    inked = np.flatnonzero((header > 200).all(axis=-1).any(axis=1))
    assert len(inked) and np.split(inked, np.flatnonzero(np.diff(inked) > 1) + 1)[0].size >= 12
    # every class has its swatch in exactly the render colour
    swatches = {tuple(p) for p in legend.reshape(-1, 3)}
    for c in SEMANTIC_KITTI.paper_table_order:
        assert tuple(SEMANTIC_KITTI.colors_rgb[c]) in swatches, SEMANTIC_KITTI.names[c]
