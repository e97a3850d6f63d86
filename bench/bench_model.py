"""Student network benchmark: parameters, Predictor latency p50/p90 and peak memory. Prints JSON.

Each configuration runs in a fresh subprocess so that peak memory is its own: on CPU the process's
max resident set size (``resource.getrusage``; tracemalloc does not see torch allocations), on CUDA
``torch.cuda.max_memory_allocated``.

    python bench/bench_model.py [--configs tiny monoocc_s] [--device cpu|cuda] [--precision fp32|fp16|bf16]
                                [--height 370 --width 1226] [--iterations 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time


def _single(args: argparse.Namespace) -> dict:
    import resource

    import numpy as np
    import torch

    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent
    from monoocc_ros.models.monoocc import count_parameters
    from monoocc_ros.predictor import Predictor

    torch.manual_seed(0)
    model = MonoOccStudent(get_model_config(args.single))
    params = count_parameters(model)
    inference_params = params - sum(count_parameters(m) for m in (model.proposals, model.sem_decoder) if m is not None)
    predictor = Predictor(model, device=args.device, precision=args.precision)
    h, w = args.height, args.width
    predictor.warmup((h, w))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    K = np.array([[707.0912 * w / 1226, 0, w / 2], [0, 707.0912 * w / 1226, h / 2], [0, 0, 1]])
    T = np.array([[0.0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27], [0, 0, 0, 1]])
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    latencies, stages = [], []
    for _ in range(args.iterations):
        start = time.perf_counter()
        pred = predictor.predict(image, K, T)
        latencies.append(1000.0 * (time.perf_counter() - start))
        stages.append(pred.timings_ms)
    result = {
        "config": args.single,
        "device": args.device,
        "precision": args.precision,
        "image_hw": [h, w],
        "params_total": params,
        "params_inference_without_proposals": inference_params,
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p90": float(np.percentile(latencies, 90)),
        "stage_ms_median": {k: float(np.median([s[k] for s in stages])) for k in stages[0]},
        "iterations": args.iterations,
        "torch_threads": torch.get_num_threads(),
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    else:
        # ru_maxrss is in KiB on Linux
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "monoocc_s"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--height", type=int, default=370)
    parser.add_argument("--width", type=int, default=1226)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="CI size (monoocc bench --quick): tiny only, 185x613, 1 iteration")
    args = parser.parse_args()
    if args.quick:
        args.configs, args.height, args.width, args.iterations = ["tiny"], 185, 613, 1
    if args.single:
        print(json.dumps(_single(args)))
        return 0
    results = []
    for name in args.configs:
        cmd = [
            sys.executable, __file__, "--single", name, "--device", args.device, "--precision", args.precision,
            "--height", str(args.height), "--width", str(args.width), "--iterations", str(args.iterations),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"config": name, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "model", "host": platform.node(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
