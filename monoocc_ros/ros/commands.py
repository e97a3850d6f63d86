"""``monoocc replay``: play a rosbag2 over rclpy (for machines without ``ros2 bag play``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="play a rosbag2 over rclpy (where ros2 bag play is not installed)",
        description="Publish a rosbag2's messages as recorded (CDR bytes) at the recorded pace.",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or MCAP)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="play only these topics")
    parser.add_argument(
        "--remap", action="append", default=[], metavar="FROM:=TO", help="publish topic FROM as TO (repeatable)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="wait at most this many seconds for a subscriber on every played topic (default 10)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="further seconds to wait before playing (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from monoocc_ros.ros.replay import ReplayConfig, parse_remaps, run_replay

    try:
        cfg = ReplayConfig(
            rate=args.rate,
            clock=args.clock,
            topics=tuple(args.topics),
            remaps=parse_remaps(args.remap),
            wait_for_subscribers_s=args.wait,
            start_delay_s=args.delay,
        )
        summary = run_replay(args.bag, cfg, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"monoocc replay: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    counts = ", ".join(f"{t}: {n}" for t, n in sorted(summary.published.items()))
    print(f"replayed {sum(summary.published.values())} messages in {summary.duration_s:.1f} s ({counts})")
    return 0
