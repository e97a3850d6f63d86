"""``monoocc convert-kitti``: one SemanticKITTI sequence to a rosbag2 folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _frame_range(text: str) -> range:
    """'START:STOP' (stop exclusive, either may be empty) or a single frame id."""
    try:
        if ":" in text:
            start, stop = text.split(":", 1)
            return range(int(start or 0), int(stop) if stop else sys.maxsize)
        return range(int(text), int(text) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"frame range must be START:STOP or N, got {text!r}"
        ) from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert-kitti",
        help="convert a SemanticKITTI sequence to a rosbag2 (MCAP) bag",
        description="Write image, camera_info, tf, LiDAR points and ground-truth occupancy of one "
        "SemanticKITTI sequence to a rosbag2 folder (stamps from times.txt). Frames with missing or "
        "bad files are listed and counted in a warning, the rest is written, and the exit status is 0; "
        "it is 1 only when no camera frame could be written, 2 for bad arguments or a bad calib/poses/times.",
    )
    p.add_argument("kitti_root", type=Path, help="dataset root holding sequences/")
    p.add_argument("sequence", help="sequence name, e.g. 08")
    p.add_argument("output", type=Path, help="bag folder to create")
    p.add_argument(
        "--frames", type=_frame_range, default=None, help="START:STOP (stop exclusive) or N"
    )
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument(
        "--image-format",
        choices=("raw", "png", "jpeg"),
        default="raw",
        help="raw = sensor_msgs/Image rgb8; png/jpeg = CompressedImage",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--queries", type=Path, default=None, metavar="DIR",
                   help="also record VoxFormer query proposals DIR/sequences/SS/queries/NNNNNN.query_<tag> "
                   "on /query_proposals, for evaluating an external-proposal checkpoint from the bag alone")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from monoocc_ros.data.converter import convert_sequence
    from monoocc_ros.data.kitti import KittiFormatError

    try:
        summary = convert_sequence(
            args.kitti_root,
            args.sequence,
            args.output,
            frames=args.frames,
            storage=args.storage,
            image_format=args.image_format,
            force=args.force,
            progress=not args.no_progress,
            queries=args.queries,
        )
    except (FileExistsError, FileNotFoundError, KittiFormatError, ValueError) as e:
        print(f"monoocc convert-kitti: error: {e}", file=sys.stderr)
        return 2
    print(summary)
    # A partial dataset (a missing scan, a truncated label) still gives a usable bag: that is a
    # warning with the count, not a failure; only a bag without a single camera frame fails.
    if not summary.usable:
        print(f"monoocc convert-kitti: error: {args.output} holds no camera frame: every image failed "
              "(problems above)", file=sys.stderr)
        return 1
    if not summary.complete:
        bad = summary.bad_frames
        print(f"monoocc convert-kitti: warning: {len(bad)} of {len(summary.frames)} frames have missing or "
              f"bad files (problems above); {args.output} holds everything else", file=sys.stderr)
    return 0
