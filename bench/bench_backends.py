"""Every inference backend and precision on a trained checkpoint: p50 latency and per-frame label agreement.

The reference is the fp32 eager predictor on the same frames. Backends are built the way the node
builds them (:func:`monoocc_ros.inference.build_backend`, artefacts cached next to the checkpoint);
an AOTInductor package that is missing is compiled first (``export_s``; minutes), as ``monoocc
export`` would. Timing is round-robin: each frame goes through every backend before the next frame,
so a load change on the machine hits all of them alike. A run below 99.5 % agreement on any frame
does not count (``counts: false``).

Agreement over the whole grid is dominated by free space (most voxels are empty in both runs), so
each run also reports ``occupied_agreement``: the share of voxels that either run calls occupied on
which the two give the same label, and the JSON gives the reference's occupied share per frame
(``reference_occupied``). A model that predicts almost nothing would agree trivially on the grid;
these two figures show it.

Usage:
    python bench/bench_backends.py --checkpoint demo_out/student/last.pt \\
        --sequence demo_out/kitti/sequences/08 --frames 20 --repeats 2 --out backends.json
    python bench/bench_backends.py --config monoocc_s --runs eager:fp32 eager:bf16 \\
        --sequence /work/shared/data/semantickitti-real/sequences/08 --frames 10

``--config NAME`` instead of a checkpoint measures a randomly initialised model (seed 0), for sizes
that have no trained checkpoint here (``monoocc_s``); its checkpoint is written to a temporary folder
(so backends that cache artefacts beside it work) and the JSON says ``"weights": "random"``. Random
weights have small decision margins, so their agreement is a harsher test than a trained model's.

Prints one JSON: per backend ``total_ms`` (p50, p90), ``agreement`` and ``occupied_agreement``
(min, mean over frames), ``counts``, ``export_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_RUNS = ("eager:fp32", "eager:bf16", "onnxruntime:fp32", "aotinductor:fp32", "aotinductor:bf16")
MIN_AGREEMENT = 0.995


def _frames(sequence: Path, count: int, image_hw: tuple[int, int] | None):
    """(image RGB uint8, K, T_cam_grid) of the first ``count`` frames of a KITTI-layout sequence folder."""
    import cv2

    from monoocc_ros.camera import kitti_camera_from_calib
    from monoocc_ros.data.kitti import read_calib

    calib = read_calib(sequence / "calib.txt")
    K, T = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    out = []
    for path in sorted((sequence / "image_2").glob("*.png"))[:count]:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        Kf = K
        if image_hw is not None and tuple(image.shape[:2]) != tuple(image_hw):
            h, w = image_hw
            Kf = np.diag([w / image.shape[1], h / image.shape[0], 1.0]) @ K
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        out.append((np.ascontiguousarray(image), Kf, T))
    if not out:
        raise SystemExit(f"bench_backends: no image_2/*.png in {sequence}")
    return out


def _agreement(labels: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(share of all voxels with equal labels, the same share among voxels either side calls occupied)."""
    from monoocc_ros.labels import EMPTY

    occupied = (labels != EMPTY) | (reference != EMPTY)
    same = labels == reference
    return float(same.mean()), float(same[occupied].mean()) if occupied.any() else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--config", help="a model config name: random weights (seed 0) instead of a checkpoint")
    parser.add_argument("--sequence", type=Path, required=True, help="KITTI-layout sequence folder (image_2/, calib.txt)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--image-hw", default=None, help="HxW to resize to (default: the images' own size)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the frames (the first is not timed)")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="backend:precision pairs")
    parser.add_argument("--threads", type=int, default=0, help="torch (and onnxruntime) threads; 0 = torch's default")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from monoocc_ros.inference import BackendError, backend_artefact, build_backend, export_backend
    from monoocc_ros.labels import EMPTY
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

    image_hw = tuple(int(v) for v in args.image_hw.lower().split("x")) if args.image_hw else None
    frames = _frames(args.sequence, args.frames, image_hw)
    hw = tuple(frames[0][0].shape[:2])
    if args.config:
        from monoocc_ros.models.checkpoint import make_payload, save_checkpoint
        from monoocc_ros.models.config import get_model_config
        from monoocc_ros.models.monoocc import MonoOccStudent

        torch.manual_seed(0)
        scratch = tempfile.TemporaryDirectory()
        args.checkpoint = save_checkpoint(Path(scratch.name) / f"{args.config}.pt",
                                          make_payload(MonoOccStudent(get_model_config(args.config)), args.config))
    ckpt = load_checkpoint(args.checkpoint)
    model, _ = build_model_from_checkpoint(ckpt)
    model.eval()
    predictors, export_s, skipped = {}, {}, {}
    for run in args.runs:
        name, precision = run.split(":")
        if name == "aotinductor" and not backend_artefact(name, args.checkpoint, hw, precision).is_file():
            print(f"compiling {run} (AOTInductor, minutes) ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            export_backend(name, model, checkpoint_path=args.checkpoint, image_hw=hw, precision=precision,
                           config_name=ckpt.get("config_name") or "")
            export_s[run] = round(time.perf_counter() - start, 1)
        try:
            predictors[run] = build_backend(name, model, checkpoint_path=args.checkpoint, image_hw=hw,
                                            precision=precision, config_name=ckpt.get("config_name") or "")
        except (BackendError, ValueError) as err:
            skipped[run] = str(err)
    reference = build_backend("eager", model, precision="fp32")
    times = {run: [] for run in predictors}
    agreement = {run: [] for run in predictors}
    occupied_agreement = {run: [] for run in predictors}
    reference_occupied = []
    for rep in range(max(2, args.repeats)):
        for i, (image, K, T) in enumerate(frames):
            ref = reference.predict(image, K, T).labels if rep == 0 else None
            if ref is not None:
                reference_occupied.append(round(float((ref != EMPTY).mean()), 6))
            for run, predictor in predictors.items():
                start = time.perf_counter()
                labels = predictor.predict(image, K, T).labels
                if rep > 0:
                    times[run].append(1000.0 * (time.perf_counter() - start))
                else:
                    whole, occupied = _agreement(labels, ref)
                    agreement[run].append(whole)
                    occupied_agreement[run].append(occupied)
        print(f"pass {rep + 1}/{max(2, args.repeats)} done", file=sys.stderr, flush=True)
    report = {
        "checkpoint": None if args.config else str(args.checkpoint), "config_name": ckpt.get("config_name"),
        "weights": "random" if args.config else "checkpoint", "image_hw": list(hw),
        "frames": len(frames), "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
        "reference": "eager:fp32", "reference_occupied": reference_occupied,
        "runs": {}, "skipped": skipped,
    }
    for run in predictors:
        t = np.asarray(times[run])
        a = np.asarray(agreement[run])
        o = np.asarray(occupied_agreement[run])
        report["runs"][run] = {
            "total_ms": {"p50": round(float(np.percentile(t, 50)), 1), "p90": round(float(np.percentile(t, 90)), 1)},
            "agreement": {"min": round(float(a.min()), 6), "mean": round(float(a.mean()), 6)},
            "occupied_agreement": {"min": round(float(o.min()), 6), "mean": round(float(o.mean()), 6)},
            "counts": bool(a.min() >= MIN_AGREEMENT),
            **({"export_s": export_s[run]} if run in export_s else {}),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        from monoocc_ros.fileio import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
