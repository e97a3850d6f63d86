"""Benchmark one training step of the student and the teacher: seconds per step, peak memory.

Runs the real model, losses, AdamW and gradient clipping on synthetic inputs of full KITTI
size (370 x 1226) and prints one JSON object ``{"benchmark": "train", "results": [...]}`` with
one entry per role (each entry is also printed to stderr as soon as it is measured). Peak memory is
``torch.cuda.max_memory_allocated`` on GPU and the process's peak RSS on CPU.

    python bench/bench_train.py --model tiny --role both --steps 2            # CPU here
    python bench/bench_train.py --model monoocc_s --role student --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monoocc_ros.losses import LossConfig, MonoOccLoss  # noqa: E402
from monoocc_ros.models.config import get_model_config  # noqa: E402
from monoocc_ros.models.monoocc import MonoOccStudent  # noqa: E402
from training.config import TeacherConfig  # noqa: E402
from training.distill import DistillLoss  # noqa: E402
from training.teacher import MonoOccTeacher  # noqa: E402

KITTI_K = np.array([[707.09, 0.0, 601.89], [0.0, 707.09, 183.11], [0.0, 0.0, 1.0]])
R_CAM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def synthetic_batch(hw: tuple[int, int], views: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A KITTI-sized sample: random image, street-like labels (ground, some objects, unknown)."""
    h, w = hw
    g = torch.Generator().manual_seed(0)
    T = np.eye(4)
    T[:3, :3] = R_CAM_VELO
    T[:3, 3] = [0.0, 1.7, 0.0]
    past = []
    for k in range(views):
        shift = np.eye(4)
        shift[0, 3] = 0.8 * (views - k)
        past.append(T @ shift)
    labels = torch.zeros(256, 256, 32, dtype=torch.long)
    labels[:, :, :8] = 9  # road
    labels[:, :, :8][torch.rand(256, 256, 8, generator=g) < 0.3] = 11
    labels[100:120, 120:140, 8:16] = 1  # a car
    labels[torch.rand(256, 256, 32, generator=g) < 0.1] = 255
    half = labels.view(128, 2, 128, 2, 16, 2).amax((1, 3, 5))
    batch = {
        "image": torch.rand(1, 3, h, w, generator=g),
        "K": torch.from_numpy(KITTI_K * np.array([[w / 1226], [h / 370], [1.0]])).float()[None],
        "T_cam_grid": torch.from_numpy(T).float()[None],
        "temporal_images": torch.rand(1, views, 3, h, w, generator=g),
        "temporal_T_cam_grid": torch.from_numpy(np.stack(past) if past else np.zeros((0, 4, 4))).float()[None],
        "labels": labels[None],
        "labels_half": half[None],
        "sem2d": torch.randint(0, 20, (1, h, w), generator=g),
        "depth": torch.rand(1, h, w, generator=g) * 50,
    }
    return {k: v.to(device) for k, v in batch.items()}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(role: str, args: argparse.Namespace, device: torch.device) -> dict:
    cfg = get_model_config(args.model)
    if args.grad_checkpointing:
        cfg = dataclasses.replace(cfg, voxel=dataclasses.replace(cfg.voxel, gradient_checkpointing=True))
    torch.manual_seed(0)
    if role == "teacher":
        model = MonoOccTeacher(cfg, TeacherConfig(backbone_depth=101)).to(device)
        views = args.views
    else:
        model = MonoOccStudent(cfg).to(device)
        views = 0
    criterion = MonoOccLoss.for_model(model, LossConfig()).to(device)
    distill = DistillLoss("released_kl", 3.5) if role == "student" and args.distill else None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.01)
    batch = synthetic_batch(tuple(args.image_hw), views, device)
    teacher_feats = torch.randn(1, cfg.voxel.embed_dim, 128, 128, 16, device=device) if distill else None
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    model.train()
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if role == "teacher":
                out = model(batch["image"], batch["K"], batch["T_cam_grid"], batch["temporal_images"], batch["temporal_T_cam_grid"])
            else:
                out = model(batch["image"], batch["K"], batch["T_cam_grid"])
            terms = criterion(out, batch)
            loss = terms["loss"]
            if distill is not None:
                loss = loss + distill(out["voxel_features"].float(), teacher_feats, batch["labels_half"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 35.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
        del out, terms, loss
    return {
        "role": role,
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": args.precision,
        "grad_checkpointing": args.grad_checkpointing,
        "image_hw": list(args.image_hw),
        "views": 1 + views,
        "batch_size": 1,
        "steps": args.steps,
        "seconds_per_step": float(np.median(times)),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model config name (tiny, monoocc_s)")
    parser.add_argument("--role", choices=("student", "teacher", "both"), default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--distill", action="store_true", help="add the released distillation loss (student)")
    parser.add_argument("--image-hw", type=int, nargs=2, default=(370, 1226), metavar=("H", "W"))
    parser.add_argument("--views", type=int, default=4, help="temporal frames of the teacher")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="CI size: 96x320 image, 1 step, no warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_hw, args.steps, args.warmup = (96, 320), 1, 0
    device = torch.device(args.device)
    roles = ("student", "teacher") if args.role == "both" else (args.role,)
    results = []
    for role in roles:
        results.append(bench(role, args, device))
        print(f"[bench_train] {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "train", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
