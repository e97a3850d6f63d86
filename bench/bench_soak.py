"""Soak: the node under a steady 10 Hz camera for ten minutes; every frame accounted for, RSS over time.

Starts the node (``python -m monoocc_ros.ros.node``, default input parameters) on a checkpoint
(``--checkpoint``, else a randomly initialised ``tiny_per_voxel`` written to a temporary folder),
publishes a real KITTI frame (resized to ``--image-hw``, K scaled) with its CameraInfo at ``--rate-hz``
over real DDS, reads the node's counters from /diagnostics and samples the node's resident memory
every second. Prints one JSON object: frames sent, processed, dropped (lost in transport included),
rejected, whether processed + dropped + rejected + tf failures = sent, p50 processing time, and RSS
(start, end, max, growth, a sample every ``--rss-every-s``).

    python bench/bench_soak.py [--seconds 600] [--rate-hz 10] [--image-hw 185x613] [--checkpoint PATH] [--quick]

Not run by ``make test`` (ten minutes); ``--quick`` (what ``monoocc bench --quick`` passes) runs 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import _frame  # noqa: E402 - the same real frame as the inference benchmark

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _random_checkpoint(folder: Path) -> Path:
    import torch

    from monoocc_ros.models.checkpoint import make_payload, save_checkpoint
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    torch.manual_seed(0)
    return save_checkpoint(folder / "tiny_per_voxel.pt", make_payload(MonoOccStudent(get_model_config("tiny_per_voxel")), "tiny_per_voxel"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--image-hw", default="185x613")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--backend", default="eager", help="the node's backend parameter (artefacts as the node finds them)")
    parser.add_argument("--precision", default="fp32", help="the node's precision parameter")
    parser.add_argument("--rss-every-s", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="30 s instead of the full soak (checks that it works)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rss_every_s = 30.0, 5.0

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tqdm import tqdm

    from monoocc_ros.ros.params import double_list_value

    h, w = (int(v) for v in args.image_hw.lower().split("x"))
    image, K, T, source = _frame((h, w))
    domain = 150 + os.getpid() % 80
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or _random_checkpoint(Path(tmp))
        matrix = double_list_value(T)
        node = subprocess.Popen(
            [sys.executable, "-m", "monoocc_ros.ros.node", "--ros-args",
             "--params-file", str(ROOT / "config" / "monoocc.yaml"),
             "-p", f"checkpoint_path:={checkpoint}", "-p", "device:=cpu",
             "-p", f"precision:={args.precision}", "-p", f"backend:={args.backend}",
             "-p", f"warmup_image_size:=[{h}, {w}]",
             "-p", f"static_T_cam_grid.matrix:={matrix}", "-r", "__node:=monoocc_soak_node",
             "-r", "~/input/image:=/soak/image", "-r", "~/input/camera_info:=/soak/camera_info"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        rclpy.init(domain_id=domain)
        pub_node = rclpy.create_node("monoocc_soak_camera")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        image_pub = pub_node.create_publisher(Image, "/soak/image", qos)
        info_pub = pub_node.create_publisher(CameraInfo, "/soak/camera_info", qos)
        latest: dict[str, str] = {}

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if "monoocc_soak_node" in status.hardware_id or "monoocc_soak_node" in status.name:
                    latest.clear()
                    latest.update({kv.key: kv.value for kv in status.values})

        pub_node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        executor = SingleThreadedExecutor()
        executor.add_node(pub_node)
        try:
            deadline = time.monotonic() + 180
            while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                if node.poll() is not None:
                    raise SystemExit(f"bench_soak: the node exited at start-up: {node.stderr.read()[-2000:]}")
                executor.spin_once(timeout_sec=0.1)
            msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=image.tobytes())
            msg.header.frame_id = "camera_optical"
            info = CameraInfo(height=h, width=w, k=[float(v) for v in K.ravel()], distortion_model="plumb_bob")
            info.header.frame_id = "camera_optical"
            sent, rss, start = 0, [], time.monotonic()
            next_rss = start
            period = 1.0 / args.rate_hz
            total = int(args.seconds * args.rate_hz)
            for i in tqdm(range(total), desc="soak", file=sys.stderr, mininterval=5):
                target = start + i * period
                while (now := time.monotonic()) < target:
                    executor.spin_once(timeout_sec=min(0.02, target - now))
                stamp = pub_node.get_clock().now().to_msg()
                msg.header.stamp = info.header.stamp = stamp
                info_pub.publish(info)
                image_pub.publish(msg)
                sent += 1
                if now >= next_rss:
                    rss.append((round(now - start, 1), round(_rss_mb(node.pid), 1)))
                    next_rss += args.rss_every_s
            # let the last frame finish and the counters reach /diagnostics
            settle = time.monotonic() + 60
            def accounted() -> int:
                keys = ("processed", "dropped", "rejected", "tf_failures")
                return sum(int(latest.get(k, 0)) for k in keys)

            while time.monotonic() < settle and (accounted() < sent or not latest):
                executor.spin_once(timeout_sec=0.1)
            for _ in range(15):  # one more diagnostics tick
                executor.spin_once(timeout_sec=0.1)
            rss.append((round(time.monotonic() - start, 1), round(_rss_mb(node.pid), 1)))
        finally:
            node.terminate()
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
            executor.shutdown()
            pub_node.destroy_node()
            rclpy.try_shutdown()
    values = [m for _, m in rss]
    counts = {k: int(latest.get(k, 0)) for k in ("received", "processed", "dropped", "lost_in_transport", "rejected", "tf_failures")}
    report = {
        "benchmark": "soak",
        "quick": args.quick,
        "seconds": args.seconds,
        "rate_hz": args.rate_hz,
        "image_hw": [h, w],
        "frame": source,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "random tiny_per_voxel",
        "backend": args.backend,
        "precision": args.precision,
        "sent": sent,
        **counts,
        "all_accounted": counts["processed"] + counts["dropped"] + counts["rejected"] + counts["tf_failures"] == sent,
        "processed_hz": round(counts["processed"] / args.seconds, 2),
        "mean_processing_ms": float(latest.get("processing_time_ms", "nan")),
        "rss_mb": {"start": values[0], "end": values[-1], "max": max(values), "growth": round(values[-1] - values[0], 1),
                   "samples": rss},
        "load_average": list(os.getloadavg()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
