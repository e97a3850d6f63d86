"""End-to-end node latency at the recorded 10 Hz: image stamp -> occupancy published, and drops.

A generated street is converted to a bag, the node runs as its own process on a model with
random weights (latency does not depend on the weights), the bag is replayed into it over
DDS at its recorded rate, and the live evaluator measures what came out: achieved rate,
dropped and missed frames, end-to-end latency percentiles. Prints one JSON object.

    python bench/bench_node_replay.py [--config tiny] [--frames 30] [--image-hw 185 613] [--device cpu] \
        [--backend eager|onnxruntime|aotinductor] [--precision fp32|bf16]
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
from pathlib import Path

import torch

from monoocc_ros.camera import kitti_camera_from_calib
from monoocc_ros.data.converter import convert_sequence
from monoocc_ros.data.kitti import read_calib
from monoocc_ros.data.scene import SceneConfig, generate_sequence
from monoocc_ros.evaluation.live import LiveConfig
from monoocc_ros.inference import BACKENDS, export_backend
from monoocc_ros.ros.live_eval import run_live
from monoocc_ros.models.checkpoint import make_payload, save_checkpoint
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
    args = parser.parse_args()
    frames = 10 if args.quick else args.frames

    with tempfile.TemporaryDirectory(prefix="bench_node_replay_") as tmp:
        tmp = Path(tmp)
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

        env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 80))
        node = subprocess.Popen(
            [
                sys.executable, "-m", "monoocc_ros.ros.node", "--ros-args",
                "--params-file", str(REPO / "config" / "monoocc.yaml"),
                "-p", f"checkpoint_path:={ckpt}", "-p", f"config_name:={args.config}",
                "-p", f"device:={args.device}", "-p", f"precision:={args.precision}", "-p", f"backend:={args.backend}",
                "-p", "input_qos:=reliable",
                "-p", f"warmup_image_size:=[{args.image_hw[0]}, {args.image_hw[1]}]",
                "-p", "static_T_cam_grid.matrix:=[" + ", ".join(repr(float(v)) for v in T_cam_grid.ravel()) + "]",
                "-r", "__node:=monoocc_node",
                "-r", "~/input/image:=/camera/image_raw", "-r", "~/input/camera_info:=/camera/camera_info",
            ],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
        try:
            report = run_live(
                bag, tmp / "live", LiveConfig(start_timeout_s=180.0),
                checkpoint_path=ckpt, replay=True, replay_rate=1.0, progress=False,
            )
        finally:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()

    result = {
        "bench": "node_replay",
        "config": args.config,
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
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
