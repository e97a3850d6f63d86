"""End-to-end node latency at the recorded 10 Hz: image stamp -> occupancy published, and drops.

A generated street is converted to a bag, the node runs as its own process on a model with
random weights (latency does not depend much on the weights), the bag is replayed into it over
DDS at its recorded rate, and the live evaluator measures what came out: achieved rate,
dropped and missed frames, end-to-end latency percentiles. Prints one JSON object.

``--checkpoint CKPT --bag BAG`` replays an existing bag into a trained checkpoint instead (``make
demo``'s step 4: ``--checkpoint demo_out/student/last.pt --bag demo_out/bags/08 --node-threads 2``).
``--stage-times`` runs the node under ``bench/node_stage_times.py`` and adds where each processed
frame's time went (``node_stages_ms``: waiting for the inference thread, decode and checks, model,
outputs; ``model_stages_ms``) and how much CPU the node and the evaluator (this process: player
and scorer) used while the frames were processed (``cpu_cores_in_replay``). ``--scoring
on-arrival`` scores each grid as it arrives (the evaluator before deferred scoring), and
``--no-camera-warmup`` leaves the node's ``warmup_camera_k`` unset, and ``--executor multi`` runs
the node on rclpy's MultiThreadedExecutor (the node before it moved to a single-threaded one;
implies ``--stage-times``), for A/B runs. With ``--stage-times`` the JSON also has
``input_lateness_ms``: how late each image reached the node's callback, against the replay's
schedule (its stamp offset from the run's most punctual frame; 0 for that frame), so a frame held
up in the middleware or behind a busy executor shows apart from the model's time; and
``gc_pauses_ms``: the node's garbage-collector passes of 1 ms or more while the frames arrived.

    python bench/bench_node_replay.py [--config tiny] [--frames 30] [--image-hw 185 613] [--device cpu] \
        [--backend eager|onnxruntime|aotinductor] [--precision fp32|bf16] \
        [--checkpoint CKPT --bag BAG] [--node-threads N] [--stage-times] [--scoring deferred|on-arrival] [--no-camera-warmup] \
        [--executor single|multi]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from monoocc_ros.camera import kitti_camera_from_calib
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.data.converter import convert_sequence
from monoocc_ros.data.kitti import read_calib
from monoocc_ros.data.scene import SceneConfig, generate_sequence
from monoocc_ros.evaluation.live import LiveConfig
from monoocc_ros.inference import BACKENDS, export_backend
from monoocc_ros.ros.live_eval import run_live
from monoocc_ros.ros.params import double_list_value
from monoocc_ros.models.checkpoint import load_checkpoint, make_payload, save_checkpoint
from monoocc_ros.models.config import get_model_config
from monoocc_ros.models.monoocc import MonoOccStudent

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="model config (tiny, monoocc_s)")
    parser.add_argument("--frames", type=int, default=30, help="frames replayed at 10 Hz")
    parser.add_argument("--image-hw", type=int, nargs=2, default=(185, 613), metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--backend", default="eager", choices=BACKENDS,
                        help="the node's backend parameter (aotinductor: compiled here first, minutes)")
    parser.add_argument("--quick", action="store_true", help="10 frames")
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (with --bag; --config is then read from it)")
    parser.add_argument("--bag", type=Path, help="replay this bag (with --checkpoint) instead of a generated street")
    parser.add_argument("--node-threads", type=int, default=0, help="OMP_NUM_THREADS of the node (0: inherited)")
    parser.add_argument("--stage-times", action="store_true", help="time the node's per-frame stages and CPU use")
    parser.add_argument("--scoring", default="deferred", choices=("deferred", "on-arrival"),
                        help="the evaluator scores after the replay (default) or on each grid's arrival")
    parser.add_argument("--no-camera-warmup", action="store_true",
                        help="leave warmup_camera_k unset (the first frame then computes the camera geometry)")
    parser.add_argument("--executor", default="single", choices=("single", "multi"),
                        help="the node's executor: single (as shipped) or rclpy's MultiThreadedExecutor (before)")
    args = parser.parse_args()
    args.stage_times = args.stage_times or args.executor != "single"
    if (args.checkpoint is None) != (args.bag is None):
        parser.error("--checkpoint and --bag go together")
    frames = 10 if args.quick else args.frames

    with tempfile.TemporaryDirectory(prefix="bench_node_replay_") as tmp:
        tmp = Path(tmp)
        if args.bag is not None:
            bag, ckpt = args.bag, args.checkpoint
            config_name = load_checkpoint(ckpt).get("config_name") or ""
            T_cam_grid = None  # read below with the camera
        else:
            bag, ckpt, config_name, T_cam_grid = _generated_setup(args, tmp, frames)

        # as `make demo`: the node's warm-up caches the camera of the bag's CameraInfo
        first = read_bag_frames(bag).load(0)
        if T_cam_grid is None:
            T_cam_grid = first.T_cam_grid
        warmup_K = "[0.0]" if args.no_camera_warmup else double_list_value(first.K)
        env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 80))
        if args.node_threads:
            env["OMP_NUM_THREADS"] = str(args.node_threads)
        times_json = tmp / "node_stage_times.json"
        launcher = [str(REPO / "bench" / "node_stage_times.py"), str(times_json), "--executor", args.executor] if (
            args.stage_times) else ["-m", "monoocc_ros.ros.node"]
        node = subprocess.Popen(
            [
                sys.executable, *launcher, "--ros-args",
                "--params-file", str(REPO / "config" / "monoocc.yaml"),
                "-p", f"checkpoint_path:={ckpt}", "-p", f"config_name:={config_name}",
                "-p", f"device:={args.device}", "-p", f"precision:={args.precision}", "-p", f"backend:={args.backend}",
                "-p", "input_qos:=reliable",
                "-p", f"warmup_image_size:=[{args.image_hw[0]}, {args.image_hw[1]}]",
                "-p", f"static_T_cam_grid.matrix:={double_list_value(T_cam_grid)}", "-p", f"warmup_camera_k:={warmup_K}",
                "-r", "__node:=monoocc_node",
                "-r", "~/input/image:=/camera/image_raw", "-r", "~/input/camera_info:=/camera/camera_info",
            ],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
        sampler = _CpuSampler((node.pid, os.getpid())) if args.stage_times else None
        try:
            report = run_live(
                bag, tmp / "live", LiveConfig(start_timeout_s=180.0, defer_scoring=args.scoring == "deferred"),
                checkpoint_path=ckpt, replay=True, replay_rate=1.0, progress=False,
            )
        finally:
            if sampler is not None:
                sampler.stop()
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
        stages = _stage_summary(times_json, sampler, node.pid) if args.stage_times else None

    result = {
        "bench": "node_replay",
        "config": args.config if args.checkpoint is None else str(args.checkpoint),
        "bag": None if args.bag is None else str(args.bag),
        "node_threads": args.node_threads or os.environ.get("OMP_NUM_THREADS"),
        "scoring": args.scoring,
        "camera_warmup": not args.no_camera_warmup,
        "executor": args.executor,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "device": args.device,
        "precision": args.precision,
        "backend": args.backend,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "image_hw": list(args.image_hw),
        "replay_rate_hz": 10.0,
        "frames": report["frames"],
        "live": report["live"],
        "latency_ms": report["latency_ms"],
    }
    if stages is not None:
        result.update(stages)
    print(json.dumps(result, indent=1))
    return 0


def _generated_setup(args, tmp: Path, frames: int) -> tuple[Path, Path, str, np.ndarray]:
    """A generated street as a bag and a random-weight checkpoint of ``args.config``."""
    seq_dir = generate_sequence(
        tmp / "kitti", SceneConfig(num_frames=frames, seed=5, image_size=tuple(args.image_hw), voxel_every=1),
        progress=False,
    )
    bag = tmp / "bag"
    convert_sequence(tmp / "kitti", "00", bag, progress=False)
    torch.manual_seed(0)
    ckpt = tmp / "model.pt"
    model = MonoOccStudent(get_model_config(args.config)).eval()
    save_checkpoint(ckpt, make_payload(model, args.config))
    if args.backend == "aotinductor":  # the node never compiles at start-up: `monoocc export` does
        export_backend("aotinductor", model, checkpoint_path=ckpt, image_hw=tuple(args.image_hw),
                       precision=args.precision, config_name=args.config)
    calib = read_calib(seq_dir / "calib.txt")
    _, T_cam_grid = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    return bag, ckpt, args.config, T_cam_grid


class _CpuSampler:
    """CPU seconds (user + system, all threads) of some processes, sampled every 0.1 s on a thread."""

    def __init__(self, pids: tuple[int, ...], period_s: float = 0.1):
        self.pids = pids
        self.samples: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)
        self._thread.start()

    def _cpu_s(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), {pid: self._cpu_s(pid) for pid in self.pids}))
            self._stop.wait(period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cores_between(self, start_s: float, end_s: float) -> tuple[dict[int, float], float]:
        """Mean cores used by each pid between the samples nearest ``start_s`` and ``end_s``."""
        a = min(self.samples, key=lambda s: abs(s[0] - start_s))
        b = min(self.samples, key=lambda s: abs(s[0] - end_s))
        span = b[0] - a[0]
        return {pid: (b[1][pid] - a[1][pid]) / span if span > 0 else float("nan") for pid in self.pids}, span


def _lateness(inputs: list[list[float]]) -> dict:
    """p50 and max of how late each image reached the node, against the replay's schedule.

    ``inputs``: [stamp_ns, arrival (monotonic s)] for every image the callback received. The replay
    plays at the recorded pace, so arrival − stamp is the same for frames delivered alike; each
    frame's lateness is its arrival − stamp less the smallest over the run (0 for the most punctual).
    """
    if not inputs:
        return {"p50": None, "max": None, "count": 0}
    offsets = np.array([arrived - stamp_ns / 1e9 for stamp_ns, arrived in inputs])
    lateness = 1e3 * (offsets - offsets.min())
    return {"p50": round(float(np.median(lateness)), 1), "max": round(float(lateness.max()), 1), "count": len(inputs)}


def _stage_summary(times_json: Path, sampler: _CpuSampler, node_pid: int) -> dict:
    """p50 and max of each part of the processed frames (ms), the gaps between their arrivals, and the
    CPU of node and evaluator meanwhile."""
    record = json.loads(times_json.read_text()) if times_json.is_file() else {"frames": []}
    frames = record["frames"]
    if not frames:
        return {"node_stages_ms": None, "note": "the node processed no frame"}
    p50 = lambda values: round(float(np.median(values)), 1)  # noqa: E731
    parts = {
        "wait_for_inference_thread": [f["start"] - f["arrived"] for f in frames],
        "decode_and_checks": [f["predict_start"] - f["start"] for f in frames],
        "model": [f["predict_end"] - f["predict_start"] for f in frames],
        "outputs_built_and_published": [f["publish_ms"] / 1e3 for f in frames],
        "rest_of_frame": [f["end"] - f["predict_end"] - f["publish_ms"] / 1e3 for f in frames],
        "arrival_to_published": [f["end"] - f["arrived"] for f in frames],
    }
    cores, span = sampler.cores_between(frames[0]["arrived"], frames[-1]["end"])
    return {
        "node_stages_ms": {name: p50([1e3 * v for v in values]) for name, values in parts.items()},
        # a stall (a frame far slower than the rest) shows here, not in the p50
        "node_stages_max_ms": {name: round(1e3 * max(values), 1) for name, values in parts.items()},
        "arrival_gaps_ms": [round(1e3 * (b["arrived"] - a["arrived"]), 1) for a, b in zip(frames, frames[1:])],
        "first_frame_model_ms": round(1e3 * parts["model"][0], 1),  # camera geometry when not warmed
        "model_stages_ms": {k: p50([f["model_ms"][k] for f in frames]) for k in frames[0]["model_ms"]},
        "input_lateness_ms": _lateness(record["inputs"]),
        "gc_pauses_ms": [
            [round(ms, 1), generation] for start, ms, generation in record["gc_pauses"]
            if frames[0]["arrived"] - 1.0 <= start <= frames[-1]["end"]
        ],
        "cpu_cores_in_replay": {
            "window_s": round(span, 2),
            "node": round(cores[node_pid], 2),
            "evaluator": round(cores[os.getpid()], 2),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
