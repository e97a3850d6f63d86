"""SemanticKITTI odometry layout: readers and writers of every file the project uses.

Layout of one sequence ``<root>/sequences/SS/``::

    calib.txt  poses.txt  times.txt
    image_2/NNNNNN.png            left colour camera (rectified)
    velodyne/NNNNNN.bin           float32 (P, 4): x, y, z, remission
    labels/NNNNNN.label           uint32 (P,): instance << 16 | semantic
    voxels/NNNNNN.bin|.invalid|.occluded   packed bits, MSB first, 256*256*32 values
    voxels/NNNNNN.label           uint16 raw ids, 256*256*32 values

Poses are camera-0 poses (3x4 row-major per line); ``Tr`` maps velodyne to rectified camera 0.
Every reader raises :class:`KittiFormatError` naming the file and what is wrong.

Example:
    >>> seq = KittiSequence(root, "08")          # doctest: +SKIP
    >>> seq.load_voxels(0).occupied.shape        # doctest: +SKIP
    (256, 256, 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from monoocc_ros.errors import UserError
from monoocc_ros.fileio import write_bytes_atomic
from monoocc_ros.grid import KITTI_GRID

__all__ = [
    "KittiFormatError",
    "KittiSequence",
    "VoxelFrame",
    "pack_bits",
    "read_calib",
    "read_image",
    "read_point_labels",
    "read_poses",
    "read_scan",
    "read_times",
    "read_voxel_labels",
    "unpack_bits",
    "write_calib",
    "write_image",
    "write_point_labels",
    "write_poses",
    "write_scan",
    "write_times",
    "write_voxel_bits",
    "write_voxel_labels",
]

NUM_VOXELS = KITTI_GRID.num_voxels
PACKED_BYTES = NUM_VOXELS // 8
CALIB_KEYS = ("P0", "P1", "P2", "P3", "Tr")
VOXEL_BIT_KINDS = ("bin", "invalid", "occluded")


class KittiFormatError(UserError, ValueError):
    """A SemanticKITTI file is missing or malformed; the message names the file."""


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KittiFormatError(f"{path}: file not found") from None
    except OSError as e:
        raise KittiFormatError(f"{path}: cannot read ({e.strerror})") from None


def _read_text_lines(path: Path) -> list[str]:
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise KittiFormatError(f"{path}: not a text file") from None
    return [line for line in text.splitlines() if line.strip()]


def _parse_floats(path: Path, lineno: int, fields: list[str], count: int) -> np.ndarray:
    if len(fields) != count:
        raise KittiFormatError(
            f"{path}, line {lineno}: expected {count} numbers, got {len(fields)}"
        )
    try:
        values = np.array([float(v) for v in fields], dtype=np.float64)
    except ValueError:
        raise KittiFormatError(
            f"{path}, line {lineno}: not a number in {' '.join(fields)!r}"
        ) from None
    if not np.all(np.isfinite(values)):
        raise KittiFormatError(f"{path}, line {lineno}: NaN or infinite value")
    return values


def unpack_bits(path: Path) -> np.ndarray:
    """Read a packed voxel bit file (``.bin``, ``.invalid``, ``.occluded``).

    Returns:
        (2097152,) uint8 of 0/1 in flat grid order, unpacked MSB first.
    """
    raw = _read_bytes(path)
    if len(raw) != PACKED_BYTES:
        raise KittiFormatError(
            f"{path}: wrong size {len(raw)} bytes, a packed 256x256x32 grid has {PACKED_BYTES}"
        )
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))


def pack_bits(bits: np.ndarray) -> bytes:
    """(2097152,) or (256, 256, 32) 0/1 values -> packed bytes, MSB first."""
    bits = np.asarray(bits)
    if bits.size != NUM_VOXELS:
        raise ValueError(f"pack_bits needs {NUM_VOXELS} values, got {bits.size}")
    return np.packbits(bits.reshape(-1).astype(bool)).tobytes()


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """Read ``calib.txt``.

    Returns:
        ``P0``..``P3``: (3, 4) float64 rectified projection matrices; ``Tr``: (4, 4) float64
        velodyne -> rectified camera 0.
    """
    path = Path(path)
    calib: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(_read_text_lines(path), start=1):
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep or key not in CALIB_KEYS:
            raise KittiFormatError(
                f"{path}, line {lineno}: expected 'KEY: 12 numbers' with KEY in {CALIB_KEYS}, "
                f"got {line[:40]!r}"
            )
        calib[key] = _parse_floats(path, lineno, rest.split(), 12).reshape(3, 4)
    missing = [k for k in CALIB_KEYS if k not in calib]
    if missing:
        raise KittiFormatError(f"{path}: missing calibration entries {missing}")
    Tr = np.eye(4)
    Tr[:3] = calib["Tr"]
    calib["Tr"] = Tr
    return calib


def read_poses(path: Path) -> np.ndarray:
    """Read ``poses.txt``: (N, 4, 4) float64 camera-0 poses (camera 0 -> world)."""
    path = Path(path)
    lines = _read_text_lines(path)
    poses = np.tile(np.eye(4), (len(lines), 1, 1))
    for i, line in enumerate(lines):
        poses[i, :3] = _parse_floats(path, i + 1, line.split(), 12).reshape(3, 4)
    if not len(lines):
        raise KittiFormatError(f"{path}: no poses")
    return poses


def read_times(path: Path) -> np.ndarray:
    """Read ``times.txt``: (N,) float64 seconds since the start of the sequence."""
    path = Path(path)
    lines = _read_text_lines(path)
    times = np.array(
        [_parse_floats(path, i + 1, line.split(), 1)[0] for i, line in enumerate(lines)]
    )
    if not len(times):
        raise KittiFormatError(f"{path}: no timestamps")
    if np.any(times < 0) or np.any(np.diff(times) <= 0):
        raise KittiFormatError(f"{path}: timestamps must be non-negative and strictly increasing")
    return times.astype(np.float64)


def read_scan(path: Path) -> np.ndarray:
    """Read a velodyne scan: (P, 4) float32 x, y, z [m], remission."""
    raw = _read_bytes(path)
    if len(raw) % 16:
        raise KittiFormatError(
            f"{path}: size {len(raw)} bytes is not a multiple of 16 (4 float32 per point); "
            "the file is truncated or not a scan"
        )
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 4).copy()


def read_point_labels(path: Path, num_points: int | None = None) -> np.ndarray:
    """Read per-point labels: (P,) uint32, low 16 bits semantic id, high 16 bits instance."""
    raw = _read_bytes(path)
    if len(raw) % 4:
        raise KittiFormatError(f"{path}: size {len(raw)} bytes is not a multiple of 4 (uint32)")
    labels = np.frombuffer(raw, dtype=np.uint32).copy()
    if num_points is not None and labels.size != num_points:
        raise KittiFormatError(f"{path}: {labels.size} labels but the scan has {num_points} points")
    return labels


def read_voxel_labels(path: Path) -> np.ndarray:
    """Read ``voxels/NNNNNN.label``: (256, 256, 32) uint16 raw SemanticKITTI ids."""
    raw = _read_bytes(path)
    if len(raw) != 2 * NUM_VOXELS:
        raise KittiFormatError(
            f"{path}: wrong size {len(raw)} bytes, expected {2 * NUM_VOXELS} (uint16 per voxel)"
        )
    return np.frombuffer(raw, dtype="<u2").astype(np.uint16).reshape(KITTI_GRID.size)


def read_image(path: Path) -> np.ndarray:
    """Read a camera image: (H, W, 3) uint8 RGB."""
    import cv2

    data = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise KittiFormatError(f"{path}: not a decodable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def write_calib(path: Path, calib: dict[str, np.ndarray]) -> None:
    """Write ``calib.txt`` from ``P0``..``P3`` (3, 4) and ``Tr`` (3, 4) or (4, 4)."""
    lines = []
    for key in CALIB_KEYS:
        m = np.asarray(calib[key], dtype=np.float64).reshape(-1, 4)[:3]
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in m.ravel()))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def write_poses(path: Path, poses: np.ndarray) -> None:
    """Write ``poses.txt`` from (N, 4, 4) or (N, 3, 4) poses."""
    poses = np.asarray(poses, dtype=np.float64)
    rows = [" ".join(f"{v:.12e}" for v in p[:3].ravel()) for p in poses]
    write_bytes_atomic(path, ("\n".join(rows) + "\n").encode())


def write_times(path: Path, times: np.ndarray) -> None:
    """Write ``times.txt`` from (N,) seconds."""
    write_bytes_atomic(path, ("\n".join(f"{t:.6e}" for t in np.asarray(times)) + "\n").encode())


def write_scan(path: Path, scan: np.ndarray) -> None:
    """Write a velodyne scan from (P, 4) float32."""
    scan = np.asarray(scan, dtype=np.float32)
    if scan.ndim != 2 or scan.shape[1] != 4:
        raise ValueError(f"scan must be (P, 4), got {scan.shape}")
    write_bytes_atomic(path, scan.tobytes())


def write_point_labels(path: Path, labels: np.ndarray) -> None:
    """Write per-point labels from (P,) uint32."""
    write_bytes_atomic(path, np.asarray(labels, dtype="<u4").tobytes())


def write_voxel_labels(path: Path, labels: np.ndarray) -> None:
    """Write ``voxels/NNNNNN.label`` from (256, 256, 32) raw ids."""
    labels = np.asarray(labels)
    if labels.size != NUM_VOXELS:
        raise ValueError(f"voxel labels need {NUM_VOXELS} values, got {labels.size}")
    write_bytes_atomic(path, labels.astype("<u2").tobytes())


def write_voxel_bits(path: Path, bits: np.ndarray) -> None:
    """Write a packed bit file (``.bin``, ``.invalid``, ``.occluded``) from 0/1 values."""
    write_bytes_atomic(path, pack_bits(bits))


def write_image(path: Path, image: np.ndarray) -> None:
    """Write a PNG from (H, W, 3) uint8 RGB."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image, np.uint8)[:, :, ::-1]))
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


@dataclass(frozen=True)
class VoxelFrame:
    """The voxel files of one frame; arrays are (256, 256, 32), None where the file is absent.

    Attributes:
        labels: uint16 raw ids (``.label``).
        occupied: bool occupancy of the single scan (``.bin``).
        invalid: bool, never observed (``.invalid``).
        occluded: bool (``.occluded``).
    """

    labels: np.ndarray | None
    occupied: np.ndarray | None
    invalid: np.ndarray | None
    occluded: np.ndarray | None


class KittiSequence:
    """One sequence folder ``<root>/sequences/<sequence>`` with lazy per-frame loaders.

    Args:
        root: dataset root (the folder holding ``sequences/``).
        sequence: two-digit sequence name, e.g. ``"08"``.

    Raises:
        KittiFormatError: the folder is missing.
    """

    def __init__(self, root: Path, sequence: str):
        self.root = Path(root)
        self.sequence = sequence
        self.path = self.root / "sequences" / sequence
        if not self.path.is_dir():
            raise KittiFormatError(f"{self.path}: sequence folder not found")

    def __repr__(self) -> str:
        return f"KittiSequence({str(self.root)!r}, {self.sequence!r})"

    @cached_property
    def calib(self) -> dict[str, np.ndarray]:
        return read_calib(self.path / "calib.txt")

    @cached_property
    def poses(self) -> np.ndarray:
        """(N, 4, 4) camera-0 poses; checked against the images present."""
        poses = read_poses(self.path / "poses.txt")
        images = self.image_frames
        if len(images) > len(poses) or (images and images[-1] >= len(poses)):
            raise KittiFormatError(
                f"{self.path / 'poses.txt'}: pose count {len(poses)} does not match image count "
                f"{len(images)} in {self.path / 'image_2'} (last frame {images[-1]:06d})"
            )
        return poses

    @cached_property
    def times(self) -> np.ndarray:
        times = read_times(self.path / "times.txt")
        frames = self.frames
        if frames and frames[-1] >= len(times):
            raise KittiFormatError(
                f"{self.path / 'times.txt'}: {len(times)} timestamps but frame "
                f"{frames[-1]:06d} exists"
            )
        return times

    @cached_property
    def lidar_poses(self) -> np.ndarray:
        """(N, 4, 4) velodyne poses ``inv(Tr) @ pose @ Tr`` (velodyne at frame t -> odom)."""
        Tr = self.calib["Tr"]
        return np.linalg.inv(Tr) @ self.poses @ Tr

    def _ids(self, folder: str, suffix: str) -> list[int]:
        d = self.path / folder
        if not d.is_dir():
            return []
        return sorted(int(p.stem) for p in d.glob(f"*{suffix}") if p.stem.isdigit())

    @cached_property
    def image_frames(self) -> list[int]:
        return self._ids("image_2", ".png")

    @cached_property
    def scan_frames(self) -> list[int]:
        return self._ids("velodyne", ".bin")

    @cached_property
    def voxel_frames(self) -> list[int]:
        """Frames with any voxel file (.bin, .label or .invalid)."""
        ids = set(self._ids("voxels", ".bin")) | set(self._ids("voxels", ".label"))
        return sorted(ids | set(self._ids("voxels", ".invalid")))

    @cached_property
    def frames(self) -> list[int]:
        """Every frame with an image, a scan or voxels."""
        return sorted(set(self.image_frames) | set(self.scan_frames) | set(self.voxel_frames))

    def image_path(self, frame: int) -> Path:
        return self.path / "image_2" / f"{frame:06d}.png"

    def scan_path(self, frame: int) -> Path:
        return self.path / "velodyne" / f"{frame:06d}.bin"

    def point_labels_path(self, frame: int) -> Path:
        return self.path / "labels" / f"{frame:06d}.label"

    def voxel_path(self, frame: int, kind: str) -> Path:
        """Path of ``voxels/NNNNNN.<kind>``, kind in bin, label, invalid, occluded."""
        return self.path / "voxels" / f"{frame:06d}.{kind}"

    def load_image(self, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of image_2."""
        return read_image(self.image_path(frame))

    def load_scan(self, frame: int) -> np.ndarray:
        """(P, 4) float32."""
        return read_scan(self.scan_path(frame))

    def load_point_labels(self, frame: int, num_points: int | None = None) -> np.ndarray:
        """(P,) uint32."""
        return read_point_labels(self.point_labels_path(frame), num_points)

    def load_voxels(self, frame: int, *, require_labels: bool = False) -> VoxelFrame:
        """Read the voxel files of a frame; absent files give None.

        Raises:
            KittiFormatError: a present file is malformed, or ``require_labels`` and no ``.label``.
        """
        label_path = self.voxel_path(frame, "label")
        if label_path.exists():
            labels = read_voxel_labels(label_path)
        elif require_labels:
            raise KittiFormatError(f"{label_path}: voxel labels required but the file is missing")
        else:
            labels = None
        bits = {}
        for kind in VOXEL_BIT_KINDS:
            p = self.voxel_path(frame, kind)
            bits[kind] = (
                unpack_bits(p).reshape(KITTI_GRID.size).astype(bool) if p.exists() else None
            )
        return VoxelFrame(labels, bits["bin"], bits["invalid"], bits["occluded"])
