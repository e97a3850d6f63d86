"""``monoocc eval --map``: the fused semantic map against single frames, on the same voxels.

Every camera frame of the bag goes through the predictor (labels and confidence) and into a
:class:`~monoocc_ros.mapping.SemanticMap` at its ``/tf`` pose (odom -> base_link). On each
frame with ground truth, the region scored is the frame's observed region: voxels of its grid
inside the camera's field of view whose ground truth is valid (not 255). Over that region two
confusion matrices accumulate, scored with the official SSC rules
(:class:`~monoocc_ros.metrics.SSCMetrics`):

* single frame: the frame's own prediction;
* fused: the map right after fusing that frame, sampled at the grid's voxels (nearest map
  voxel), so it only knows the past and the present, as a running node would.

Generated sequences carry ground truth for every frame (``--voxel-every 1``): the per-frame
files are the street's world voxels seen from each pose, so the region covers the whole drive.

Artifacts in ``out_dir``: ``map_metrics.json`` (both score sets, frames, problems),
``map_table.md`` and ``map_topview.png``: prediction | fused | ground truth seen from above over
the drive in the odom frame, with a class legend and a caption.

Example:
    >>> report = run_map_eval(Path("bags/08"), Path("student.pt"), Path("eval/map"))  # doctest: +SKIP
    >>> report["fused"]["iou_mean"] > report["single_frame"]["iou_mean"]               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monoocc_ros.camera import CameraModel
from monoocc_ros.fileio import write_json_atomic, write_png_atomic, write_text_atomic
from monoocc_ros.grid import KITTI_GRID, VoxelGrid
from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI
from monoocc_ros.mapping import MapConfig, SemanticMap, frustum_mask

__all__ = ["MapEvalConfig", "TopView", "evaluate_map", "map_table", "run_map_eval"]

TOPVIEW_NAMES = ("single-frame prediction", "fused map", "ground truth")
EMPTY_RGB = (190, 190, 190)
"""Top-view colour of columns seen empty (unseen ones take the renders' background)."""


@dataclass(frozen=True)
class MapEvalConfig:
    """Options of the map evaluation.

    Attributes:
        device, precision: of the predictor.
        map: the map's options.
        progress: tqdm bar over frames.
        topview_every: paste the fused map into the top view every N frames (and at the end).
    """

    device: str = "cpu"
    precision: str = "fp32"
    map: MapConfig = field(default_factory=MapConfig)
    progress: bool = True
    topview_every: int = 10


class TopView:
    """Top views of labels in the odom frame: the highest occupied class of each column.

    A canvas grows with the drive (bounds from the poses); later pastes overwrite earlier ones.
    """

    MARGIN_M = 55.0
    SCALE = 2  # pixels per cell in the image

    def __init__(self, poses: list[np.ndarray], resolution_m: float = KITTI_GRID.voxel_size_m, layers: int = 3):
        xy = np.array([T[:2, 3] for T in poses]).reshape(-1, 2)
        self.lo = xy.min(0) - self.MARGIN_M
        hi = xy.max(0) + self.MARGIN_M
        self.res = resolution_m
        self.shape = tuple(np.ceil((hi - self.lo) / resolution_m).astype(int))
        self.canvas = [np.full(self.shape, IGNORE, dtype=np.uint8) for _ in range(layers)]

    def paste(self, layer: int, labels: np.ndarray, grid: VoxelGrid, T_odom_grid: np.ndarray,
              columns: np.ndarray | None = None) -> None:
        """Paste a grid's top classes; ``columns`` (X, Y) bool limits it (e.g. observed ones)."""
        top = _top_class(labels)
        keep = top != IGNORE if columns is None else (top != IGNORE) & columns
        i, j = np.nonzero(keep)
        xy = np.c_[grid.origin_m[0] + (i + 0.5) * grid.voxel_size_m, grid.origin_m[1] + (j + 0.5) * grid.voxel_size_m]
        world = xy @ T_odom_grid[:2, :2].T + T_odom_grid[:2, 3]
        # a rotated grid pasted at 1 px per voxel leaves pinholes; paste 2x2 to close them
        for dx in (0.0, 0.5):
            for dy in (0.0, 0.5):
                u = np.floor((world[:, 0] + dx * self.res - self.lo[0]) / self.res).astype(int)
                v = np.floor((world[:, 1] + dy * self.res - self.lo[1]) / self.res).astype(int)
                ok = (u >= 0) & (u < self.shape[0]) & (v >= 0) & (v < self.shape[1])
                self.canvas[layer][u[ok], v[ok]] = top[i[ok], j[ok]]

    def image(self, caption: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB: header, the panels side by side (x up, y left), legend, caption."""
        from monoocc_ros.render import BACKGROUND_RGB, _put_text, _text_px, legend_strip

        panels = []
        present = np.zeros(SEMANTIC_KITTI.num_classes, dtype=bool)
        known = np.any([c != IGNORE for c in self.canvas], axis=0)
        if not known.any():
            known[0, 0] = True
        (u0, v0), (u1, v1) = np.argwhere(known).min(0), np.argwhere(known).max(0) + 1
        for c in self.canvas:
            c = c[u0:u1, v0:v1]  # the part anything was pasted into
            # odom x forward drawn upwards and y (left) to the left: rows = -x, columns = -y
            rgb = SEMANTIC_KITTI.colorize(c)[::-1, ::-1]
            rgb[(c == EMPTY)[::-1, ::-1]] = EMPTY_RGB
            rgb[(c == IGNORE)[::-1, ::-1]] = BACKGROUND_RGB
            present |= np.bincount(c[c < SEMANTIC_KITTI.num_classes], minlength=SEMANTIC_KITTI.num_classes) > 0
            rgb = rgb.repeat(self.SCALE, 0).repeat(self.SCALE, 1)
            panels.append(np.pad(rgb, ((0, 0), (4, 4), (0, 0)), constant_values=255))
        body = np.concatenate(panels, axis=1)
        width = body.shape[1]
        px = _text_px(width)
        header = np.full((int(2.0 * px), width, 3), 40, np.uint8)
        for k, name in enumerate(TOPVIEW_NAMES):
            _put_text(header, name, (k * panels[0].shape[1] + px // 2, int(1.5 * px)), px, (255, 255, 255))
        lines = _wrap(caption, width - px, px)
        foot = np.full((int(1.8 * px) * len(lines) + px // 2, width, 3), 255, np.uint8)
        for k, line in enumerate(lines):
            _put_text(foot, line, (px // 2, int(1.8 * px) * (k + 1)), px)
        return np.concatenate([header, body, legend_strip(width, present, px), foot], axis=0)


def _wrap(text: str, width_px: int, px: int) -> list[str]:
    """Lines of ``text`` (paragraphs split at newlines) that fit ``width_px`` at text height ``px``."""
    from monoocc_ros.render import _text_width

    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and _text_width(candidate, px) > width_px:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _top_class(labels: np.ndarray) -> np.ndarray:
    """(X, Y, Z) train ids -> (X, Y) class of the highest occupied voxel; EMPTY where the column
    holds only free space, IGNORE where it holds nothing known."""
    occupied = (labels != EMPTY) & (labels != IGNORE)
    Z = labels.shape[2]
    top = Z - 1 - np.argmax(occupied[:, :, ::-1], axis=2)
    out = np.take_along_axis(labels, top[..., None], axis=2)[..., 0].copy()
    out[~occupied.any(axis=2)] = EMPTY
    out[np.all(labels == IGNORE, axis=2)] = IGNORE
    return out


def evaluate_map(bag: Path, predictor, out_dir: Path, cfg: MapEvalConfig = MapEvalConfig(),
                 *, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fuse every frame of ``bag`` and score single frames and the map; write the artifacts.

    Args:
        bag: rosbag2 folder with images, camera_info, /tf (odom -> base_link) and ground truth.
        predictor: a :class:`~monoocc_ros.predictor.Predictor` built with ``confidence=True``.
        out_dir: folder for ``map_metrics.json``, ``map_table.md``, ``map_topview.png``.
        cfg: options.
        checkpoint: checkpoint description for the report.

    Returns:
        The report written to ``map_metrics.json``.

    Raises:
        ValueError: no frame has both ground truth and a /tf pose.
    """
    from tqdm import tqdm

    from monoocc_ros.data.bag_io import read_bag_frames
    from monoocc_ros.metrics import SSCMetrics

    bag, out_dir = Path(bag), Path(out_dir)
    index = read_bag_frames(bag)
    problems = list(index.problems)
    usable = [i for i, r in enumerate(index.records) if r.T_odom_grid is not None]
    if len(usable) < len(index.records):
        problems.append(f"{bag}: {len(index.records) - len(usable)} frame(s) without a /tf odom -> base_link pose, not fused")
    scored = [i for i in usable if index.records[i].ground_truth is not None]
    if not scored:
        raise ValueError(f"{bag}: no frame with both ground truth and a /tf odom -> base_link pose"
                         + "".join(f"\n  - {p}" for p in problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    fusion = SemanticMap(cfg.map)
    single, fused = SSCMetrics(num_classes=20), SSCMetrics(num_classes=20)
    top = TopView([index.records[i].T_odom_grid for i in usable])
    failed = 0
    for n, i in enumerate(tqdm(usable, desc="eval --map", unit="frame", disable=not cfg.progress)):
        rec = index.records[i]
        camera = CameraModel(K=rec.K, T_cam_grid=rec.T_cam_grid, image_hw=rec.image_hw)
        try:
            pred = predictor.predict(index.load_image(i), rec.K, rec.T_cam_grid)
        except ValueError as e:
            failed += 1
            problems.append(f"{bag}: frame at {rec.stamp_ns} ns not predicted ({e}); not fused, scored as empty")
            pred = None
        stamp_s = rec.stamp_ns * 1e-9
        if pred is not None:
            fusion.integrate(pred.labels, pred.confidence, rec.T_odom_grid, stamp_s, camera)
        seen = frustum_mask(camera).reshape(KITTI_GRID.size)
        if rec.ground_truth is not None:
            gt = index.load_ground_truth(i)
            region = np.where(seen, gt, IGNORE)
            labels = pred.labels if pred is not None else np.zeros(KITTI_GRID.size, np.uint8)
            single.update(labels, region)
            fused.update(fusion.labels_in_grid(rec.T_odom_grid), region)
            top.paste(2, region, KITTI_GRID, rec.T_odom_grid, columns=seen.any(axis=2))
        if pred is not None:
            top.paste(0, np.where(seen, pred.labels, IGNORE), KITTI_GRID, rec.T_odom_grid, columns=seen.any(axis=2))
        if (n + 1) % cfg.topview_every == 0 or n == len(usable) - 1:
            snap = fusion.snapshot()
            top.paste(1, snap.labels, snap.grid, np.eye(4))
    s1, s2 = single.compute().to_dict(), fused.compute().to_dict()
    report = {
        "mode": "map",
        "bag": str(bag),
        "checkpoint": checkpoint or {},
        "region": "per ground-truth frame: voxels in the camera's field of view with valid ground truth",
        "frames": {"fused": len(usable) - failed, "scored": len(scored), "failed": failed},
        "map": {"size": list(cfg.map.size), "voxel_m": cfg.map.voxel_size_m, "state_mb": round(fusion.nbytes / 2**20, 1)},
        "voxels_scored": {"single_frame": int(single.confusion.sum()), "fused": int(fused.confusion.sum())},
        "single_frame": s1,
        "fused": s2,
        "problems": problems,
    }
    caption = (f"{bag.name}: {len(scored)} frames, top views in the odom frame (x up). "
               f"Scored in each frame's field of view: single frame IoU {100 * s1['iou_completion']:.1f} / "
               f"mIoU {100 * s1['iou_mean']:.1f} %,  fused IoU {100 * s2['iou_completion']:.1f} / mIoU {100 * s2['iou_mean']:.1f} %.\n"
               "Prediction: each frame's view pasted over the last (no memory); fused: the map; "
               "ground truth: the per-frame voxel files in view. Light grey: seen empty; white: not seen.")
    png = out_dir / "map_topview.png"
    write_png_atomic(png, top.image(caption))
    report["topview"] = png.name
    write_json_atomic(out_dir / "map_metrics.json", report)
    write_text_atomic(out_dir / "map_table.md", map_table(report))
    return report


def map_table(report: dict[str, Any]) -> str:
    """Markdown table: single frame vs fused map (percent)."""
    rows = ["| scored on the observed region | IoU | mIoU | precision | recall |", "|---|---|---|---|---|"]
    for name, key in (("single frame", "single_frame"), ("fused map", "fused")):
        s = report[key]
        rows.append(f"| {name} | {100 * s['iou_completion']:.2f} | {100 * s['iou_mean']:.2f} | "
                    f"{100 * s['precision']:.2f} | {100 * s['recall']:.2f} |")
    return "\n".join(rows) + "\n"


def run_map_eval(bag: Path, checkpoint_path: Path, out_dir: Path, cfg: MapEvalConfig = MapEvalConfig()) -> dict[str, Any]:
    """Load a checkpoint into a Predictor (with confidence) and run :func:`evaluate_map`."""
    from monoocc_ros.evaluation.offline import checkpoint_info
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from monoocc_ros.predictor import Predictor

    ckpt = load_checkpoint(Path(checkpoint_path))
    model, _ = build_model_from_checkpoint(ckpt)
    predictor = Predictor(model, device=cfg.device, precision=cfg.precision, confidence=True)
    try:
        return evaluate_map(bag, predictor, out_dir, cfg, checkpoint=checkpoint_info(Path(checkpoint_path), ckpt))
    finally:
        predictor.release()
