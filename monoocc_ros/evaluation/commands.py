"""``monoocc eval``: offline or live evaluation of a bag, comparison of two runs.

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

import argparse
import sys
from pathlib import Path

from monoocc_ros import topics
from monoocc_ros.cli_help import DefaultsHelpFormatter
from monoocc_ros.evaluation.live import NODE_OUTPUT
from monoocc_ros.inference.backends import BACKENDS

__all__ = ["register", "run"]


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
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"monoocc eval: error: {msg}", file=sys.stderr)
    return 2


def _compare(a_path: Path, b_path: Path) -> int:
    from monoocc_ros.evaluation.report import compare_table, load_report

    try:
        a, b = load_report(a_path), load_report(b_path)
    except ValueError as e:
        return _fail(str(e))
    print(compare_table(a, b, names=(str(a_path), str(b_path))), end="")
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``monoocc eval``."""
    compare = args.compare or []
    if len(compare) > 2:
        return _fail("--compare takes one report (with BAG) or two reports (without BAG)")
    if args.submission_zip is not None and args.export_submission is None:
        return _fail("--submission-zip packs the folder of --export-submission DIR: give it too")
    if args.bag is None:
        if len(compare) == 2:
            return _compare(*compare)
        if args.submission_zip is not None:
            return _pack_submission(args.export_submission, args.submission_zip)
        return _fail("BAG is required (or give two reports to --compare, or --export-submission and --submission-zip)")
    if len(compare) == 2:
        return _fail("--compare with BAG takes one report: the run to compare this evaluation with")
    if args.out is None:
        return _fail("--out is required")
    if not args.bag.exists():
        return _fail(f"bag {args.bag} not found")
    if args.render_every < 0:
        return _fail(f"--render-every must be >= 0, got {args.render_every}")
    if args.backend != "eager" and (args.map or args.live):
        return _fail(f"--backend {args.backend} is for offline evaluation (live: the node's `backend` parameter; "
                     "--map: eager)")
    if args.map:
        return _run_map(args)
    if args.live:
        report = _run_live(args)
    else:
        report = _run_offline(args)
    if isinstance(report, int):
        return report
    _print_summary(report, args.out)
    if args.export_submission is not None:
        _print_submission(args)
        if args.submission_zip is not None and (rc := _pack_submission(args.export_submission, args.submission_zip)):
            return rc
    if compare:
        return _compare(compare[0], args.out / "metrics.json")
    return 0


def _run_map(args: argparse.Namespace) -> int:
    from monoocc_ros.evaluation.map_eval import MapEvalConfig, map_table, run_map_eval

    if args.live or args.export_submission is not None or args.compare:
        return _fail("--map runs on its own (no --live, --export-submission or --compare)")
    if args.checkpoint is None:
        return _fail("--checkpoint is required for --map")
    if not args.checkpoint.is_file():
        return _fail(f"checkpoint {args.checkpoint} not found")
    try:
        cfg = MapEvalConfig(device=args.device, precision=args.precision, progress=not args.no_progress)
        report = run_map_eval(args.bag, args.checkpoint, args.out, cfg)
    except ValueError as e:
        return _fail(str(e))
    print(map_table(report), end="")
    for problem in report["problems"]:
        print(f"problem: {problem}")
    print(f"report written to {args.out} (top view: {args.out / report['topview']})")
    return 0


def _run_offline(args: argparse.Namespace):
    from monoocc_ros.evaluation.offline import OfflineConfig, run_offline

    if args.checkpoint is None:
        return _fail("--checkpoint is required for offline evaluation")
    if not args.checkpoint.is_file():
        return _fail(f"checkpoint {args.checkpoint} not found")
    try:
        cfg = OfflineConfig(
            device=args.device,
            precision=args.precision,
            render_every=args.render_every,
            export_dir=args.export_submission,
            sequence=args.sequence,
            progress=not args.no_progress,
            calibration=args.calibration,
            queries=args.queries,
            backend=args.backend,
        )
        return run_offline(args.bag, args.checkpoint, args.out, cfg)
    except ValueError as e:
        return _fail(str(e))


def _run_live(args: argparse.Namespace):
    from monoocc_ros.evaluation.live import LiveConfig
    from monoocc_ros.ros.live_eval import run_live

    if args.export_submission is not None or args.render_every:
        return _fail("--export-submission and --render-every need offline evaluation (drop --live)")
    try:
        cfg = LiveConfig(
            output_topic=args.output_topic,
            ground_truth_topic=args.ground_truth_topic,
            image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic,
            idle_timeout_s=args.idle_timeout,
            start_timeout_s=args.start_timeout,
        )
        return run_live(
            args.bag, args.out, cfg, checkpoint_path=args.checkpoint,
            replay=args.replay, replay_rate=args.rate, progress=not args.no_progress,
        )
    except ValueError as e:
        return _fail(str(e))


def _print_submission(args: argparse.Namespace) -> None:
    """Say where the exported predictions are: folder and file count."""
    from monoocc_ros.evaluation.offline import bag_sequence

    folder = args.export_submission / "sequences" / (args.sequence or bag_sequence(args.bag)) / "predictions"
    print(f"submission: {sum(1 for _ in folder.glob('*.label'))} predictions in {folder}")


def _pack_submission(root: Path, zip_path: Path) -> int:
    from monoocc_ros.evaluation.submission import write_submission_zip

    if not (root / "sequences").is_dir():
        return _fail(f"{root}: no sequences/ folder to pack (write it with --export-submission)")
    try:
        packed = write_submission_zip(root, zip_path)
    except ValueError as e:
        return _fail(str(e))
    counts = ", ".join(f"{s}: {n}" for s, n in packed.predictions.items()) or "none"
    print(f"submission zip: {packed.path} (predictions per sequence {counts})")
    if packed.left_out:
        print(f"submission zip: left out sequences {', '.join(packed.left_out)}: the benchmark scores only 11-21")
    if packed.missing:
        print(f"submission zip: warning: no predictions for sequences {', '.join(packed.missing)}; the benchmark "
              "needs all of 11-21 (export each with --export-submission to the same DIR, then pack again)",
              file=sys.stderr)
    return 0


def _print_summary(report: dict, out: Path) -> None:
    from monoocc_ros.evaluation.report import markdown_table

    print(markdown_table([(report["mode"], report)]), end="")
    frames = ", ".join(f"{k} {v}" for k, v in report["frames"].items())
    print(f"frames: {frames}")
    total = report.get("latency_ms", {}).get("total")
    if total:
        print(f"latency total ms: p50 {total['p50']:.1f}  p90 {total['p90']:.1f}  p99 {total['p99']:.1f}")
    for problem in report.get("problems", []):
        print(f"problem: {problem}")
    print(f"report written to {out}")
