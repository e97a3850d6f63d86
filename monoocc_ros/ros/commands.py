"""The handler of ``monoocc replay``: play a rosbag2 over rclpy (for machines without ``ros2 bag play``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Play the bag of ``monoocc replay`` (parser: :mod:`monoocc_ros.cli.ros`); 2 for bad arguments."""
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
