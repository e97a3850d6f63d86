"""The handler of ``monoocc eval`` (its parser is :mod:`monoocc_ros.cli.eval`, with examples):
checks the argument combinations, then runs offline, live or map evaluation, a comparison of two
reports or the packing of a submission zip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["run"]


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
