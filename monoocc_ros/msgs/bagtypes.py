"""The ``rosbags`` typestore of the project: ROS 2 Jazzy plus ``monoocc_ros/msg/SemanticOccupancyGrid``.

Bags are read and written without ROS through this typestore; the node uses the generated
rclpy class of the same ``.msg`` file, so both sides agree on the bytes.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from monoocc_ros import topics

__all__ = ["MSG_FILE", "find_msg_file", "typestore"]

MSG_FILE = "SemanticOccupancyGrid.msg"


def find_msg_file() -> Path:
    """Locate ``msg/SemanticOccupancyGrid.msg``: source checkout first, then the ament share dir."""
    candidates = [Path(__file__).resolve().parents[2] / "msg" / MSG_FILE]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "monoocc_ros" / "msg" / MSG_FILE)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{MSG_FILE} not found; looked in {[str(p) for p in candidates]}")


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Jazzy typestore of ``rosbags`` with ``monoocc_ros/msg/SemanticOccupancyGrid``."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(find_msg_file().read_text(), topics.GRID_MSG_TYPE))
    return store
