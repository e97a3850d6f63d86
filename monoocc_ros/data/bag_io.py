"""The frame index of a rosbag2 in the project's layout, read without ROS.

The bags follow :mod:`monoocc_ros.topics`; their messages are built by
:mod:`monoocc_ros.msgs.bag_messages` and decoded by :mod:`monoocc_ros.msgs.decode` through the
typestore of :mod:`monoocc_ros.msgs.bagtypes`. :func:`read_bag_frames` reads a bag once, keeps only
small things (stamps, intrinsics, transforms, where each message lies) and loads images, points
and ground truth on demand, so it can serve a ``DataLoader`` with workers: every process opens
its own reader lazily.

Example:
    >>> index = read_bag_frames(Path("seq08"), require_ground_truth=True)   # doctest: +SKIP
    >>> frame = index.load(0); frame.ground_truth.shape                       # doctest: +SKIP
    (256, 256, 32)
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monoocc_ros import topics
from monoocc_ros.camera import CameraInfoReader, invert_rigid
from monoocc_ros.errors import UserError
from monoocc_ros.grid import KITTI_GRID_HALF
from monoocc_ros.msgs.bagtypes import typestore
from monoocc_ros.msgs.decode import decode_camera_info, decode_grid, decode_points, decode_transform
from monoocc_ros.msgs.image import decode_message
from monoocc_ros.stamps import stamp_to_ns

__all__ = [
    "KITTI_FRAMES_KEY",
    "BagFrame",
    "BagIndex",
    "BagReadError",
    "FrameRecord",
    "MsgRef",
    "read_bag_frames",
]

KITTI_FRAMES_KEY = "monoocc_ros/kitti_frames"
"""Bag metadata ``custom_data`` key: JSON {"sequence", "frames", "stamps_ns"} of a converted bag."""


class BagReadError(UserError, RuntimeError):
    """The bag cannot be opened or read at all; the message names the bag."""


@dataclass(frozen=True)
class MsgRef:
    """Where a message lies: topic, bag receive time and its rank among same-time messages."""

    topic: str
    log_time_ns: int
    ordinal: int


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """What the index keeps per camera frame (small; images are loaded on demand)."""

    stamp_ns: int
    image: MsgRef
    K: np.ndarray
    image_hw: tuple[int, int]
    T_cam_grid: np.ndarray
    T_odom_grid: np.ndarray | None
    ground_truth: MsgRef | None
    points: MsgRef | None
    kitti_frame: int | None = None
    proposals: MsgRef | None = None


@dataclass(frozen=True, eq=False)
class BagFrame:
    """One camera frame of a bag.

    Attributes:
        stamp_ns: image header stamp.
        image: (H, W, 3) uint8 RGB.
        K: (3, 3) float64 intrinsics from CameraInfo.
        T_cam_grid: (4, 4) float64 grid (velodyne) frame -> camera optical frame, from TF.
        ground_truth: (256, 256, 32) uint8 train ids, 255 = invalid; None without ground truth.
        index: KITTI frame id for bags written by ``convert-kitti`` (bag metadata), else the
            position of the frame among all camera frames of the bag.
    """

    stamp_ns: int
    image: np.ndarray
    K: np.ndarray
    T_cam_grid: np.ndarray
    ground_truth: np.ndarray | None
    index: int
    proposals: np.ndarray | None = None


@dataclass(eq=False)
class BagIndex:
    """Camera frames of one bag, with the problems met while indexing it.

    Iterating yields :class:`BagFrame` for the selected frames (all camera frames, or only
    those with ground truth when indexed with ``require_ground_truth``).

    Attributes:
        bag: the bag folder.
        records: every usable camera frame, in stamp order.
        selected: positions in ``records`` that iteration yields.
        problems: human-readable descriptions of what was skipped and why.
    """

    bag: Path
    records: list[FrameRecord]
    selected: list[int]
    problems: list[str] = field(default_factory=list)
    _reader: object = field(default=None, repr=False)
    _reader_pid: int = field(default=-1, repr=False)

    def __len__(self) -> int:
        return len(self.selected)

    def __iter__(self) -> Iterator[BagFrame]:
        for i in self.selected:
            yield self.load_record(i)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"], state["_reader_pid"] = None, -1  # open handles do not cross processes
        return state

    def __del__(self):
        self.close()

    def close(self) -> None:
        if self._reader is not None and self._reader_pid == os.getpid():
            self._reader.close()
        self._reader = None

    def _open(self):
        if self._reader is None or self._reader_pid != os.getpid():
            from rosbags.rosbag2 import Reader

            self._reader = Reader(self.bag)
            self._reader.open()
            self._reader_pid = os.getpid()
        return self._reader

    def read(self, ref: MsgRef):
        """Deserialize the message ``ref`` points at."""
        reader = self._open()
        conns = [c for c in reader.connections if c.topic == ref.topic]
        msgs = reader.messages(conns, start=ref.log_time_ns, stop=ref.log_time_ns + 1)
        for k, (conn, _, raw) in enumerate(msgs):
            if k == ref.ordinal:
                return typestore().deserialize_cdr(raw, conn.msgtype)
        raise BagReadError(f"{self.bag}: message {ref} disappeared from the bag")

    def load(self, i: int) -> BagFrame:
        """The i-th selected frame."""
        return self.load_record(self.selected[i])

    def load_image(self, record_index: int) -> np.ndarray:
        return decode_message(self.read(self.records[record_index].image))

    def load_points(self, record_index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(P, 4) float32 scan and (P,) uint32 raw labels, or None without a point cloud."""
        ref = self.records[record_index].points
        return None if ref is None else decode_points(self.read(ref))

    def load_ground_truth(self, record_index: int) -> np.ndarray | None:
        ref = self.records[record_index].ground_truth
        return None if ref is None else decode_grid(self.read(ref))

    def load_proposals(self, record_index: int) -> np.ndarray | None:
        """(128, 128, 16) bool query proposals recorded for the frame, or None."""
        ref = self.records[record_index].proposals
        return None if ref is None else decode_grid(self.read(ref), KITTI_GRID_HALF) > 0

    def load_record(self, record_index: int) -> BagFrame:
        rec = self.records[record_index]
        return BagFrame(
            stamp_ns=rec.stamp_ns,
            image=self.load_image(record_index),
            K=rec.K.copy(),
            T_cam_grid=rec.T_cam_grid.copy(),
            ground_truth=self.load_ground_truth(record_index),
            index=record_index if rec.kitti_frame is None else rec.kitti_frame,
            proposals=self.load_proposals(record_index),
        )


def _time_windows(reader) -> list[tuple[int | None, int | None]]:
    """Disjoint time windows, one per MCAP chunk where the storage exposes chunks.

    Reading window by window confines a corrupt chunk to its own window: the messages of every
    other chunk still come through.
    """
    storages = getattr(reader.storage, "storages", [reader.storage])
    starts = sorted(
        {c.message_start_time for s in storages for c in (getattr(s, "chunks", None) or [])}
    )
    if len(starts) < 2:
        return [(None, None)]
    bounds = [None, *starts[1:], None]
    return list(zip(bounds[:-1], bounds[1:]))


def _fmt_ns(ns: int | None) -> str:
    return "end" if ns is None else f"{ns / 1e9:.6f} s"


def read_bag_frames(bag: Path, *, require_ground_truth: bool = False) -> BagIndex:
    """Index the camera frames of a bag written in the project's layout.

    Every message is deserialized once to find corrupt ones; only stamps, intrinsics,
    transforms and message positions are kept. Frames need an image, a CameraInfo (same
    stamp, or the latest before) and the static TF from the grid frame to the camera.

    Args:
        bag: rosbag2 folder (MCAP or sqlite3).
        require_ground_truth: yield only frames that have a ground-truth grid.

    Returns:
        The index; ``problems`` lists missing topics, unsorted or duplicate stamps, ground
        truth without an image, and corrupt messages (topic, index, stamp), all skipped.

    Raises:
        BagReadError: the bag does not exist or cannot be opened.
    """
    from rosbags.rosbag2 import Reader

    bag = Path(bag)
    if not bag.exists():
        raise BagReadError(f"{bag}: bag not found")
    if bag.is_dir() and not (bag / "metadata.yaml").is_file():
        raise BagReadError(f"{bag}: not a rosbag2 folder (it has no metadata.yaml)")
    store = typestore()
    problems: list[str] = []
    images: list[tuple[int, MsgRef, tuple[int, int], str]] = []
    infos: dict[int, tuple[np.ndarray, tuple[int, int], str]] = {}
    camera = CameraInfoReader(f"{bag}: {topics.CAMERA_INFO}", warn=problems.append)
    static: dict[str, tuple[str, np.ndarray]] = {}
    odom: dict[int, np.ndarray] = {}
    gts: dict[int, MsgRef] = {}
    points: dict[int, MsgRef] = {}
    proposals: dict[int, MsgRef] = {}
    counts: dict[str, int] = defaultdict(int)
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as e:
        raise BagReadError(f"{bag}: cannot open bag ({type(e).__name__}: {e})") from e
    try:
        ordinals: dict[tuple[str, int], int] = defaultdict(int)
        for start, stop in _time_windows(reader):
            try:
                for conn, log_time, raw in reader.messages(start=start, stop=stop):
                    topic = conn.topic
                    n = counts[topic]
                    counts[topic] += 1
                    ref = MsgRef(topic, log_time, ordinals[(topic, log_time)])
                    ordinals[(topic, log_time)] += 1
                    try:
                        msg = store.deserialize_cdr(raw, conn.msgtype)
                        _index_message(msg, ref, images, infos, static, odom, gts, points, proposals, camera)
                    except Exception as e:  # any decoding failure: report and keep going
                        problems.append(
                            f"{bag}: {topic} message #{n} at {_fmt_ns(log_time)} skipped "
                            f"({type(e).__name__}: {e})"
                        )
            except Exception as e:
                problems.append(
                    f"{bag}: messages from {_fmt_ns(start)} to {_fmt_ns(stop)} unreadable, skipped "
                    f"({type(e).__name__}: {e})"
                )
    finally:
        reader.close()
    present = set(counts)
    for topic in (topics.CAMERA_INFO, topics.TF_STATIC):
        if topic not in present:
            problems.append(f"{bag}: topic {topic} missing (no readable message)")
    if topics.IMAGE not in present and topics.IMAGE_COMPRESSED not in present:
        problems.append(f"{bag}: no image topic ({topics.IMAGE} or {topics.IMAGE_COMPRESSED})")
    if require_ground_truth and topics.GROUND_TRUTH not in present:
        problems.append(f"{bag}: topic {topics.GROUND_TRUTH} missing, no ground-truth frames")

    if camera.distorted:
        problems.append(f"{bag}: {camera.distorted} {topics.CAMERA_INFO} messages with non-zero distortion (warned above)")
    kitti_frames = _kitti_frames(bag, problems)
    records = _build_records(bag, images, infos, static, odom, gts, points, problems, kitti_frames, proposals)
    selected = [
        i for i, r in enumerate(records) if r.ground_truth is not None or not require_ground_truth
    ]
    return BagIndex(bag=bag, records=records, selected=selected, problems=problems)


def _index_message(msg, ref, images, infos, static, odom, gts, points, proposals=None, camera=None) -> None:
    topic = ref.topic
    if topic in (topics.IMAGE, topics.IMAGE_COMPRESSED):
        if msg.__msgtype__ == "sensor_msgs/msg/Image":
            decode_message(msg)  # validates encoding and size; cheap for raw images
            hw = (int(msg.height), int(msg.width))
        else:
            hw = (-1, -1)
        images.append((stamp_to_ns(msg.header.stamp), ref, hw, str(msg.header.frame_id)))
    elif topic == topics.CAMERA_INFO:
        infos[stamp_to_ns(msg.header.stamp)] = (
            decode_camera_info(msg, camera),
            (int(msg.height), int(msg.width)),
            str(msg.header.frame_id),
        )
    elif topic in (topics.TF_STATIC, topics.TF):
        for tf in msg.transforms:
            T = decode_transform(tf.transform)
            if topic == topics.TF_STATIC:
                static[tf.child_frame_id] = (tf.header.frame_id, T)
            elif tf.header.frame_id == topics.ODOM_FRAME and tf.child_frame_id == topics.BASE_FRAME:
                odom[stamp_to_ns(tf.header.stamp)] = T
    elif topic == topics.GROUND_TRUTH:
        decode_grid(msg)
        if msg.header.frame_id != topics.GRID_FRAME:
            raise ValueError(
                f"grid frame_id {msg.header.frame_id!r}, expected {topics.GRID_FRAME!r}"
            )
        gts[stamp_to_ns(msg.header.stamp)] = ref
    elif topic == topics.POINTS:
        decode_points(msg)
        if msg.header.frame_id != topics.GRID_FRAME:
            raise ValueError(
                f"cloud frame_id {msg.header.frame_id!r}, expected {topics.GRID_FRAME!r}"
            )
        points[stamp_to_ns(msg.header.stamp)] = ref
    elif topic == topics.QUERY_PROPOSALS and proposals is not None:
        decode_grid(msg, KITTI_GRID_HALF)
        proposals[stamp_to_ns(msg.header.stamp)] = ref


def _kitti_frames(bag: Path, problems: list[str]) -> dict[int, int]:
    """stamp -> KITTI frame id from the converter's entry in metadata.yaml; {} if absent."""
    import json

    import yaml

    try:
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())
        custom = meta["rosbag2_bagfile_information"].get("custom_data") or {}
        if KITTI_FRAMES_KEY not in custom:
            return {}
        entry = json.loads(custom[KITTI_FRAMES_KEY])
        if len(entry["frames"]) != len(entry["stamps_ns"]):
            raise ValueError("frames and stamps_ns differ in length")
        return {int(s): int(f) for s, f in zip(entry["stamps_ns"], entry["frames"])}
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        problems.append(
            f"{bag}: metadata.yaml {KITTI_FRAMES_KEY} unreadable ({e}); frame ids are positions"
        )
        return {}


def _static_pose(static: dict[str, tuple[str, np.ndarray]], frame: str) -> tuple[str, np.ndarray]:
    """Walk the static tree up from ``frame``: (root frame, T_root_frame)."""
    T = np.eye(4)
    seen = {frame}
    while frame in static:
        parent, T_parent_child = static[frame]
        T = T_parent_child @ T
        frame = parent
        if frame in seen:
            raise ValueError(f"/tf_static has a cycle through {frame!r}")
        seen.add(frame)
    return frame, T


def _build_records(
    bag, images, infos, static, odom, gts, points, problems, kitti_frames, proposals=None
) -> list[FrameRecord]:
    T_cam_grid = T_base_grid = None
    try:
        root_cam, T_root_cam = _static_pose(static, topics.CAMERA_FRAME)
        root_grid, T_root_grid = _static_pose(static, topics.GRID_FRAME)
        if root_cam != root_grid or root_cam == topics.CAMERA_FRAME:
            raise ValueError(
                f"no static transform links {topics.GRID_FRAME!r} and {topics.CAMERA_FRAME!r}"
            )
        T_cam_grid = invert_rigid(T_root_cam) @ T_root_grid
        if root_grid == topics.BASE_FRAME:
            T_base_grid = T_root_grid
    except ValueError as e:
        problems.append(f"{bag}: /tf_static: {e}; no frame can be used")
    info_stamps = np.array(sorted(infos), dtype=np.int64)
    records: list[FrameRecord] = []
    image_stamps: set[int] = set()
    last = None
    for k, (stamp, ref, hw, frame_id) in enumerate(images):
        if last is not None and stamp <= last:
            problems.append(
                f"{bag}: {ref.topic} message #{k} stamp {_fmt_ns(stamp)} is not after the previous "
                f"{_fmt_ns(last)} ({'duplicate, skipped' if stamp in image_stamps else 'unsorted'})"
            )
        last = stamp if last is None else max(last, stamp)
        if stamp in image_stamps:
            continue
        image_stamps.add(stamp)
        pos = np.searchsorted(info_stamps, stamp, side="right") - 1
        if pos < 0:
            problems.append(
                f"{bag}: image at {_fmt_ns(stamp)} skipped, no {topics.CAMERA_INFO} at or before it"
            )
            continue
        if T_cam_grid is None:
            continue
        K, info_hw, info_frame = infos[int(info_stamps[pos])]
        if hw != (-1, -1) and hw != info_hw:
            problems.append(
                f"{bag}: image at {_fmt_ns(stamp)} is {hw}, camera_info says {info_hw}; skipped"
            )
            continue
        if frame_id and info_frame and frame_id != info_frame:
            problems.append(
                f"{bag}: image at {_fmt_ns(stamp)} is in frame '{frame_id}', its {topics.CAMERA_INFO} in "
                f"'{info_frame}'; skipped"
            )
            continue
        T_odom_grid = (
            odom[stamp] @ T_base_grid if stamp in odom and T_base_grid is not None else None
        )
        records.append(
            FrameRecord(
                stamp,
                ref,
                K,
                info_hw,
                T_cam_grid,
                T_odom_grid,
                gts.get(stamp),
                points.get(stamp),
                kitti_frames.get(stamp),
                (proposals or {}).get(stamp),
            )
        )
    records.sort(key=lambda r: r.stamp_ns)
    for stamp in sorted(set(gts) - image_stamps):
        problems.append(f"{bag}: {topics.GROUND_TRUTH} at {_fmt_ns(stamp)} has no image, skipped")
    return records
