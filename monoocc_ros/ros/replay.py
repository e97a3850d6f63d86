"""Play a rosbag2 over rclpy where ``ros2 bag play`` (rosbag2_py) is not installed.

Messages are read with ``rosbags`` and published as the recorded CDR bytes, unchanged, at the
recorded pace times ``rate``; ``clock=True`` also publishes /clock for nodes that run with
``use_sim_time``. Topics whose message package is not importable here (for example
``tf2_msgs`` from PyPI-only ROS) are skipped with one note each. Playing starts once every
played topic has a subscriber (or after ``wait_for_subscribers_s``, with one line naming the
topics nobody listens to): a fixed pause lost the first frames on a busy machine.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from monoocc_ros.stamps import split_ns

__all__ = ["ReplayConfig", "ReplaySummary", "replay_bag", "parse_remaps", "message_class", "wait_for_subscribers"]


@dataclass(frozen=True)
class ReplayConfig:
    """How to play a bag.

    Attributes:
        rate: playback speed factor (> 0; 2.0 = twice as fast).
        clock: publish /clock (rosgraph_msgs/Clock) with the bag time of every message.
        topics: play only these topics; empty = all.
        remaps: recorded topic -> published topic.
        wait_for_subscribers_s: wait at most this long for a subscriber on every played topic.
        start_delay_s: a further fixed wait before the first message.
    """

    rate: float = 1.0
    clock: bool = False
    topics: tuple[str, ...] = ()
    remaps: tuple[tuple[str, str], ...] = ()
    wait_for_subscribers_s: float = 10.0
    start_delay_s: float = 0.0


@dataclass
class ReplaySummary:
    """What was played: messages per published topic and topics skipped with the reason."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0


def parse_remaps(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``["from:=to", ...]`` -> ((from, to), ...).

    Raises:
        ValueError: an item without ``:=`` or with an empty side.
    """
    remaps = []
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"--remap {item!r}: expected FROM:=TO")
        remaps.append((src, dst))
    return tuple(remaps)


def message_class(msgtype: str):
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class, or None when not importable."""
    package, _, name = msgtype.rpartition("/")
    try:
        module = importlib.import_module(package.replace("/", "."))
    except ImportError:
        return None
    return getattr(module, name, None)


def _qos_for(topic: str):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    if topic.endswith("/tf_static"):
        return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def wait_for_subscribers(publishers: dict, timeout_s: float, log=print, poll_s: float = 0.02) -> list[str]:
    """Wait until every publisher (topic -> rclpy publisher) has a subscriber, at most ``timeout_s``.

    Returns the topics still without one, after logging one line naming them.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        missing = sorted(t for t, pub in publishers.items() if pub.get_subscription_count() == 0)
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if missing:
        log(
            f"replay: no subscriber on {', '.join(missing)} after {timeout_s:g} s; "
            "playing anyway, messages on them reach nobody"
        )
    return missing


def replay_bag(node, bag: Path, cfg: ReplayConfig, *, progress: bool = True, log=print) -> ReplaySummary:
    """Publish the messages of ``bag`` on ``node``'s publishers at the recorded pace.

    Args:
        node: an rclpy node to create the publishers on (it need not be spun).
        bag: rosbag2 folder (sqlite3 or MCAP).
        cfg: playback options.
        log: where the one-line notes go (skipped topics).

    Raises:
        ValueError: rate not positive, a negative wait, or a requested topic is not in the bag.
        FileNotFoundError: the bag folder does not exist.
    """
    from rosbags.rosbag2 import Reader

    if not cfg.rate > 0:
        raise ValueError(f"--rate must be > 0, got {cfg.rate}")
    if cfg.wait_for_subscribers_s < 0 or cfg.start_delay_s < 0:
        raise ValueError(f"--wait and --delay must be >= 0, got {cfg.wait_for_subscribers_s} and {cfg.start_delay_s}")
    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    remaps = dict(cfg.remaps)
    summary = ReplaySummary()
    with Reader(bag) as reader:
        present = {c.topic for c in reader.connections}
        missing = [t for t in cfg.topics if t not in present]
        if missing:
            raise ValueError(f"bag {bag}: topics {missing} not found; it has {sorted(present)}")
        publishers = {}
        connections = []
        for conn in reader.connections:
            if cfg.topics and conn.topic not in cfg.topics:
                continue
            cls = message_class(conn.msgtype)
            if cls is None:
                if conn.topic not in summary.skipped:
                    summary.skipped[conn.topic] = f"{conn.msgtype} is not importable here"
                    log(f"replay: skipping {conn.topic}: message type {conn.msgtype} is not installed")
                continue
            out_topic = remaps.get(conn.topic, conn.topic)
            if out_topic not in publishers:
                publishers[out_topic] = node.create_publisher(cls, out_topic, _qos_for(out_topic))
                summary.published[out_topic] = 0
            connections.append(conn)
        clock_pub = None
        if cfg.clock:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", 10)
        wait_for_subscribers(publishers, cfg.wait_for_subscribers_s, log)
        time.sleep(cfg.start_delay_s)
        total = sum(c.msgcount for c in connections)
        start_wall = time.monotonic()
        start_bag = None
        with tqdm(total=total, desc=f"replay {bag.name}", unit="msg", disable=not progress) as bar:
            for conn, bag_ns, raw in reader.messages(connections=connections):
                if start_bag is None:
                    start_bag = bag_ns
                delay = start_wall + (bag_ns - start_bag) / 1e9 / cfg.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if clock_pub is not None:
                    clock_pub.publish(Clock(clock=_time(*split_ns(bag_ns))))
                out_topic = remaps.get(conn.topic, conn.topic)
                # Recorded CDR bytes (with encapsulation header) are a serialized message as-is.
                publishers[out_topic].publish(bytes(raw))
                summary.published[out_topic] += 1
                bar.update()
        summary.duration_s = time.monotonic() - start_wall
    return summary


def _time(sec: int, nanosec: int):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def run_replay(bag: Path, cfg: ReplayConfig, *, progress: bool = True) -> ReplaySummary:
    """Init rclpy, play ``bag`` from a ``monoocc_replay`` node, shut down (Ctrl-C stops cleanly)."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("monoocc_replay")
    try:
        return replay_bag(node, bag, cfg, progress=progress, log=node.get_logger().info)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
