"""What a second OpenMP team costs: the same predictor, one thread at a time, with and without another
thread's libgomp team alive (why the node runs all of its model on one thread: monoocc_ros.model_thread).

Phases, in one process and in this order (p50 of ``--repeats`` frames each):

- ``one_team``: the main thread only;
- ``second_team_idle``: the main thread while another thread that ran one frame (so owns a team)
  waits, blocked;
- ``second_team_gone``: the main thread after that thread ended;
- ``worker_thread``: a new thread runs the frames while the main thread's team stays (the node
  before this change: model loaded and warmed up on the executor thread, run on an inference thread).

Prints one JSON object with the matmul and copy probes of the same run.

    python bench/bench_omp_teams.py [--checkpoint demo_out/student/last.pt] [--image-hw 185x613] [--repeats 12] [--quick]

``--quick`` (what ``monoocc bench --quick`` passes): 96x320, 3 frames per phase.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import _frame, _probes  # noqa: E402 - the same frame and probes as the inference bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="trained checkpoint (default: random tiny_per_voxel)")
    parser.add_argument("--image-hw", default="185x613")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="96x320, 3 frames per phase (checks that it runs)")
    args = parser.parse_args()
    if args.quick:
        args.image_hw, args.repeats = "96x320", 3

    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from monoocc_ros.predictor import Predictor

    if args.checkpoint:
        model, _ = build_model_from_checkpoint(load_checkpoint(args.checkpoint))
    else:
        torch.manual_seed(0)
        model = MonoOccStudent(get_model_config("tiny_per_voxel"))
    predictor = Predictor(model.eval().requires_grad_(False), device="cpu", precision="fp32")
    h, w = (int(v) for v in args.image_hw.lower().split("x"))
    image, K, T = _frame((h, w))[:3]

    def p50_ms() -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.predict(image, K, T)
            times.append(1000 * (time.perf_counter() - start))
        return round(statistics.median(times), 1)

    def on_thread(fn):
        out = []
        thread = threading.Thread(target=lambda: out.append(fn()))
        thread.start()
        thread.join()
        return out[0] if out else None

    for _ in range(3):
        predictor.predict(image, K, T)
    result = {"one_team": p50_ms()}
    ran, release = threading.Event(), threading.Event()

    def second_team():
        predictor.predict(image, K, T)
        ran.set()
        release.wait()

    other = threading.Thread(target=second_team)
    other.start()
    ran.wait()
    result["second_team_idle"] = p50_ms()
    release.set()
    other.join()
    result["second_team_gone"] = p50_ms()
    result["worker_thread"] = on_thread(p50_ms)
    print(json.dumps({
        "bench": "omp_teams",
        "quick": args.quick,
        "checkpoint": args.checkpoint,
        "image_hw": [h, w],
        "torch_threads": torch.get_num_threads(),
        "p50_ms": result,
        "probes": _probes(),
    }, indent=2))


if __name__ == "__main__":
    main()
