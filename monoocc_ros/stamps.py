"""Message time stamps <-> integer nanoseconds, without ROS.

A ``builtin_interfaces/Time`` is ``sec`` (int32) + ``nanosec`` (uint32, < 1e9). Both ``rclpy``
messages and ``rosbags`` messages have those two attributes, so one duck-typed function serves
the node, the bag reader and the live evaluation. Building an rclpy ``Time`` needs the message
class and stays in :mod:`monoocc_ros.ros.conversions` (``ns_to_stamp``), on top of
:func:`split_ns`.

Example:
    >>> from types import SimpleNamespace
    >>> stamp_to_ns(SimpleNamespace(sec=1_700_000_000, nanosec=5))
    1700000000000000005
    >>> split_ns(1_700_000_000_000_000_005)
    (1700000000, 5)
    >>> split_ns(-1)  # before the epoch: nanosec stays in [0, 1e9), as in ROS
    (-1, 999999999)
"""

from __future__ import annotations

__all__ = ["NS_PER_S", "split_ns", "stamp_to_ns"]

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """Any object with ``sec`` and ``nanosec`` (rclpy or rosbags ``Time``) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def split_ns(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9``."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return sec, nanosec
