"""``monoocc experiment ablation``: MonoOcc's ablation (paper Table I direction) in miniature.

On generated streets (training sequences from some scene seeds, held-out sequences from
others) it trains and evaluates, for each training seed:

1. ``student``: the VoxFormer-like baseline (``<model>_base``: no ICA, no 2D loss, no distillation);
2. ``+ICA`` (``<model>_ica``); 3. ``+2D loss`` (``<model>``, the full student without distillation);
4. ``+distill <mode>`` for every distillation mode (``<model>`` distilled from this seed's teacher,
   whose features are dumped once and read from the cache);
5. ``teacher``: the privileged multi-frame teacher itself.

Every run is scored on all ground-truth frames of the held-out bags after its last epoch (SSC
completion IoU, mIoU, per-class IoU). The results folder holds ``scenes/``, ``bags/``,
``runs/<variant>/seed<k>/`` (checkpoints, ``result.json``), ``results.json``, ``table.md``
(mean ± standard deviation over seeds, Table I layout) and ``ablation.png``. The command is
resumable: finished runs (``result.json``) are skipped, an interrupted one resumes from its
``last.pt``. Nothing here picks a result: every variant is trained with the same steps, learning
rate and seeds, and the table reports what came out, including a component that does not help.

Example:
    monoocc experiment ablation --quick --out runs/ablation_quick
    monoocc experiment ablation training/configs/ablation_tiny.yaml --set seeds=[0,1,2,3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["AblationConfig", "QUICK", "load_ablation_config", "run_ablation", "summarize"]

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "ablation_tiny.yaml"


@dataclass(frozen=True)
class AblationConfig:
    """One ablation experiment.

    Attributes:
        out_dir: the results folder.
        model: student model family (``tiny`` or ``monoocc_s``; ``_base`` / ``_ica`` variants are derived).
        image_size: (H, W) the streets are rendered at (the calibration follows; image_scale stays 1).
        grid_downscale: every model predicts SemanticKITTI's 51.2 x 51.2 x 6.4 m grid with voxels this
            many times 0.2 m (2: 128x128x16 of 0.4 m, a quarter of the work per step), and is scored
            against the ground truth downsampled to that grid.
        frames_per_sequence: frames per generated sequence (ground truth every 5th).
        train_scenes: scene seeds of the training sequences.
        held_out_scenes: scene seeds of the held-out sequences (other streets).
        seeds: training seeds; every variant is trained once per seed.
        student_epochs / teacher_epochs: epochs over the training frames.
        lr: peak learning rate (AdamW), warmup_iters: linear warm-up steps.
        temporal_offsets: the teacher's extra (past) frames.
        teacher_cvt_layers: Cross View Transformer blocks of the teacher.
        teacher_backbone_depth: ResNet depth (50 or 101) of the teacher's larger image trunk.
        distill_modes: distillation modes trained as separate variants.
        distill_weight: distillation loss weight.
        max_held_out_frames: score only the first N held-out ground-truth frames (0 = all).
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    out_dir: str = "runs/ablation"
    model: str = "tiny"
    image_size: tuple[int, ...] = (96, 320)
    grid_downscale: int = 2
    frames_per_sequence: int = 50
    train_scenes: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    held_out_scenes: tuple[int, ...] = (101, 102, 103)
    seeds: tuple[int, ...] = (0, 1, 2)
    student_epochs: int = 3
    teacher_epochs: int = 6
    lr: float = 5e-3
    warmup_iters: int = 2
    temporal_offsets: tuple[int, ...] = (-10, -5)
    teacher_cvt_layers: int = 2
    teacher_backbone_depth: int = 50
    distill_modes: tuple[str, ...] = ("mse", "cosine", "softmax_kl", "released_kl")
    distill_weight: float = 3.5
    max_held_out_frames: int = 0
    device: str = "auto"

    def __post_init__(self):
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size}")
        if len(self.seeds) < 1 or not self.train_scenes or not self.held_out_scenes:
            raise ValueError("seeds, train_scenes and held_out_scenes must not be empty")
        if set(self.train_scenes) & set(self.held_out_scenes):
            raise ValueError(
                f"held_out_scenes {self.held_out_scenes} overlap train_scenes {self.train_scenes}: held out means unseen"
            )
        if self.grid_downscale not in (1, 2, 4, 8):
            raise ValueError(f"grid_downscale must be 1, 2, 4 or 8 (SemanticKITTI's 256x256x32 divided), got {self.grid_downscale}")
        if self.frames_per_sequence < 6:
            raise ValueError("frames_per_sequence must be >= 6 (two ground-truth frames)")


QUICK = {
    "train_scenes": (1, 2),
    "held_out_scenes": (101,),
    "student_epochs": 2,
    "teacher_epochs": 4,
}
"""``--quick``: two training streets, one held out, students 2 epochs (40 steps), the teacher 4: the same
table in about 11 min on 2 CPU cores (README), enough steps for the teacher to separate from the student."""


def load_ablation_config(path: Path | None, overrides: list[str], quick: bool = False) -> AblationConfig:
    """YAML file (default ``training/configs/ablation_tiny.yaml``), then ``--quick``, then ``--set`` overrides.

    Raises:
        training.config.ConfigError: missing file, unknown key or wrongly typed value.
    """
    from monoocc_ros.config_io import ConfigError, apply_overrides, from_mapping, read_yaml_mapping

    path = Path(path) if path is not None else DEFAULT_CONFIG
    values = read_yaml_mapping(path)  # names a missing file
    if quick:
        values.update({k: list(v) if isinstance(v, tuple) else v for k, v in QUICK.items()})
    try:
        # the project's one typed loader: overrides are parsed by their field's type
        return apply_overrides(from_mapping(AblationConfig, values), overrides)
    except ValueError as exc:  # ConfigError is a ValueError; __post_init__ raises plain ones
        raise ConfigError(f"{path}: {exc}") from None


# -- data -------------------------------------------------------------------------------------


def _prepare_bags(cfg: AblationConfig, out: Path) -> tuple[list[str], list[str]]:
    """Generate and convert every scene once (a ``.done`` marker makes this resumable)."""
    from monoocc_ros.data.converter import convert_sequence
    from monoocc_ros.data.scene import SceneConfig, generate_sequence

    bags = {}
    for seed in (*cfg.train_scenes, *cfg.held_out_scenes):
        name = f"s{seed}"
        bag, done = out / "bags" / name, out / "bags" / f"{name}.done"
        if not done.exists():
            scene_cfg = SceneConfig(num_frames=cfg.frames_per_sequence, seed=seed, image_size=tuple(cfg.image_size))
            generate_sequence(out / "scenes", scene_cfg, sequence=name, overwrite=True)
            if bag.exists():
                import shutil

                shutil.rmtree(bag)
            convert_sequence(out / "scenes", name, bag, progress=False)
            done.touch()
        bags[seed] = str(bag)
    return [bags[s] for s in cfg.train_scenes], [bags[s] for s in cfg.held_out_scenes]


# -- runs ---------------------------------------------------------------------------------------


def variants(cfg: AblationConfig) -> list[tuple[str, dict[str, Any]]]:
    """(row name, what differs) in table order."""
    rows = [
        ("student", {"role": "student", "model": f"{cfg.model}_base", "distill": "off"}),
        ("+ICA", {"role": "student", "model": f"{cfg.model}_ica", "distill": "off"}),
        ("+ICA +2D loss", {"role": "student", "model": cfg.model, "distill": "off"}),
    ]
    rows += [
        (f"+ICA +2D +distill {m}", {"role": "student", "model": cfg.model, "distill": m}) for m in cfg.distill_modes
    ]
    rows.append(("teacher", {"role": "teacher", "model": cfg.model, "distill": "off"}))
    return rows


def _slug(name: str) -> str:
    return name.replace("+", "p").replace(" ", "_")


def _train_config(cfg: AblationConfig, spec: dict[str, Any], seed: int, train_bags, held_out_bags, out: Path,
                  teacher: Path | None = None, cache: Path | None = None):
    from training.config import TrainConfig, train_config_from_dict

    teacher_role = spec["role"] == "teacher"
    values = dataclasses.asdict(TrainConfig())
    values.update(
        role=spec["role"], model=spec["model"], seed=seed, out_dir=str(out), device=cfg.device, num_workers=0,
        epochs=cfg.teacher_epochs if teacher_role else cfg.student_epochs, log_images=False, calibrate=False,
    )
    values["val_every"] = values["epochs"]
    if cfg.grid_downscale != 1:
        from monoocc_ros.grid import KITTI_GRID

        grid = KITTI_GRID.downscaled(cfg.grid_downscale)
        values["model_overrides"] = [f"grid.size={list(grid.size)}", f"grid.voxel_size_m={grid.voxel_size_m}"]
    values["data"].update(
        train_bags=list(train_bags), val_bags=list(held_out_bags), image_scale=1.0,
        max_val_frames=cfg.max_held_out_frames, temporal_offsets=list(cfg.temporal_offsets),
    )
    values["optim"].update(lr=cfg.lr, warmup_iters=cfg.warmup_iters)
    values["teacher"].update(cvt_layers=cfg.teacher_cvt_layers, backbone_depth=cfg.teacher_backbone_depth)
    values["distill"].update(mode=spec["distill"], weight=cfg.distill_weight, teacher_checkpoint="", source="online")
    if teacher is not None:
        values["distill"].update(teacher_checkpoint=str(teacher))
    if cache is not None:
        values["distill"].update(source="cached", cache_dir=str(cache))
    return train_config_from_dict(values, source="ablation")


def _run_unit(train_cfg, result_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Train (resuming), score on the held-out bags, write ``result.json``; a stopped run is recorded."""
    from monoocc_ros.fileio import write_json_atomic
    from training.errors import TrainingError
    from training.train import run_training

    if result_path.is_file():
        return json.loads(result_path.read_text())
    start = time.time()
    try:
        summary = run_training(train_cfg, resume=True)
        scores = summary.val[-1] if summary.val else {}
        result = {**meta, "status": "ok", "scores": scores, "steps": summary.global_step}
    except TrainingError as exc:  # e.g. released_kl features drifting past distill.max_feature_rms
        result = {**meta, "status": "stopped", "error": str(exc), "scores": {}}
    result["seconds"] = round(time.time() - start, 1)
    write_json_atomic(result_path, result)
    return result


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    """Run (or resume) every unit and write ``results.json``, ``table.md`` and ``ablation.png``."""
    from tqdm import tqdm

    from monoocc_ros.fileio import write_json_atomic, write_text_atomic
    from training.dump import dump_teacher

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", dataclasses.asdict(cfg))
    started = time.time()
    train_bags, held_out_bags = _prepare_bags(cfg, out)
    rows = variants(cfg)
    # the rows that need no teacher first, every seed (a stopped run already shows the student ladder),
    # then per seed the teacher before the students distilled from it
    plain = [r for r in rows if r[1]["role"] != "teacher" and r[1]["distill"] == "off"]
    taught = [r for r in rows if r[1]["role"] == "teacher"] + [r for r in rows if r[1]["distill"] != "off"]
    results: list[dict[str, Any]] = []
    units = [(seed, name, spec) for seed in cfg.seeds for name, spec in plain]
    units += [(seed, name, spec) for seed in cfg.seeds for name, spec in taught]
    bar = tqdm(units, desc="ablation", unit="run", dynamic_ncols=True)
    for seed, name, spec in bar:
        bar.set_postfix_str(f"seed {seed}: {name}")
        run_dir = out / "runs" / _slug(name) / f"seed{seed}"
        teacher = cache = None
        if spec["distill"] != "off":
            teacher = out / "runs" / _slug("teacher") / f"seed{seed}" / "last.pt"
            cache = out / "runs" / _slug("teacher") / f"seed{seed}" / "cache"
            if not (cache / "dump.done").exists():  # once per seed, shared by every distillation mode
                dump_teacher(_train_config(cfg, spec, seed, train_bags, [], run_dir, teacher, cache))
                (cache / "dump.done").touch()
        train_cfg = _train_config(cfg, spec, seed, train_bags, held_out_bags, run_dir, teacher, cache)
        meta = {"variant": name, "seed": seed, "model": spec["model"], "role": spec["role"], "distill": spec["distill"]}
        results.append(_run_unit(train_cfg, run_dir / "result.json", meta))
        # the table so far after every run: an interrupted experiment still shows what it measured
        write_text_atomic(out / "table.md", markdown(summarize(cfg, [n for n, _ in rows], results, time.time() - started)))
    summary = summarize(cfg, [n for n, _ in rows], results, seconds=time.time() - started)
    write_json_atomic(out / "results.json", summary)
    write_text_atomic(out / "table.md", markdown(summary))
    plot(summary, out / "ablation.png")
    print(markdown(summary))
    log.info(f"results: {out / 'results.json'}, {out / 'table.md'}, {out / 'ablation.png'}")
    return summary


# -- summary, table, chart -----------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), {device}, torch {torch.__version__}"


def summarize(cfg: AblationConfig, names: list[str], results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Per variant: mean and sample standard deviation over seeds of IoU, mIoU and every class IoU."""
    from monoocc_ros.labels import SEMANTIC_KITTI

    classes = [SEMANTIC_KITTI.names[c] for c in SEMANTIC_KITTI.paper_table_order]
    rows = []
    for name in names:
        runs = [r for r in results if r["variant"] == name]
        ok = [r for r in runs if r["status"] == "ok" and r["scores"]]
        row: dict[str, Any] = {"variant": name, "seeds": [r["seed"] for r in ok],
                               "stopped": [{"seed": r["seed"], "error": r["error"]} for r in runs if r["status"] != "ok"]}
        for key, src in [("completion_iou", "completion_iou"), ("miou", "miou")] + [(c, f"iou_{c}") for c in classes]:
            row[key] = _mean_std([r["scores"].get(src) for r in ok])
        rows.append(row)
    return {"config": dataclasses.asdict(cfg), "machine": machine(), "seconds": round(seconds, 1),
            "command": "monoocc " + " ".join(sys.argv[1:]) if sys.argv and "experiment" in sys.argv else None,
            "rows": rows, "findings": findings(rows)}


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's two claims, checked against the spread: difference vs sum of the two standard deviations."""
    by = {r["variant"]: r for r in rows}
    out = []

    def compare(a: str, b: str, label: str) -> None:
        (ma, sa), (mb, sb) = by[a]["miou"], by[b]["miou"]
        if ma is None or mb is None:
            out.append(f"{label}: not measured ({a if ma is None else b} has no finished run)")
            return
        delta, spread = mb - ma, sa + sb
        if min(len(by[a]["seeds"]), len(by[b]["seeds"])) < 2:
            verdict = ("yes" if delta > 0 else "no") + ", but with one seed the spread is unknown"
        else:
            verdict = "yes, beyond the seed spread" if delta > spread else ("yes, within the seed spread" if delta > 0 else "no")
        out.append(f"{label}: {verdict} (mIoU {100 * mb:.2f} vs {100 * ma:.2f}, difference {100 * delta:+.2f}, "
                   f"spread {100 * spread:.2f} points)")

    if "teacher" in by:
        compare("+ICA +2D loss", "teacher", "teacher > student")
    for name in by:
        if "distill" in name:
            compare("+ICA +2D loss", name, f"student {name.split('+ICA +2D ')[1]} > student without")
    compare("student", "+ICA", "+ICA > student alone")
    compare("+ICA", "+ICA +2D loss", "+2D loss > +ICA")
    return out


def _cell(ms: tuple[float | None, float | None], spread: bool = True) -> str:
    mean, std = ms
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if spread else f"{100 * mean:.1f}"


def markdown(summary: dict[str, Any]) -> str:
    """Table I layout: IoU and mIoU as mean ± std (%), then per-class mean IoU (%)."""
    from monoocc_ros.labels import SEMANTIC_KITTI

    classes = [SEMANTIC_KITTI.names[c] for c in SEMANTIC_KITTI.paper_table_order]
    rows = summary["rows"]
    moved = [c for c in classes if any(r[c][0] for r in rows)]  # classes some variant gets right at all
    head = ["Method", "IoU", "mIoU", *moved]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        name = r["variant"] + (f" ({len(r['stopped'])} run(s) stopped)" if r["stopped"] else "")
        lines.append("| " + " | ".join([name, _cell(r["completion_iou"]), _cell(r["miou"])]
                                       + [_cell(r[c], spread=False) for c in moved]) + " |")
    cfg = summary["config"]
    lines += [
        "",
        f"Held-out SSC scores (%) on generated streets {list(cfg['held_out_scenes'])} after training on streets "
        f"{list(cfg['train_scenes'])}; mean ± sample standard deviation over training seeds {list(cfg['seeds'])}. "
        f"Model family `{cfg['model']}`, images {cfg['image_size'][1]}x{cfg['image_size'][0]}, "
        f"{cfg['student_epochs']} student / {cfg['teacher_epochs']} teacher epoch(s), lr {cfg['lr']}. "
        f"Classes that no variant predicts correctly anywhere are left out. Machine: {summary['machine']}; "
        f"{summary['seconds'] / 60:.1f} min.",
        "",
        *[f"- {f}" for f in summary["findings"]],
    ]
    for r in rows:
        for s in r["stopped"]:
            lines.append(f"- {r['variant']} seed {s['seed']} stopped: {s['error']}")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Grouped bars of IoU and mIoU (mean, error bar = std over seeds) per variant, with legend and caption."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from monoocc_ros.fileio import atomic_write

    rows = summary["rows"]
    names = [r["variant"] for r in rows]
    fig = Figure(figsize=(11, 5.2), dpi=100)
    ax = fig.add_subplot()
    width = 0.38
    for k, (key, label, colour) in enumerate((("completion_iou", "completion IoU", "#4c72b0"),
                                              ("miou", "mIoU", "#dd8452"))):
        means = [100 * (r[key][0] or 0.0) for r in rows]
        stds = [100 * (r[key][1] or 0.0) for r in rows]
        xs = [i + (k - 0.5) * width for i in range(len(rows))]
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, color=colour, label=label, edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out score (%)")
    top = max([100 * ((r[k][0] or 0.0) + (r[k][1] or 0.0)) for r in rows for k in ("completion_iou", "miou")] + [1.0])
    ax.set_ylim(0, 1.3 * top)  # headroom for the legend above the bars
    ax.legend(loc="upper left", ncols=2)
    cfg = summary["config"]
    ax.set_title("MonoOcc ablation in miniature (generated streets, held-out scenes)")
    fig.text(
        0.01, 0.01,
        f"Bars: mean over training seeds {list(cfg['seeds'])}; error bars: sample standard deviation. "
        f"Trained on streets {list(cfg['train_scenes'])}, scored on unseen streets {list(cfg['held_out_scenes'])}. "
        f"{summary['machine']}.",
        fontsize=7, wrap=True,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return path


# -- command ------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    """The handler of ``monoocc experiment ablation`` (parser: :mod:`monoocc_ros.cli.train`)."""
    from training.config import ConfigError
    from training.errors import TrainingError
    from training.logs import configure_logging

    configure_logging()
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out is not None else [])
    try:
        cfg = load_ablation_config(args.config, overrides, quick=args.quick)
    except ConfigError as exc:
        log.error(f"monoocc experiment ablation: {exc}")
        return 2
    try:
        run_ablation(cfg)
    except (TrainingError, ValueError, FileExistsError) as exc:
        log.error(f"monoocc experiment ablation: error: {exc}")
        return 1
    return 0
