"""``monoocc generate-scene`` and ``monoocc convert-kitti``: the parsers of the data jobs.

Handlers: :func:`monoocc_ros.data.scene.run_command` writes a synthetic sequence,
:func:`monoocc_ros.data.commands.run_convert` converts a SemanticKITTI sequence to a bag.

Example::

    monoocc generate-scene data/synth --frames 40 --sequence 08
    monoocc convert-kitti data/synth 08 bags/seq08 --frames 0:20 --image-format png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monoocc_ros.cli.handlers import Handler

__all__ = ["frame_range", "register", "register_convert", "register_generate_scene"]


def register(subparsers) -> None:
    """Add both data subcommands, in the order of the workflow."""
    register_generate_scene(subparsers)
    register_convert(subparsers)


def register_generate_scene(subparsers) -> None:
    """Add ``monoocc generate-scene`` to the command's subparsers."""
    from monoocc_ros.data.scene import SceneConfig  # numpy only; the defaults live in the config

    defaults = SceneConfig()
    p = subparsers.add_parser(
        "generate-scene",
        help="generate a synthetic street sequence in the SemanticKITTI layout",
        description="Generate a seeded synthetic street sequence (camera images, LiDAR scans "
        "with point labels, voxel labels/.bin/.invalid/.occluded, calib, poses, times) in the "
        "SemanticKITTI layout under OUT/sequences/SEQUENCE.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="dataset root folder")
    p.add_argument("--frames", type=int, default=defaults.num_frames, help="number of frames")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    p.add_argument("--sequence", default="00", help="sequence folder name (default 00)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   default=list(defaults.image_size), help="camera image height and width")
    p.add_argument("--voxel-every", type=int, default=defaults.voxel_every,
                   help="write voxel files every K frames")
    p.add_argument("--force", action="store_true", help="replace an existing sequence folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=Handler("monoocc_ros.data.scene:run_command"))


def frame_range(text: str) -> range:
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


def register_convert(subparsers) -> None:
    """Add ``monoocc convert-kitti``."""
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
        "--frames", type=frame_range, default=None, help="START:STOP (stop exclusive) or N"
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
    p.set_defaults(func=Handler("monoocc_ros.data.commands:run_convert"))
