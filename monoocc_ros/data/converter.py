"""SemanticKITTI sequence -> rosbag2 (MCAP or sqlite3), written with ``rosbags``.

Topics and frames (see :mod:`monoocc_ros.topics`), stamps from ``times.txt``:

* ``/camera/image_raw`` sensor_msgs/Image rgb8 (or ``/camera/image_raw/compressed``
  CompressedImage png/jpeg), frame ``camera_optical``.
* ``/camera/camera_info`` from P2: K = P2[:, :3], P = [K | 0], R = I, no distortion; same stamp
  as the image. P2's offset column goes into the static TF instead.
* ``/tf_static`` (once, first stamp): ``base_link -> velodyne`` identity and
  ``velodyne -> camera_optical`` = inv(T_cam_velo) with T_cam_velo = [I | K^-1 p2] @ Tr.
* ``/tf`` ``odom -> base_link`` = inv(Tr) @ pose @ Tr per frame (LiDAR pose from the cam-0 pose).
* ``/velodyne_points`` PointCloud2 x, y, z, intensity (float32), label (uint32 raw), frame
  ``velodyne``.
* ``/ground_truth/occupancy`` SemanticOccupancyGrid on frames with ``voxels/*.label``: SSC-remapped
  train ids, 255 where ``.invalid``; origin = grid minimum corner in ``velodyne``.

The bag is written into a hidden temporary folder next to the output and renamed on success.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monoocc_ros import topics
from monoocc_ros.camera import invert_rigid, kitti_camera_from_calib
from monoocc_ros.data.bag_io import KITTI_FRAMES_KEY
from monoocc_ros.data.kitti import KittiFormatError, KittiSequence, read_image
from monoocc_ros.fileio import write_text_atomic
from monoocc_ros.grid import KITTI_GRID_HALF
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI
from monoocc_ros.msgs import bag_messages
from monoocc_ros.msgs.bagtypes import typestore

__all__ = ["ConversionSummary", "convert_sequence", "IMAGE_FORMATS", "STORAGES"]

IMAGE_FORMATS = ("raw", "png", "jpeg")
STORAGES = ("mcap", "sqlite3")
JPEG_QUALITY = 95


@dataclass
class ConversionSummary:
    """What a conversion wrote.

    Attributes:
        bag: the bag folder written.
        frames: frame ids converted.
        written: topic -> messages written.
        expected: topic -> messages expected (one per frame; ground truth per frame with voxels).
        problems: per-frame errors; the frame's other data was still written.
    """

    bag: Path
    frames: list[int]
    written: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems and all(
            self.written.get(t, 0) == n for t, n in self.expected.items()
        )

    @property
    def bad_frames(self) -> list[int]:
        """Frames with at least one problem (each problem starts with ``frame NNNNNN:``)."""
        return sorted({int(p.split(":", 1)[0].split()[1]) for p in self.problems if p.startswith("frame ")})

    @property
    def usable(self) -> bool:
        """The bag holds at least one camera frame, so something can be evaluated or replayed."""
        return any(self.written.get(t, 0) for t in (topics.IMAGE, topics.IMAGE_COMPRESSED))

    def __str__(self) -> str:
        lines = [f"wrote {self.bag} ({len(self.frames)} frames)"]
        for topic, n in self.expected.items():
            got = self.written.get(topic, 0)
            lines.append(f"  {topic:28s} {got:6d} / {n:<6d}{'' if got == n else '  INCOMPLETE'}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _encode_image(
    seq: KittiSequence, frame: int, image_format: str
) -> tuple[bytes | None, np.ndarray]:
    """(encoded bytes or None for raw, RGB array)."""
    path = seq.image_path(frame)
    image = read_image(path)
    if image_format == "raw":
        return None, image
    if image_format == "png":
        return path.read_bytes(), image  # the source PNG is lossless: keep its bytes
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise KittiFormatError(f"{path}: JPEG encoding failed")
    return buf.tobytes(), image


def ground_truth_labels(seq: KittiSequence, frame: int) -> np.ndarray:
    """(256, 256, 32) uint8 train ids: SSC remap of ``.label``, 255 where ``.invalid``."""
    vox = seq.load_voxels(frame, require_labels=True)
    labels = SEMANTIC_KITTI.remap_voxel_labels(
        vox.labels, source=str(seq.voxel_path(frame, "label"))
    )
    if vox.invalid is not None:
        labels[vox.invalid] = IGNORE
    return labels


def convert_sequence(
    kitti_root: Path,
    sequence: str,
    out_bag: Path,
    *,
    frames: range | None = None,
    storage: str = "mcap",
    image_format: str = "raw",
    force: bool = False,
    progress: bool = True,
    queries: Path | None = None,
) -> ConversionSummary:
    """Convert one SemanticKITTI sequence (or a frame range) to a rosbag2 folder.

    Args:
        kitti_root: dataset root holding ``sequences/``.
        sequence: sequence name, e.g. ``"08"``.
        out_bag: bag folder to create.
        frames: frame ids to convert (those without any file are ignored); default all.
        storage: ``"mcap"`` or ``"sqlite3"``.
        image_format: ``"raw"`` (Image rgb8), ``"png"`` or ``"jpeg"`` (CompressedImage).
        force: replace an existing ``out_bag``.
        progress: show a tqdm bar.
        queries: VoxFormer query files (``DIR/sequences/SS/queries/NNNNNN.query_<tag>``) to record
            on ``/query_proposals`` (128x128x16 grid message, 1 = proposed), so evaluation of the bag
            can run the official protocol; a frame without its file is listed in the problems.

    Returns:
        Messages written vs expected per topic and the per-frame problems.

    Raises:
        FileExistsError: ``out_bag`` exists and ``force`` is False.
        KittiFormatError: calib, poses or times are missing or malformed.
        ValueError: unknown storage or image format, or no frame to convert.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    out_bag = Path(out_bag)
    if out_bag.exists() and not force:
        raise FileExistsError(f"{out_bag} exists; pass force=True (--force) to replace it")

    seq = KittiSequence(kitti_root, sequence)
    calib, poses, times = seq.calib, seq.poses, seq.times
    ids = [f for f in seq.frames if frames is None or f in frames]
    if not ids:
        raise ValueError(
            f"{seq.path}: no frames to convert in "
            f"{frames if frames is not None else 'the sequence'}"
        )
    K, T_cam_velo = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    Tr = calib["Tr"]
    Tr_inv = np.linalg.inv(Tr)
    stamps = {f: int(round(times[f] * 1e9)) for f in ids}
    image_topic = topics.IMAGE if image_format == "raw" else topics.IMAGE_COMPRESSED
    voxel_ids = set(seq.voxel_frames)
    query_files = None
    if queries is not None:
        from monoocc_ros.models.proposals import QueryFiles

        query_files = QueryFiles(queries, sequence)
    summary = ConversionSummary(bag=out_bag, frames=ids)
    summary.expected = {
        image_topic: len(ids),
        topics.CAMERA_INFO: len(ids),
        topics.TF_STATIC: 1,
        topics.TF: len(ids),
        topics.POINTS: len(ids),
        topics.GROUND_TRUTH: sum(f in voxel_ids for f in ids),
    }
    if query_files is not None:
        summary.expected[topics.QUERY_PROPOSALS] = len(ids)
    written = dict.fromkeys(summary.expected, 0)

    tmp = out_bag.with_name(f".{out_bag.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    out_bag.parent.mkdir(parents=True, exist_ok=True)
    store = typestore()
    writer = Writer(
        tmp,
        version=9,
        storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3,
    )
    try:
        writer.set_custom_data(
            KITTI_FRAMES_KEY,
            json.dumps(
                {"sequence": sequence, "frames": ids, "stamps_ns": [stamps[f] for f in ids]}
            ),
        )
        writer.open()
        msgtypes = {
            image_topic: "sensor_msgs/msg/Image"
            if image_format == "raw"
            else "sensor_msgs/msg/CompressedImage",
            topics.CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
            topics.TF_STATIC: "tf2_msgs/msg/TFMessage",
            topics.TF: "tf2_msgs/msg/TFMessage",
            topics.POINTS: "sensor_msgs/msg/PointCloud2",
            topics.GROUND_TRUTH: topics.GRID_MSG_TYPE,
        }
        if query_files is not None:
            msgtypes[topics.QUERY_PROPOSALS] = topics.GRID_MSG_TYPE
        conns = {t: writer.add_connection(t, m, typestore=store) for t, m in msgtypes.items()}

        def write(topic: str, msg, stamp: int) -> None:
            writer.write(conns[topic], stamp, store.serialize_cdr(msg, msgtypes[topic]))
            written[topic] += 1

        static = [
            (topics.BASE_FRAME, topics.LIDAR_FRAME, np.eye(4)),
            (topics.LIDAR_FRAME, topics.CAMERA_FRAME, invert_rigid(T_cam_velo)),
        ]
        write(topics.TF_STATIC, bag_messages.tf_message(static, stamps[ids[0]]), stamps[ids[0]])
        for f in tqdm(ids, desc=f"convert {sequence}", unit="frame", disable=not progress):
            _write_frame(
                seq,
                f,
                stamps[f],
                K,
                Tr_inv @ poses[f] @ Tr,
                image_format,
                voxel_ids,
                write,
                summary,
            )
            if query_files is not None:
                _write_proposals(query_files, f, stamps[f], write, summary)
        writer.close()
    except BaseException:
        # Interrupted or failed: leave no half bag behind.
        try:
            writer.close()
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_bag.exists():
        shutil.rmtree(out_bag)
    tmp.rename(out_bag)
    _rename_storage_files(out_bag, tmp.name)
    summary.written = written
    return summary


def _rename_storage_files(bag: Path, tmp_name: str) -> None:
    """rosbags names storage files after the folder; rename them to the final folder name."""
    import yaml

    meta_path = bag / "metadata.yaml"
    text = meta_path.read_text()
    for p in bag.iterdir():
        if p.name.startswith(tmp_name):
            new = bag.name + p.name[len(tmp_name) :]
            p.rename(bag / new)
            text = text.replace(p.name, new)
    yaml.safe_load(text)  # the rewritten metadata must still parse
    write_text_atomic(meta_path, text)


def _write_proposals(query_files, f: int, stamp: int, write, summary) -> None:
    try:
        proposals = query_files.load(f)
    except (FileNotFoundError, ValueError) as e:
        summary.problems.append(f"frame {f:06d}: query proposals not written: {e}")
        return
    msg = bag_messages.grid_message(proposals.astype(np.uint8), stamp, KITTI_GRID_HALF, class_names=["not proposed", "proposed"])
    write(topics.QUERY_PROPOSALS, msg, stamp)


def _write_frame(seq, f, stamp, K, T_odom_base, image_format, voxel_ids, write, summary) -> None:
    """Write every message of frame f; a failing file is reported and the rest still written."""
    try:
        encoded, image = _encode_image(seq, f, image_format)
        if encoded is None:
            write(topics.IMAGE, bag_messages.image_message(image, stamp), stamp)
        else:
            write(
                topics.IMAGE_COMPRESSED,
                bag_messages.compressed_image_message(encoded, image_format, stamp),
                stamp,
            )
        write(topics.CAMERA_INFO, bag_messages.camera_info_message(K, image.shape[:2], stamp), stamp)
    except KittiFormatError as e:
        summary.problems.append(f"frame {f:06d}: image and camera_info not written: {e}")
    write(
        topics.TF,
        bag_messages.tf_message([(topics.ODOM_FRAME, topics.BASE_FRAME, T_odom_base)], stamp),
        stamp,
    )
    try:
        scan = seq.load_scan(f)
        label_path = seq.point_labels_path(f)
        if label_path.exists():
            labels = seq.load_point_labels(f, len(scan))
        else:
            labels = np.zeros(len(scan), dtype=np.uint32)
            summary.problems.append(
                f"frame {f:06d}: {label_path} missing, points written with label 0"
            )
        write(topics.POINTS, bag_messages.points_message(scan, labels, stamp), stamp)
    except KittiFormatError as e:
        summary.problems.append(f"frame {f:06d}: point cloud not written: {e}")
    if f in voxel_ids:
        try:
            write(
                topics.GROUND_TRUTH, bag_messages.grid_message(ground_truth_labels(seq, f), stamp), stamp
            )
        except (KittiFormatError, ValueError) as e:
            summary.problems.append(f"frame {f:06d}: ground truth not written: {e}")
