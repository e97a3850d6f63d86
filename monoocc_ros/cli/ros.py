"""``monoocc replay``: the parser (handler: :func:`monoocc_ros.ros.commands.run`, which needs rclpy).

Example::

    monoocc replay bags/seq08 --clock --rate 0.5
"""

from __future__ import annotations

from pathlib import Path

from monoocc_ros.cli.handlers import Handler

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``monoocc replay``."""
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
    parser.set_defaults(func=Handler("monoocc_ros.ros.commands:run"))
