"""Student inference: stage-split latency (p50/p90 after warm-up), peak memory, achieved TFLOP/s,
and comparisons measured in the same run (fp32 vs fp16/bf16, eager vs compiled, PyTorch vs ONNX,
inference path vs the training path's layers). Each stage is set against this machine's limits,
measured in the same run: a matmul probe (FLOP floor) and a copy probe (memory floor).
Prints one JSON object.

Models are randomly initialised (seed 0) unless ``--checkpoint`` gives trained weights. Label agreement
depends on the weights (use a trained checkpoint for it), and so does the work: the proposal stage
picks the voxels the cross-attention queries, and random weights pick more of them (``monoocc_s``
on the real frame: 601 GFLOP random, 466 GFLOP for a checkpoint trained 30 steps), so each run's
floor comes from its own ``gflop_per_frame``. Agreement of a
variant with the fp32 eager reference is measured on the same real KITTI frame (sequence 08 of
/work/shared/data/semantickitti-real when present, else a generated image).

    python bench/bench_inference.py [--configs tiny monoocc_s] [--device auto|cpu|cuda]
        [--precisions fp32 fp16] [--image-hw 370x1226] [--repeats 10] [--warmup 2]
        [--compile] [--cuda-graphs] [--onnx] [--quick] [--reference-path] [--checkpoint student.pt]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL_KITTI = Path(os.environ.get("MONOOCC_REAL_KITTI", "/work/shared/data/semantickitti-real"))
STAGES = ("preprocess", "backbone_neck", "proposals", "cross_attention", "self_attention", "ica", "head", "postprocess")

# Dense peak TFLOP/s by device name fragment (first match wins): (fp32 non-tensor, fp16/bf16 tensor).
PEAK_TFLOPS = (
    ("H200", 67.0, 989.0),
    ("H100 PCIe", 51.0, 756.0),
    ("H100", 67.0, 989.0),
    ("A100", 19.5, 312.0),
    ("RTX 4090", 82.6, 165.2),
    ("L40S", 91.6, 362.0),
    ("L4", 30.3, 121.0),
    ("A10G", 31.2, 70.0),
)


def _peak_tflops(device_name: str, precision: str) -> float | None:
    for fragment, fp32, half in PEAK_TFLOPS:
        if fragment in device_name:
            return fp32 if precision == "fp32" else half
    return None


def _frame(image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A real KITTI frame resized to image_hw (K scaled with it), or a generated one."""
    import cv2

    from monoocc_ros.camera import kitti_camera_from_calib

    seq = REAL_KITTI / "sequences" / "08"
    if (seq / "image_2" / "000000.png").is_file():
        from monoocc_ros.data.kitti import read_calib

        calib = read_calib(seq / "calib.txt")
        K, T = kitti_camera_from_calib(calib["P2"], calib["Tr"])
        image = cv2.cvtColor(cv2.imread(str(seq / "image_2" / "000000.png")), cv2.COLOR_BGR2RGB)
        source = f"{seq}/image_2/000000.png"
    else:
        K = np.array([[707.1, 0.0, 601.9], [0.0, 707.1, 183.1], [0.0, 0.0, 1.0]])
        T = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0.0, 0.0, 0.0, 1.0]])
        rng = np.random.default_rng(0)
        image = (rng.random((370, 1226, 3)) * 255).astype(np.uint8)
        source = "generated noise image (real KITTI data not found)"
    h, w = image_hw
    sy, sx = h / image.shape[0], w / image.shape[1]
    K = np.diag([sx, sy, 1.0]) @ K
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), K, T, source


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p90": round(float(np.percentile(a, 90)), 3)}


def _time_predictor(predictor, frame, warmup: int, repeats: int, device, label: str) -> dict:
    import torch
    from tqdm import tqdm

    image, K, T = frame
    for _ in tqdm(range(warmup), desc=f"{label} warm-up", file=sys.stderr, leave=False):
        predictor.predict(image, K, T)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    totals, stages = [], {}
    prediction = None
    for _ in tqdm(range(repeats), desc=label, file=sys.stderr, leave=False):
        start = time.perf_counter()
        prediction = predictor.predict(image, K, T)
        totals.append(1000.0 * (time.perf_counter() - start))
        for name, ms in prediction.timings_ms.items():
            stages.setdefault(name, []).append(ms)
    result = {
        "total_ms": _percentiles(totals),
        "stages_ms": {name: _percentiles(v) for name, v in stages.items()},
    }
    if device.type == "cuda":
        result["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        # process-wide high-water mark, so cumulative over everything run before
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result, prediction


@contextlib.contextmanager
def _pytorch_reference():
    """The training path's layers and PyTorch operators only (no fused C kernels): every matmul is
    an aten op that FlopCounterMode sees, and it is the "before" of the inference path."""
    from monoocc_ros.models import conv3d_kernel, cpu_kernels, fused_layers
    from monoocc_ros.models.voxel_transformer import OccupancyBlock

    states = [cpu_kernels._state, fused_layers._state, conv3d_kernel._state]
    saved = [state.get("lib", "unset") for state in states]
    for state in states:
        state["lib"] = None
    OccupancyBlock.fast_inference = False
    try:
        yield
    finally:
        OccupancyBlock.fast_inference = True
        for state, lib in zip(states, saved):
            if lib == "unset":
                state.pop("lib", None)
            else:
                state["lib"] = lib


def _probes() -> dict:
    """This machine's limits, measured now: fp32/bf16 GFLOP/s of a 2048^2 matmul and GB/s of a 256 MB copy."""
    import torch

    def best_s(fn, repeats: int) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    out = {}
    n = 2048
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        t = best_s(lambda: a @ b, 5)
        out[f"matmul_gflops_{'fp32' if dtype == torch.float32 else 'bf16'}"] = round(2 * n**3 / t / 1e9, 1)
    src = torch.ones(64 * 2**20)  # 256 MB
    dst = torch.empty_like(src)
    t = best_s(lambda: dst.copy_(src), 5)
    out["copy_gb_s"] = round(2 * src.numel() * 4 / t / 1e9, 1)  # read + write
    return out


def _stage_work(model, frame, device) -> dict[str, dict[str, float]]:
    """Per stage: matmul/conv GFLOP (counted) and the compulsory memory traffic in MB.

    Compulsory traffic = the stage's input and output tensors (plus, for attention layers, one
    value map written and read): what no implementation can avoid moving, so its floor is
    traffic / copy bandwidth. GFLOP come from the training-path layers (same maths as the
    inference path, which calls functional ops the counter cannot attribute to modules).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from monoocc_ros.grid import KITTI_GRID, KITTI_GRID_HALF
    from monoocc_ros.models import monoocc, voxel_transformer

    flops: dict[str, float] = {}
    original = voxel_transformer.stage_timer

    class _Counting:
        def __init__(self, timings, name, dev):
            self.name, self.mode = name, FlopCounterMode(display=False)

        def __enter__(self):
            self.mode.__enter__()

        def __exit__(self, *exc):
            self.mode.__exit__(*exc)
            flops[self.name] = flops.get(self.name, 0.0) + self.mode.get_total_flops()

    image, K, T = frame
    img = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255
    Kt = torch.from_numpy(K).to(device, torch.float32)[None]
    Tt = torch.from_numpy(T).to(device, torch.float32)[None]
    try:
        voxel_transformer.stage_timer = monoocc.stage_timer = _Counting
        with torch.inference_mode(), _pytorch_reference():
            model.predict(img, Kt, Tt, timings={})
    finally:
        voxel_transformer.stage_timer = monoocc.stage_timer = original
    cfg = model.cfg
    C, q, full = cfg.voxel.embed_dim, KITTI_GRID_HALF.num_voxels, KITTI_GRID.num_voxels
    h, w = image.shape[:2]
    feats = C * -(-h // 16) * -(-w // 16)
    layer = 4 * q * C  # read x, write the value map, read it back, write the output
    mbytes = {
        "backbone_neck": 3 * h * w + feats,
        "proposals": feats + full + q,  # features in, the 2 M lifted probabilities, proposal mask out
        "cross_attention": 2 * q * C,
        "self_attention": cfg.voxel.num_dsa_layers * layer,
        "ica": cfg.voxel.num_ica_layers * layer if cfg.voxel.use_ica else 0,
        "head": q * C,
    }
    out = {}
    for stage, n in mbytes.items():
        byte_count = 4 * n + (full if stage == "head" else 0)  # float32 tensors; uint8 labels out
        out[stage] = {"gflop": round(flops.get(stage, 0.0) / 1e9, 3), "mbytes": round(byte_count / 1e6, 1)}
    return out


def _stage_floors(work: dict, run: dict, probes: dict) -> dict:
    """p50 of each stage against max(FLOP floor, memory floor) on this machine."""
    out = {}
    for stage, w in work.items():
        p50 = run.get("stages_ms", {}).get(stage, {}).get("p50")
        flop_ms = 1000 * w["gflop"] / probes["matmul_gflops_fp32"]
        mem_ms = 1000 * w["mbytes"] / 1000 / probes["copy_gb_s"]
        floor = max(flop_ms, mem_ms)
        out[stage] = {
            **w,
            "flop_floor_ms": round(flop_ms, 2),
            "memory_floor_ms": round(mem_ms, 2),
            "bound": "flop" if flop_ms >= mem_ms else "memory",
            "p50_ms": p50,
            "times_floor": round(p50 / floor, 1) if p50 is not None and floor > 0 else None,
        }
    return out


def _count_flops(model, frame, device) -> int:
    """Matmul/conv FLOPs of one inference (grid_sample and elementwise work are not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    image, K, T = frame
    img = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255
    Kt = torch.from_numpy(K).to(device, torch.float32)[None]
    Tt = torch.from_numpy(T).to(device, torch.float32)[None]
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), _pytorch_reference():
        model.predict(img, Kt, Tt)
    return int(counter.get_total_flops())


def bench_config(name: str, args, device, frame) -> dict:
    import torch

    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent, count_parameters
    from monoocc_ros.predictor import Predictor

    torch.manual_seed(0)
    if args.checkpoint:  # trained weights: label agreement on a real model's decision margins
        from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

        model, _ = build_model_from_checkpoint(load_checkpoint(args.checkpoint))
        model = model.eval().requires_grad_(False)
    else:
        model = MonoOccStudent(get_model_config(name)).eval().requires_grad_(False)
    # (FlopCounterMode's module hooks trip over modules returning a trainable parameter as is)
    flops = _count_flops(model, frame, torch.device("cpu"))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    out: dict = {
        "config": name,
        "parameters": count_parameters(model),
        "gflop_per_frame": round(flops / 1e9, 2),
        "runs": {},
        "comparisons": {},
    }

    reference = Predictor(model, device=str(device), precision="fp32")
    run, ref_pred = _time_predictor(reference, frame, args.warmup, args.repeats, device, f"{name} eager_fp32")
    out["runs"]["eager_fp32"] = run
    reference.release()
    if device.type == "cpu":
        out["stage_floors"] = _stage_floors(_stage_work(model, frame, device), run, args.probes)

    def add_run(key: str, predictor) -> dict:
        run, pred = _time_predictor(predictor, frame, args.warmup, args.repeats, device, f"{name} {key}")
        run["label_agreement"] = round(float((pred.labels == ref_pred.labels).mean()), 6)
        out["runs"][key] = run
        predictor.release()
        return run

    def compare(key: str, baseline: str, variant: str) -> None:
        if "total_ms" not in out["runs"].get(baseline, {}):
            out["comparisons"][key] = {"skipped": f"baseline {baseline} was not measured"}
            return
        b = out["runs"][baseline]["total_ms"]["p50"]
        v = out["runs"][variant]["total_ms"]["p50"]
        out["comparisons"][key] = {"baseline": baseline, "variant": variant, "speedup_p50": round(b / v, 3)}

    for precision in args.precisions:
        if precision == "fp32":
            continue
        if precision == "fp16" and device.type != "cuda":
            out["runs"][f"eager_{precision}"] = {"skipped": "fp16 needs CUDA"}
            continue
        add_run(f"eager_{precision}", Predictor(model, device=str(device), precision=precision))
        compare(f"fp32_vs_{precision}", "eager_fp32", f"eager_{precision}")

    if args.reference_path:
        # the "before" of the inference path: same process, same frame
        with _pytorch_reference():
            add_run("reference_path_fp32", Predictor(model, device=str(device), precision="fp32"))
        compare("reference_path_vs_inference_path", "reference_path_fp32", "eager_fp32")

    fast = "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cuda":
        add_run("eager_fp16_channels_last",
                Predictor(model, device=str(device), precision="fp16", channels_last=True))
        compare("channels_last", "eager_fp16", "eager_fp16_channels_last")

    if args.compile:
        torch.manual_seed(0)
        compiled_model = MonoOccStudent(get_model_config(name)).eval()
        compiled_model.load_state_dict(model.state_dict())
        start = time.perf_counter()
        predictor = Predictor(compiled_model, device=str(device), precision=fast, compile=True)
        predictor.warmup(frame[0].shape[:2])
        compile_s = time.perf_counter() - start
        add_run(f"compiled_{fast}", predictor)["compile_s"] = round(compile_s, 1)
        compare("eager_vs_compiled", f"eager_{fast}", f"compiled_{fast}")
    else:
        out["runs"]["compiled"] = {"skipped": "torch.compile not requested (--compile; minutes on CPU)"}

    if args.cuda_graphs and device.type == "cuda":
        graph_model = MonoOccStudent(get_model_config(name)).eval()
        graph_model.load_state_dict(model.state_dict())
        predictor = Predictor(graph_model, device=str(device), precision="fp16", compile=True, cuda_graphs=True)
        predictor.warmup(frame[0].shape[:2], iterations=3)
        add_run("cuda_graphs_fp16", predictor)
        compare("eager_vs_cuda_graphs", "eager_fp16", "cuda_graphs_fp16")

    if args.onnx:
        # through the node's backends (monoocc_ros.inference), artefacts cached beside a temporary checkpoint
        from monoocc_ros.inference import build_backend, export_backend
        from monoocc_ros.models.checkpoint import make_payload, save_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = save_checkpoint(Path(tmp) / f"{name}.pt", make_payload(model, name))
            start = time.perf_counter()
            export_backend("onnxruntime", model, checkpoint_path=ckpt, image_hw=frame[0].shape[:2], config_name=name)
            export_s = time.perf_counter() - start
            predictor = build_backend("onnxruntime", model, checkpoint_path=ckpt, image_hw=frame[0].shape[:2],
                                      device=str(device))
            add_run("onnxruntime", predictor)["export_s"] = round(export_s, 1)
        compare("eager_vs_onnxruntime", "eager_fp32", "onnxruntime")

    if device.type == "cuda":
        for key, run in out["runs"].items():
            precision = "fp32" if "fp32" in key else "fp16"
            peak = _peak_tflops(device_name, precision)
            if peak and "total_ms" in run:
                achieved = flops / (run["total_ms"]["p50"] / 1000) / 1e12
                run["achieved_tflops"] = round(achieved, 2)
                run["fraction_of_peak"] = round(achieved / peak, 4)
    else:
        for run in out["runs"].values():
            if "total_ms" in run:
                run["achieved_tflops"] = round(flops / (run["total_ms"]["p50"] / 1000) / 1e12, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=None,
                        help="model configs (default: tiny monoocc_s; tiny with --quick)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="default: fp32 fp16 bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--image-hw", default="370x1226", help="HxW (default 370x1226)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="also measure CUDA graphs (CUDA only)")
    parser.add_argument("--onnx", action="store_true", help="also export and measure onnxruntime")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--checkpoint", default=None,
                        help="trained checkpoint to measure (one --configs name, used as its label)")
    parser.add_argument("--reference-path", action="store_true",
                        help="also time the training path's layers with PyTorch operators (the eager 'before')")
    parser.add_argument("--quick", action="store_true",
                        help="CI size: tiny only, 1 warm-up, 3 repeats, no compile, ONNX at a 96x320 image")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.precisions is None:
        args.precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]
    if args.quick:
        args.warmup, args.repeats, args.compile, args.cuda_graphs = 1, 3, False, False
        args.image_hw = "96x320"
        args.onnx = True
    if args.configs is None:
        # eager monoocc_s takes minutes per frame on a small CPU: not a quick run
        args.configs = ["tiny"] if args.quick else ["tiny", "monoocc_s"]
    h, w = (int(v) for v in args.image_hw.lower().split("x"))
    image, K, T, source = _frame((h, w))
    frame = (image, K, T)
    started = time.perf_counter()
    args.probes = _probes() if device.type == "cpu" else {}
    results = [bench_config(name, args, device, frame) for name in args.configs]
    report = {
        "benchmark": "inference",
        "quick": args.quick,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image_hw": [h, w],
        "frame": source,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "stages": list(STAGES),
        "probes": args.probes,
        "load_average": list(os.getloadavg()),
        "configs": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
