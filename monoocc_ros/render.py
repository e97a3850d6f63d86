"""Headless renderer of semantic voxel grids (Open3D ray casting on the CPU).

Only the exposed faces of occupied voxels are turned into triangles; one ray per pixel is
cast through an Open3D :class:`~open3d.t.geometry.RaycastingScene` and the hit face takes its
class colour, shaded by the face's axis so that surfaces stay readable. Ray casting needs no
GPU, no display and no Vulkan driver, and gives the same pixels on every machine, which the
tests and the evaluation renders rely on.

Rendering from a :class:`~monoocc_ros.camera.CameraModel` (the bag's ``K`` and ``T_cam_grid``)
puts every voxel on the pixels it covers in the camera image, so image, prediction and ground
truth line up side by side. Without a camera a fixed chase view behind the grid is used.

Example:
    >>> import numpy as np
    >>> from monoocc_ros.render import render_grid
    >>> labels = np.zeros((256, 256, 32), np.uint8); labels[100:110, 120:136, 0:4] = 1
    >>> render_grid(labels, size=(240, 320)).shape
    (240, 320, 3)
"""

from __future__ import annotations

import numpy as np

from monoocc_ros.camera import CameraModel
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI

__all__ = [
    "BACKGROUND_RGB",
    "FACE_SHADE",
    "chase_camera",
    "legend_strip",
    "render_comparison",
    "render_grid",
]

BACKGROUND_RGB = (255, 255, 255)
"""Colour of pixels whose ray hits no drawn voxel."""

FACE_SHADE = {"+x": 0.85, "-x": 0.85, "+y": 0.7, "-y": 0.7, "+z": 1.0, "-z": 0.55}
"""Brightness factor of a class colour on a face with this outward normal (grid frame)."""

DEFAULT_SIZE = (480, 640)

# (axis, sign, name): outward normals of the six cube faces.
_FACES = ((0, 1, "+x"), (0, -1, "-x"), (1, 1, "+y"), (1, -1, "-y"), (2, 1, "+z"), (2, -1, "-z"))


def chase_camera(size: tuple[int, int] = DEFAULT_SIZE, grid: VoxelGrid = KITTI_GRID) -> CameraModel:
    """A fixed view from behind and above the grid, looking forward and down at its middle.

    Args:
        size: (H, W) of the rendered image.
        grid: the grid to frame.

    Returns:
        A camera whose optical frame sees the whole grid.
    """
    h, w = size
    lo = np.asarray(grid.origin_m, dtype=np.float64)
    ext = np.asarray(grid.extent_m, dtype=np.float64)
    eye = np.array([lo[0] - 0.3 * ext[0], lo[1] + 0.5 * ext[1], lo[2] + 0.45 * ext[0]])
    target = np.array([lo[0] + 0.55 * ext[0], lo[1] + 0.5 * ext[1], lo[2]])
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])  # camera x (right) = forward x up
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # camera y points down
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z])
    T[:3, 3] = -T[:3, :3] @ eye
    f = 0.75 * w
    K = np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
    return CameraModel(K=K, T_cam_grid=T, image_hw=(h, w))


def _check_labels(labels: np.ndarray, grid: VoxelGrid, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != grid.size:
        raise ValueError(f"{name} must have shape {grid.size}, got {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"{name} must hold integer train ids, got dtype {labels.dtype}")
    bad = (labels >= SEMANTIC_KITTI.num_classes) & (labels != IGNORE) | (labels < 0)
    if bad.any():
        raise ValueError(
            f"{name} holds ids outside 0..{SEMANTIC_KITTI.num_classes - 1} and {IGNORE}: "
            f"{np.unique(labels[bad])[:10].tolist()}"
        )
    return labels.astype(np.uint8)


def _exposed_faces(labels: np.ndarray, grid: VoxelGrid):
    """Triangles of the faces between a drawn voxel and a non-drawn neighbour (or the border).

    Returns:
        vertices: (4F, 3) float32 corners in the grid frame.
        triangles: (2F, 3) uint32 vertex indices, two per face.
        face_rgb: (F, 3) float32 shaded colour of each face.
    """
    drawn = (labels != EMPTY) & (labels != IGNORE)
    padded = np.pad(drawn, 1, constant_values=False)
    corners, colours = [], []
    palette = SEMANTIC_KITTI.colors_rgb.astype(np.float32)
    for axis, sign, name in _FACES:
        neighbour = np.roll(padded, -sign, axis=axis)[1:-1, 1:-1, 1:-1]
        ijk = np.argwhere(drawn & ~neighbour)  # (F, 3)
        if not len(ijk):
            continue
        # The face lies on the voxel's side at +1 (sign > 0) or 0 along `axis`; its four
        # corners span the other two axes, ordered around the square.
        u, v = [a for a in range(3) if a != axis]
        quad = np.zeros((4, 3))
        quad[:, axis] = 1.0 if sign > 0 else 0.0
        quad[:, u] = [0, 1, 1, 0]
        quad[:, v] = [0, 0, 1, 1]
        corners.append(ijk[:, None, :] + quad[None])  # (F, 4, 3) voxel units
        colours.append(palette[labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]]] * FACE_SHADE[name])
    if not corners:
        return None
    corner_idx = np.concatenate(corners)  # (F, 4, 3)
    vertices = (corner_idx.reshape(-1, 3) * grid.voxel_size_m + np.asarray(grid.origin_m)).astype(
        np.float32
    )
    base = np.arange(len(corner_idx), dtype=np.uint32)[:, None] * 4
    triangles = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=1).reshape(-1, 3)
    return vertices, triangles.astype(np.uint32), np.concatenate(colours)


def _camera_rays(camera: CameraModel, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 6) float32 rays [origin, direction] through pixel centres, in the grid frame."""
    h, w = size
    ch, cw = camera.image_hw
    # A render at another resolution than the calibration scales the intrinsics.
    scale = np.diag([w / cw, h / ch, 1.0])
    K = scale @ camera.K
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
    dirs_cam = pix @ np.linalg.inv(K).T
    R = camera.T_cam_grid[:3, :3]
    t = camera.T_cam_grid[:3, 3]
    dirs = dirs_cam @ R  # R^T applied to row vectors
    origin = -R.T @ t
    rays = np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], axis=-1)
    return rays.astype(np.float32)


def render_grid(
    labels: np.ndarray,
    *,
    camera: CameraModel | None = None,
    size: tuple[int, int] | None = None,
    grid: VoxelGrid = KITTI_GRID,
) -> np.ndarray:
    """Render a semantic grid in class colours; empty (0) and unknown (255) voxels are not drawn.

    Args:
        labels: (X, Y, Z) integer train ids of ``grid`` (256x256x32 by default).
        camera: viewpoint; the camera the grid was predicted for lines the render up with its
            image. None gives :func:`chase_camera`.
        size: (H, W) of the output; defaults to ``camera.image_hw`` (or 480x640 for the chase
            view). Intrinsics are scaled when it differs from the camera's size.
        grid: geometry of ``labels``.

    Returns:
        (H, W, 3) uint8 RGB; pixels that see no voxel are :data:`BACKGROUND_RGB`.

    Raises:
        ValueError: wrong shape or dtype, or ids that are neither classes nor 255.
    """
    import open3d as o3d

    labels = _check_labels(labels, grid, "labels")
    if size is None:
        size = camera.image_hw if camera is not None else DEFAULT_SIZE
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"render size must be positive, got {size}")
    if camera is None:
        camera = chase_camera((h, w), grid)
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[:] = BACKGROUND_RGB
    mesh = _exposed_faces(labels, grid)
    if mesh is None:
        return out
    vertices, triangles, face_rgb = mesh
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(triangles))
    hits = scene.cast_rays(o3d.core.Tensor(_camera_rays(camera, (h, w))))
    prim = hits["primitive_ids"].numpy()  # (H, W) uint32
    hit = prim != o3d.t.geometry.RaycastingScene.INVALID_ID
    out[hit] = np.round(face_rgb[prim[hit] // 2]).astype(np.uint8)
    return out


PANEL_NAMES = ("camera image", "prediction", "ground truth")

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_FONT_PX_AT_SCALE_1 = 22  # cap height of that font at fontScale 1.0, in pixels


def _text_px(width: int) -> int:
    """Text height for a figure ``width`` pixels wide: readable at full size and when the
    figure is scaled down to a screen's width (a 3x1226 px KITTI figure gets 36 px text)."""
    return int(np.clip(width / 100.0, 16, 36))


def _put_text(canvas: np.ndarray, text: str, org: tuple[int, int], px: int, rgb=(0, 0, 0)) -> int:
    """Draw ``text`` with its baseline-left corner at ``org``; returns its width in pixels."""
    import cv2

    scale = px / _FONT_PX_AT_SCALE_1
    thickness = max(1, int(round(px / 12)))
    cv2.putText(canvas, text, org, _FONT, scale, tuple(int(c) for c in rgb), thickness, cv2.LINE_AA)
    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _text_width(text: str, px: int) -> int:
    import cv2

    return cv2.getTextSize(text, _FONT, px / _FONT_PX_AT_SCALE_1, max(1, int(round(px / 12))))[0][0]


def _header(width: int, panel_w: int, title: str | None, px: int) -> np.ndarray:
    """Dark strip: ``title`` (frame id, score) on one line, the panels' names above each panel."""
    line = int(1.8 * px)
    lines = 2 if title else 1
    strip = np.full((lines * line + px // 2, width, 3), 40, np.uint8)
    y = line
    if title:
        _put_text(strip, title, (px // 2, y), px, (255, 255, 255))
        y += line
    for k, name in enumerate(PANEL_NAMES):
        _put_text(strip, name, (k * panel_w + px // 2, y), px, (255, 255, 255))
    return strip


def legend_strip(width: int, present: np.ndarray | None = None, px: int | None = None) -> np.ndarray:
    """White strip with one colour swatch and name per class (the colours of the renders).

    Args:
        width: strip width in pixels.
        present: (num_classes,) bool, classes drawn in the figure; the others are written in
            grey. None: all in black.
        px: text height (default: from ``width``).

    Returns:
        (rows * line, width, 3) uint8 RGB, classes in the paper's Table I order, then a white
        swatch for voxels that are not drawn (empty or unknown).
    """
    import cv2

    px = px or _text_px(width)
    entries = [(SEMANTIC_KITTI.names[c], SEMANTIC_KITTI.colors_rgb[c], present is None or bool(present[c]))
               for c in SEMANTIC_KITTI.paper_table_order]
    entries.append(("empty / unknown (not drawn)", np.array(BACKGROUND_RGB), True))
    line = int(1.7 * px)
    cell = px + px // 2 + max(_text_width(name, px) for name, _, _ in entries[:-1]) + px
    cols = max(1, (width - px) // cell)
    rows = -(-(len(entries) - 1) // cols) + 1  # the last entry gets a row of its own
    strip = np.full((rows * line + px // 2, width, 3), 255, np.uint8)
    for k, (name, rgb, shown) in enumerate(entries):
        r, c = (divmod(k, cols) if k < len(entries) - 1 else (rows - 1, 0))
        x, y = px // 2 + c * cell, (r + 1) * line
        cv2.rectangle(strip, (x, y - px), (x + px, y), tuple(int(v) for v in rgb), -1)
        cv2.rectangle(strip, (x, y - px), (x + px, y), (0, 0, 0), 1)
        _put_text(strip, name, (x + px + px // 2, y), px, (0, 0, 0) if shown else (170, 170, 170))
    return strip


def render_comparison(
    image: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    camera: CameraModel,
    *,
    captions: bool = True,
    title: str | None = None,
) -> np.ndarray:
    """Camera image | prediction | ground truth, side by side, from the camera's viewpoint.

    With ``captions`` the panels get a header (``title``, e.g. frame id and score, and each
    panel's name) and a colour legend of the classes below them, so that the figure reads
    without the code; classes in neither grid are greyed in the legend.

    Args:
        image: (H, W, 3) uint8 RGB camera image the prediction was made from.
        pred: (X, Y, Z) train ids predicted.
        gt: (X, Y, Z) train ids of the ground truth (255 = invalid, not drawn).
        camera: the image's camera (``image_hw`` must equal the image size).
        captions: add the header and the legend.
        title: first header line, e.g. "frame 000005 | IoU 35.2 %, mIoU 7.1 %".

    Returns:
        (H, 3W, 3) uint8 RGB without captions; with them (header + H + legend, 3W, 3), the
        panels unchanged in between.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    if tuple(image.shape[:2]) != tuple(camera.image_hw):
        raise ValueError(
            f"image is {image.shape[1]}x{image.shape[0]} but the camera is calibrated for "
            f"{camera.image_hw[1]}x{camera.image_hw[0]}"
        )
    panels = np.concatenate([image, render_grid(pred, camera=camera), render_grid(gt, camera=camera)], axis=1)
    if not captions:
        return panels
    width, panel_w = panels.shape[1], image.shape[1]
    px = _text_px(width)
    present = np.zeros(SEMANTIC_KITTI.num_classes, bool)
    for grid in (pred, gt):
        ids = np.unique(np.asarray(grid))
        present[ids[ids < SEMANTIC_KITTI.num_classes]] = True
    return np.concatenate([_header(width, panel_w, title, px), panels, legend_strip(width, present, px)], axis=0)
