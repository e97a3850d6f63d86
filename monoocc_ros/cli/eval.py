"""``monoocc eval``: offline or live evaluation of a bag, comparison of two runs (the parser;
the handler is :func:`monoocc_ros.evaluation.commands.run`).

Examples::

    monoocc eval seq08 --checkpoint student.pt --out eval/seq08 --render-every 10
    monoocc eval seq08 --checkpoint student.pt --out eval/seq08 --export-submission sub --sequence 08
    monoocc eval seq08 --checkpoint student.pt --out eval/new --compare eval/old/metrics.json
    monoocc eval seq08 --checkpoint student.pt --out eval/ort --backend onnxruntime   # the node's ONNX graph
    monoocc eval --compare eval/old/metrics.json eval/new/metrics.json
    monoocc eval seq08 --map --checkpoint student.pt --out eval/map   # fused map vs single frames
    monoocc eval --export-submission sub --submission-zip sub.zip     # pack sequences 11-21 for the benchmark
    # with the node running (launch/monoocc.launch.py remaps its inputs to the bag's topics):
    monoocc eval seq08 --live --checkpoint student.pt --out eval/live    # terminal 1
    ros2 bag play seq08 --clock --rate 0.5                               # terminal 2
    monoocc eval seq08 --live --replay --rate 0.5 --out eval/live   # where `ros2 bag play` is absent
"""

from __future__ import annotations

from pathlib import Path

from monoocc_ros import topics
from monoocc_ros.cli.formatter import DefaultsHelpFormatter
from monoocc_ros.cli.handlers import Handler
from monoocc_ros.evaluation.live import NODE_OUTPUT
from monoocc_ros.inference.backends import BACKENDS

__all__ = ["register"]


def register(subparsers) -> None:
    """Add the ``eval`` subcommand to the ``monoocc`` parser."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint or the running node on a bag (SSC IoU / mIoU, latency, renders)",
        description="Offline: every ground-truth frame of BAG through the checkpoint (deterministic). "
        "Live (--live): score the node's output topic against the bag's ground truth while the bag "
        "is replayed. Writes metrics.json, table.md (MonoOcc Table I layout) and class_iou.png to --out.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("bag", nargs="?", type=Path, help="rosbag2 folder with image, camera_info, TF and ground truth")
    p.add_argument("--checkpoint", type=Path, help="project checkpoint (offline: required; live: recorded by hash)")
    p.add_argument("--out", type=Path, help="output folder for the report artifacts")
    p.add_argument("--device", default="cpu", help="torch device of the predictor (offline)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"), help="predictor precision")
    p.add_argument("--backend", default="eager", choices=BACKENDS,
                   help="offline inference backend, as the node's `backend` parameter: the ahead-of-time ones are "
                   "built for the bag's image size and cached next to the checkpoint")
    p.add_argument("--render-every", type=int, default=0, metavar="N",
                   help="render camera | prediction | ground truth for every N-th ground-truth frame (0: none)")
    p.add_argument("--export-submission", type=Path, metavar="DIR",
                   help="also write predictions as DIR/sequences/SS/predictions/XXXXXX.label (offline)")
    p.add_argument("--sequence", default=None,
                   help="two-digit KITTI sequence for --export-submission (default: from the bag's metadata)")
    p.add_argument("--submission-zip", type=Path, metavar="ZIP",
                   help="pack DIR's sequences 11-21 into the zip the SemanticKITTI benchmark takes and list "
                   "the sequences still missing (with BAG: after exporting it; without BAG: only pack DIR)")
    p.add_argument("--compare", type=Path, nargs="+", metavar="JSON",
                   help="one report: compare this run with it; two reports (no BAG): only compare them")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--map", action="store_true",
                   help="fuse every frame into the semantic map at its /tf pose and score the map against single "
                   "frames on each frame's observed region; writes map_metrics.json, map_table.md, map_topview.png")
    p.add_argument("--queries", type=Path, metavar="DIR",
                   help="VoxFormer query proposals DIR/sequences/SS/queries/NNNNNN.query_<tag> for a checkpoint "
                   "converted with --proposal-mode external (the official protocol; SS from --sequence or the bag)")
    p.add_argument("--calibration", action="store_true",
                   help="offline: report the expected calibration error of the published confidence before and "
                   "after the checkpoint's temperature (a second prediction per frame)")
    live = p.add_argument_group("live evaluation (needs rclpy)")
    live.add_argument("--live", action="store_true", help="score the running node's output instead of a local predictor")
    live.add_argument("--output-topic", default=NODE_OUTPUT, help="the node's occupancy output topic")
    live.add_argument("--ground-truth-topic", default=topics.GROUND_TRUTH, help="the bag's ground-truth topic")
    live.add_argument("--image-topic", default=topics.IMAGE,
                      help="the node's image input: where --replay publishes the bag's images")
    live.add_argument("--camera-info-topic", default=topics.CAMERA_INFO,
                      help="the node's CameraInfo input: counted as input frames, and where --replay publishes it")
    live.add_argument("--replay", action="store_true",
                      help="replay BAG from this command over rclpy (where `ros2 bag play` is absent)")
    live.add_argument("--rate", type=float, default=1.0, help="replay rate for --replay")
    live.add_argument("--idle-timeout", type=float, default=10.0,
                      help="stop after this many seconds without any message once the first arrived")
    live.add_argument("--start-timeout", type=float, default=60.0,
                      help="give up when nothing arrives for this many seconds after start")
    p.set_defaults(func=Handler("monoocc_ros.evaluation.commands:run"))
