"""The handler of ``monoocc convert-kitti`` (parser: :mod:`monoocc_ros.cli.data`): one SemanticKITTI
sequence to a rosbag2 folder."""

from __future__ import annotations

import argparse
import sys

__all__ = ["run_convert"]


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
