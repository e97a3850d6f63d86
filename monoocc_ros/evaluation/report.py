"""Evaluation reports: JSON results, the MonoOcc Table I Markdown table, comparisons, bar chart.

A report is a plain JSON-able dict (schema ``monoocc_ros/eval/1``) so that runs can be stored,
diffed and compared without the code that made them. All metric values in it are fractions in
[0, 1], as in the official ``scores.txt``; the Markdown tables show percentages like the paper.

Example:
    >>> from monoocc_ros.evaluation.report import latency_percentiles
    >>> latency_percentiles({"total": [10.0, 20.0, 30.0]})["total"]["p50"]
    20.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monoocc_ros.fileio import atomic_write, write_json_atomic, write_text_atomic
from monoocc_ros.labels import SEMANTIC_KITTI, LabelMap

__all__ = [
    "REPORT_SCHEMA",
    "build_report",
    "compare_table",
    "latency_percentiles",
    "load_report",
    "markdown_table",
    "plot_class_iou",
    "row_name",
    "run_description",
    "write_report",
]

REPORT_SCHEMA = "monoocc_ros/eval/1"
PERCENTILES = (50, 90, 99)


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def latency_percentiles(samples: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per-stage latency summary.

    Args:
        samples: stage name -> latencies in milliseconds, one per frame.

    Returns:
        stage -> {"p50", "p90", "p99", "mean", "max", "count"}; stages without samples are left out.
    """
    out: dict[str, dict[str, float]] = {}
    for stage, values in samples.items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            continue
        summary = {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}
        summary.update(mean=float(arr.mean()), max=float(arr.max()), count=int(arr.size))
        out[stage] = summary
    return out


def build_report(
    scores: Any,
    confusion: np.ndarray,
    *,
    mode: str,
    frames: Mapping[str, int],
    latency_ms: Mapping[str, Sequence[float]],
    device: str | None,
    precision: str | None,
    checkpoint: Mapping[str, Any],
    bag: str,
    problems: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    labels: LabelMap = SEMANTIC_KITTI,
) -> dict[str, Any]:
    """Assemble the JSON report of one evaluation run.

    Args:
        scores: ``SSCScores`` from :meth:`monoocc_ros.metrics.SSCMetrics.compute` (``iou`` (20,),
            ``miou``, ``completion_iou``, ``precision``, ``recall``).
        confusion: (20, 20) int64 ``C[pred, gt]`` the scores came from, kept so runs can be merged.
        mode: "offline" or "live".
        frames: frame counts, at least ``evaluated``.
        latency_ms: stage -> per-frame latencies in ms (summarised to percentiles).
        device, precision: where and how the predictor ran (None in live mode: the node's).
        checkpoint: at least ``path`` and ``sha256``.
        bag: the evaluated bag.
        problems: human-readable problems found in the bag or during the run.
        extra: mode-specific fields (live: achieved rate, drops...).
        labels: the label set the scores are over (the model's ``cfg.label_set()``).
    """
    iou = np.asarray(scores.iou, dtype=np.float64)
    names = labels.names
    if iou.shape != (len(names),):
        raise ValueError(f"scores.iou must have {len(names)} entries, got shape {iou.shape}")
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "mode": mode,
        "bag": str(bag),
        "checkpoint": dict(checkpoint),
        "device": device,
        "precision": precision,
        "frames": {k: int(v) for k, v in frames.items()},
        "metrics": {
            "completion_iou": _finite_or_none(scores.completion_iou),
            "precision": _finite_or_none(scores.precision),
            "recall": _finite_or_none(scores.recall),
            "miou": _finite_or_none(scores.miou),
            "iou": {names[c]: _finite_or_none(iou[c]) for c in range(len(names))},
        },
        "confusion": np.asarray(confusion, dtype=np.int64).tolist(),
        "latency_ms": latency_percentiles(latency_ms),
        "problems": list(problems),
    }
    if extra:
        report.update(extra)
    return report


def load_report(path: Path) -> dict[str, Any]:
    """Read a report written by :func:`write_report`.

    Raises:
        ValueError: the file is not JSON or not an evaluation report of this schema.
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: report file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        found = report.get("schema") if isinstance(report, dict) else type(report).__name__
        raise ValueError(f"{path}: not an evaluation report (schema {found!r}, expected {REPORT_SCHEMA!r})")
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.2f}"


def _table_columns(labels: LabelMap = SEMANTIC_KITTI) -> list[tuple[str, str | None]]:
    """(header, class name or None for IoU/mIoU) in the paper's Table I order."""
    return [("IoU", None), ("mIoU", None)] + [(labels.names[c], labels.names[c]) for c in labels.paper_table_order]


def _table_row(report: Mapping[str, Any], labels: LabelMap = SEMANTIC_KITTI) -> list[str]:
    m = report["metrics"]
    cells = [_pct(m["completion_iou"]), _pct(m["miou"])]
    cells += [_pct(m["iou"][labels.names[c]]) for c in labels.paper_table_order]
    return cells


def markdown_table(runs: Sequence[tuple[str, Mapping[str, Any]]], labels: LabelMap = SEMANTIC_KITTI) -> str:
    """Markdown table in the layout of the MonoOcc paper's Table I (values in %).

    Columns: Method, IoU (completion), mIoU, then the 19 classes in the paper's order
    (road, sidewalk, parking, ... traffic-sign).

    Args:
        runs: (row name, report) pairs, one row each.
        labels: the label set of the reports (its ``paper_table_order`` orders the columns).
    """
    headers = ["Method"] + [h for h, _ in _table_columns(labels)]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    for name, report in runs:
        lines.append("| " + " | ".join([name] + _table_row(report, labels)) + " |")
    return "\n".join(lines) + "\n"


def compare_table(
    a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str] = ("A", "B"), labels: LabelMap = SEMANTIC_KITTI
) -> str:
    """Side-by-side Markdown table of two runs: one row per metric, values in %, and B - A.

    Rows: IoU, mIoU, precision, recall, the 19 classes in Table I order, then frame counts and
    the p50 / p90 / p99 total latency when both runs have them.
    """
    ma, mb = a["metrics"], b["metrics"]
    rows: list[tuple[str, float | None, float | None]] = [
        ("IoU", ma["completion_iou"], mb["completion_iou"]),
        ("mIoU", ma["miou"], mb["miou"]),
        ("precision", ma["precision"], mb["precision"]),
        ("recall", ma["recall"], mb["recall"]),
    ]
    for c in labels.paper_table_order:
        n = labels.names[c]
        rows.append((n, ma["iou"].get(n), mb["iou"].get(n)))
    lines = [
        f"| metric (%) | {names[0]} | {names[1]} | {names[1]} - {names[0]} |",
        "|:---|---:|---:|---:|",
    ]
    for label, va, vb in rows:
        delta = "n/a" if va is None or vb is None else f"{100.0 * (vb - va):+.2f}"
        lines.append(f"| {label} | {_pct(va)} | {_pct(vb)} | {delta} |")
    fa, fb = a.get("frames", {}), b.get("frames", {})
    if "evaluated" in fa and "evaluated" in fb:
        diff = fb["evaluated"] - fa["evaluated"]
        lines.append(f"| frames evaluated | {fa['evaluated']} | {fb['evaluated']} | {diff:+d} |")
    la, lb = a.get("latency_ms", {}).get("total"), b.get("latency_ms", {}).get("total")
    if la and lb:
        for p in PERCENTILES:
            k = f"p{p}"
            lines.append(
                f"| total latency {k} (ms) | {la[k]:.1f} | {lb[k]:.1f} | {lb[k] - la[k]:+.1f} |"
            )
    return "\n".join(lines) + "\n"


ROW_NAMES = {"offline": "MonoOcc offline (every frame)", "live": "MonoOcc live (node output)"}
"""Row name of a run in ``table.md`` by its ``mode``: the two kinds of run must not read alike."""


def row_name(report: Mapping[str, Any]) -> str:
    """The Table I row name of a report: says offline or live."""
    mode = report.get("mode", "")
    return ROW_NAMES.get(mode, f"MonoOcc {mode}".strip())


def run_description(report: Mapping[str, Any]) -> str:
    """How many frames a run scored, e.g. ``3 of 20 ground-truth frames scored, 17 missed
    (scored as empty)``."""
    frames = report.get("frames", {})
    evaluated, total = frames.get("evaluated"), frames.get("ground_truth")
    text = f"{evaluated} of {total} ground-truth frames scored" if total is not None else f"{evaluated} frames scored"
    if frames.get("missed"):
        text += f", {frames['missed']} missed (scored as empty)"
    if frames.get("failed"):
        text += f", {frames['failed']} failed (scored as empty)"
    return text


def plot_class_iou(
    report: Mapping[str, Any], path: Path, *, title: str | None = None, labels: LabelMap = SEMANTIC_KITTI
) -> Path:
    """Bar chart of per-class IoU (classes in Table I order, bars in class colours) as PNG.

    The title says which run (live or offline, how many frames, checkpoint, bag); a legend
    explains the dashed mIoU line and that bar colours are the renders' class colours.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    order = labels.paper_table_order
    names = [labels.names[c] for c in order]
    values = [100.0 * (report["metrics"]["iou"][n] or 0.0) for n in names]
    colours = labels.colors_rgb[list(order)] / 255.0
    fig = Figure(figsize=(11, 5.5), dpi=100)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), values, color=colours, edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, fmt="%.1f", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=11)
    ax.set_ylabel("IoU (%)", fontsize=11)
    ax.set_ylim(0, 100)
    miou = report["metrics"]["miou"]
    ax.axhline(100.0 * (miou or 0.0), color="black", linestyle="--", linewidth=1)
    ax.legend(
        handles=[Line2D([], [], color="black", linestyle="--", label=f"mIoU {_pct(miou)} % (mean of the {labels.num_classes - 1} classes)"),
                 Patch(facecolor="white", edgecolor="black", label="bar colour = the class colour of the renders")],
        loc="upper right", fontsize=10,
    )
    checkpoint = (report.get("checkpoint") or {}).get("path")
    source = ", ".join(x for x in (f"checkpoint {Path(checkpoint).name}" if checkpoint else "",
                                   f"bag {Path(report['bag']).name}" if report.get("bag") else "") if x)
    title = title or (
        f"{row_name(report)}: per-class IoU, completion IoU {_pct(report['metrics']['completion_iou'])} %\n"
        f"{run_description(report)}" + (f"; {source}" if source else "")
    )
    ax.set_title(title, fontsize=12)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as f:
        # the title also goes into the PNG's text chunk, for tools (and tests) that read it
        fig.savefig(f, format="png", metadata={"Title": title.replace("\n", " | ")})
    return path


def calibration_line(report: Mapping[str, Any]) -> str:
    """One Markdown line on confidence calibration (ECE before / after temperature scaling), or ""."""
    c = report.get("calibration")
    if not c:
        return ""
    return (
        f"\nConfidence calibration: temperature {c['temperature']:.3f}, expected calibration error "
        f"{_pct(c['ece_before'])} % before, {_pct(c['ece_after'])} % after temperature scaling "
        f"({c['voxels']} voxels with ground truth).\n"
    )


def write_report(out_dir: Path, report: Mapping[str, Any], *, name: str | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``table.md`` and ``class_iou.png`` into ``out_dir``.

    Args:
        name: the table's row name; default :func:`row_name` (says live or offline).

    Returns:
        artifact name -> path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json_atomic(out_dir / "metrics.json", report)}
    table = out_dir / "table.md"
    write_text_atomic(table, markdown_table([(name or row_name(report), report)]) + calibration_line(report))
    paths["table"] = table
    paths["bar_chart"] = plot_class_iou(report, out_dir / "class_iou.png")
    return paths
