"""Offline, deterministic evaluation: every ground-truth frame of a bag through the predictor.

The bag is read directly (no ROS, no transport), so the accuracy does not depend on machine
load: the same bag and checkpoint always give the same numbers. Metrics follow the official
semantic-kitti-api through :class:`monoocc_ros.metrics.SSCMetrics`.

Artifacts in ``out_dir``: ``metrics.json`` (see :mod:`~monoocc_ros.evaluation.report`),
``table.md`` (MonoOcc Table I layout), ``class_iou.png``, ``frames.jsonl`` (one line per
ground-truth frame: KITTI index, stamp, stage timings, its 20x20 confusion matrix) and ``renders/NNNNNN.png`` (camera | prediction | ground truth) for sampled
frames; with ``export_dir`` also the benchmark submission files.

Example:
    >>> from monoocc_ros.evaluation.offline import OfflineConfig, run_offline
    >>> report = run_offline(Path("seq08"), Path("student.pt"), Path("eval_out"),
    ...                      OfflineConfig(render_every=10))      # doctest: +SKIP
    >>> round(report["metrics"]["miou"], 3)                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monoocc_ros import topics
from monoocc_ros.fileio import atomic_write, sha256_file, write_png_atomic
from monoocc_ros.calibration import CalibrationMeter
from monoocc_ros.camera import CameraModel
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.evaluation.live import labels_digest
from monoocc_ros.labels import EMPTY

__all__ = ["OfflineConfig", "bag_sequence", "checkpoint_info", "evaluate_offline", "run_offline", "write_render"]


@dataclass(frozen=True)
class OfflineConfig:
    """Options of an offline evaluation.

    Attributes:
        device: torch device of the predictor ("cpu", "cuda", "cuda:1").
        backend: inference backend (:data:`monoocc_ros.inference.BACKENDS`): "eager", or an
            ahead-of-time graph ("onnxruntime", "tensorrt") built for the bag's image size and
            cached next to the checkpoint (the node's artefacts, reused).
        precision: predictor precision ("fp32", "fp16", "bf16").
        render_every: render every N-th ground-truth frame (0: none).
        export_dir: also write benchmark submission files under this folder.
        sequence: two-digit sequence for the submission layout; None takes it from the bag's
            converter metadata.
        progress: show a tqdm progress bar.
        calibration: publish confidence and report its expected calibration error before and
            after the checkpoint's temperature (``calibration`` in the report; a second
            prediction per frame when the temperature is not 1).
        queries: VoxFormer query files (``DIR/sequences/SS/queries/NNNNNN.query_<tag>``), the
            official protocol's proposals for a checkpoint in proposal mode "external"; a frame
            without its file is listed in ``problems`` and scored as empty.
    """

    device: str = "cpu"
    precision: str = "fp32"
    render_every: int = 0
    export_dir: Path | None = None
    sequence: str | None = None
    progress: bool = True
    calibration: bool = False
    queries: Path | None = None
    backend: str = "eager"

    def __post_init__(self):
        from monoocc_ros.inference import BACKENDS

        if self.render_every < 0:
            raise ValueError(f"render_every must be >= 0, got {self.render_every}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        # the exported graphs compute their own monocular proposals and bake the temperature in
        if self.backend != "eager" and self.queries is not None:
            raise ValueError(f"--queries (external proposals) runs on the eager backend only, not {self.backend}")
        if self.backend != "eager" and self.calibration:
            raise ValueError(f"--calibration runs on the eager backend only, not {self.backend}")


def checkpoint_info(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a report records about the checkpoint: path, sha256, config and meta."""
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "config_name": ckpt.get("config_name"),
        "meta": ckpt.get("meta", {}),
        "calibration": ckpt.get("calibration"),
    }


def write_render(path: Path, image: np.ndarray, pred: np.ndarray, gt: np.ndarray, K, T_cam_grid,
                 *, title: str | None = None) -> Path:
    """Write camera | prediction | ground truth, rendered from the frame's camera, as PNG.

    ``title`` (frame id and score) heads the figure; a class colour legend ends it.
    """

    from monoocc_ros.render import render_comparison

    camera = CameraModel(K=K, T_cam_grid=T_cam_grid, image_hw=tuple(image.shape[:2]))
    panel = render_comparison(image, pred, gt, camera, title=title)
    return write_png_atomic(path, panel)


def bag_sequence(bag: Path) -> str | None:
    """KITTI sequence recorded by ``monoocc convert-kitti`` in the bag's metadata, or None."""
    import yaml

    from monoocc_ros.data.bag_io import KITTI_FRAMES_KEY

    try:
        meta = yaml.safe_load((Path(bag) / "metadata.yaml").read_text(encoding="utf-8"))
        custom = meta["rosbag2_bagfile_information"].get("custom_data") or {}
        return str(json.loads(custom[KITTI_FRAMES_KEY])["sequence"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _require_frames(bag: Path, index) -> None:
    if len(index) == 0:
        raise ValueError(
            f"{bag}: no frame with both an image and ground truth to evaluate"
            + "".join(f"\n  - {p}" for p in index.problems)
        )


def evaluate_offline(
    bag: Path,
    predictor,
    out_dir: Path,
    cfg: OfflineConfig,
    *,
    checkpoint: dict[str, Any],
    index=None,
) -> dict[str, Any]:
    """Run ``predictor`` on every ground-truth frame of ``bag`` and write the report artifacts.

    A frame the predictor refuses (bad image or calibration) is listed in ``problems`` and
    scored as an all-empty prediction, so it lowers the numbers instead of vanishing.

    Args:
        bag: rosbag2 folder with image, camera_info, TF and ground-truth topics.
        predictor: an inference backend (:func:`monoocc_ros.inference.build_backend`:
            ``predict(image, K, T_cam_grid)``, ``backend_name``); the eager one also takes proposals.
        out_dir: folder for the artifacts.
        cfg: options.
        checkpoint: checkpoint description for the report (:func:`checkpoint_info`).
        index: ``read_bag_frames(bag, require_ground_truth=True)`` when the caller already read it.

    Returns:
        The report dict that was written to ``out_dir/metrics.json``.

    Raises:
        ValueError: the bag has no frame with both an image and ground truth (the message
            lists the problems found in it).
    """
    from tqdm import tqdm

    from monoocc_ros.data.bag_io import read_bag_frames
    from monoocc_ros.evaluation.report import build_report, write_report
    from monoocc_ros.evaluation.submission import write_prediction
    from monoocc_ros.metrics import SSCMetrics

    bag, out_dir = Path(bag), Path(out_dir)
    if index is None:
        index = read_bag_frames(bag, require_ground_truth=True)
    problems = list(index.problems)
    _require_frames(bag, index)
    sequence = cfg.sequence
    if (cfg.export_dir is not None or cfg.queries is not None) and sequence is None:
        sequence = bag_sequence(bag)
        if sequence is None:
            why = "the submission" if cfg.export_dir is not None else "its query files"
            raise ValueError(f"{bag}: no KITTI sequence in the bag's metadata; give it for {why} (--sequence)")
    # a checkpoint in proposal mode "external" takes --queries, else the proposals recorded in the bag
    model = getattr(predictor, "model", None)
    external = getattr(getattr(getattr(model, "cfg", None), "proposal", None), "mode", None) == "external"
    if external and cfg.queries is None and all(index.records[i].proposals is None for i in index.selected):
        raise ValueError(
            f'{bag}: the checkpoint is in proposal mode "external" (official protocol) and the bag records no '
            f"{topics.QUERY_PROPOSALS}: give the query files with --queries DIR"
        )
    queries = None
    if cfg.queries is not None:
        from monoocc_ros.models.proposals import QueryFiles

        try:
            queries = QueryFiles(cfg.queries, sequence)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from e
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = SSCMetrics(num_classes=20)
    meter = CalibrationMeter(predictor) if cfg.calibration else None
    latency: dict[str, list[float]] = defaultdict(list)
    failed = 0
    empty = np.full(KITTI_GRID.size, EMPTY, dtype=np.uint8)
    with atomic_write(out_dir / "frames.jsonl", "w") as log:
        for k, frame in enumerate(tqdm(index, total=len(index), desc="eval", unit="frame", disable=not cfg.progress)):
            record: dict[str, Any] = {"index": frame.index, "stamp_ns": frame.stamp_ns}
            t0 = time.perf_counter()
            try:
                proposals = queries.load(frame.index) if queries is not None else frame.proposals if external else None
                if proposals is None:
                    prediction = predictor.predict(frame.image, frame.K, frame.T_cam_grid)
                else:
                    record["proposals"] = int(proposals.sum())
                    prediction = predictor.predict(frame.image, frame.K, frame.T_cam_grid, proposals=proposals)
            except (ValueError, FileNotFoundError) as e:
                failed += 1
                problems.append(f"{bag}: frame {frame.index} at {frame.stamp_ns} ns not predicted ({e}); scored as empty")
                record["error"] = str(e)
                labels = empty
            else:
                wall_ms = (time.perf_counter() - t0) * 1e3
                labels = prediction.labels
                for stage, ms in prediction.timings_ms.items():
                    latency[stage].append(float(ms))
                if "total" not in prediction.timings_ms:
                    latency["total"].append(wall_ms)
                record["timings_ms"] = {k2: round(float(v), 3) for k2, v in prediction.timings_ms.items()}
                if meter is not None:
                    meter.update(frame.image, frame.K, frame.T_cam_grid, prediction, frame.ground_truth)
                if cfg.export_dir is not None:
                    write_prediction(cfg.export_dir, sequence, frame.index, labels)
            # Per-frame counts let users score any subset of frames later.
            frame_metrics = SSCMetrics(num_classes=20)
            frame_metrics.update(labels, frame.ground_truth)
            metrics.merge(frame_metrics)
            record["confusion"] = frame_metrics.confusion.tolist()
            record["labels_digest"] = labels_digest(labels)  # as the live report's output_digests
            if cfg.render_every and k % cfg.render_every == 0:
                render = out_dir / "renders" / f"{frame.index:06d}.png"
                fs = frame_metrics.compute()
                title = (f"offline | frame {frame.index:06d} | this frame: IoU {100 * fs.completion_iou:.1f} %, "
                         f"mIoU {100 * fs.miou:.1f} %")
                write_render(render, frame.image, labels, frame.ground_truth, frame.K, frame.T_cam_grid, title=title)
                record["render"] = str(render.relative_to(out_dir))
            log.write(json.dumps(record) + "\n")
    scores = metrics.compute()
    report = build_report(
        scores,
        metrics.confusion,
        mode="offline",
        frames={"ground_truth": len(index), "evaluated": len(index) - failed, "failed": failed},
        latency_ms=latency,
        device=_device_name(cfg.device),
        precision=cfg.precision,
        checkpoint=checkpoint,
        bag=str(bag),
        problems=problems,
        extra={
            "backend": getattr(predictor, "backend_name", "eager"),
            **({"calibration": meter.to_dict()} if meter is not None else {}),
            **({"proposals": {"source": "query files", "folder": str(queries.folder), "files": len(queries)}}
               if queries is not None else {}),
        },
    )
    write_report(out_dir, report)
    return report


def run_offline(bag: Path, checkpoint_path: Path, out_dir: Path, cfg: OfflineConfig = OfflineConfig()) -> dict[str, Any]:
    """Load a checkpoint into ``cfg.backend`` (:func:`monoocc_ros.inference.build_backend`) and evaluate ``bag``.

    The ahead-of-time backends are built for the image size of the bag's first ground-truth
    frame (a frame of another size is listed in ``problems`` and scored as empty).

    Raises:
        ValueError: an unusable bag, or a backend this checkpoint or machine cannot run (one line).
    """
    from monoocc_ros.data.bag_io import read_bag_frames
    from monoocc_ros.inference import BackendError, build_backend
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

    checkpoint_path = Path(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    model, _ = build_model_from_checkpoint(ckpt)
    index, image_hw = None, None
    if cfg.backend != "eager":
        if model.cfg.proposal.mode == "external":
            raise ValueError(f'{checkpoint_path}: proposal mode "external" runs on the eager backend only, '
                             f"not {cfg.backend}")
        index = read_bag_frames(bag, require_ground_truth=True)
        _require_frames(bag, index)
        image_hw = tuple(index.records[index.selected[0]].image_hw)
    try:
        predictor = build_backend(cfg.backend, model, checkpoint_path=checkpoint_path,
                                  config_name=ckpt.get("config_name") or "", device=cfg.device,
                                  precision=cfg.precision, confidence=cfg.calibration, image_hw=image_hw)
    except BackendError as e:
        raise ValueError(str(e)) from e
    try:
        return evaluate_offline(bag, predictor, out_dir, cfg, checkpoint=checkpoint_info(checkpoint_path, ckpt),
                                index=index)
    finally:
        predictor.release()
