"""Label sets: class names, colours, raw <-> train id mapping (SemanticKITTI by default).

The single place where label semantics live. A label set is a YAML file in the format of
``semantic_kitti.yaml``, loaded by name or path with :func:`load_label_set`; a model names its
label set in ``ModelConfig.labels``. :data:`SEMANTIC_KITTI` is the default instance for code that
is SemanticKITTI by nature (the KITTI data layer, the official submission format) or has no model
config at hand. Train id 0 (:data:`EMPTY`) is free space and 255 (:data:`IGNORE`) unknown in every
label set.

Example:
    >>> from monoocc_ros.labels import SEMANTIC_KITTI as L
    >>> L.num_classes, L.names[9]
    (20, 'road')
    >>> load_label_set("semantic_kitti") is load_label_set("semantic_kitti")
    True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from monoocc_ros.config_io import ConfigError

__all__ = ["EMPTY", "IGNORE", "LabelMap", "SEMANTIC_KITTI", "LABEL_SETS", "load_label_map", "load_label_set"]

EMPTY = 0
"""Train id of free space."""
IGNORE = 255
"""Train id of unknown / invalid voxels and pixels, ignored by losses and metrics."""

LABEL_CONFIG_PATH = Path(__file__).with_name("semantic_kitti.yaml")
_REMAP_LUT_SIZE = 359  # max raw key (259) + 100, as in semantic-kitti-api


@dataclass(frozen=True)
class LabelMap:
    """Class names, RGB colours and id mappings of one label set.

    Attributes:
        names: train id -> class name (index 0 is ``empty``).
        colors_rgb: (num_classes, 3) uint8, train id -> RGB.
        learning_map: raw id -> train id.
        learning_map_inv: train id -> raw id.
        voxel_frequencies: (num_classes,) voxel counts used for class weights.
        paper_table_order: train ids of classes 1..19 in the MonoOcc paper's Table I order.
    """

    names: tuple[str, ...]
    colors_rgb: np.ndarray
    learning_map: dict[int, int]
    learning_map_inv: dict[int, int]
    voxel_frequencies: np.ndarray
    paper_table_order: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @cached_property
    def ssc_remap_lut(self) -> np.ndarray:
        """(359,) uint8 raw id -> train id with the official SSC evaluation rule.

        Raw 0 stays 0 (empty); raw ids mapped to 0 (outlier, other-structure, other-object)
        and raw ids absent from ``learning_map`` become 255 (ignored).
        """
        lut = np.zeros(_REMAP_LUT_SIZE, dtype=np.int64)
        for raw, train in self.learning_map.items():
            lut[raw] = train
        lut[lut == 0] = IGNORE
        lut[0] = EMPTY
        return lut.astype(np.uint8)

    @cached_property
    def point_label_lut(self) -> np.ndarray:
        """(65536,) uint8 raw semantic id -> train id for LiDAR points; unlabeled -> 255."""
        lut = np.full(1 << 16, IGNORE, dtype=np.uint8)
        for raw, train in self.learning_map.items():
            lut[raw] = IGNORE if train == EMPTY else train
        return lut

    @cached_property
    def inv_lut(self) -> np.ndarray:
        """(256,) uint16 train id -> raw id for submissions; ids >= num_classes -> 0."""
        lut = np.zeros(256, dtype=np.uint16)
        for train, raw in self.learning_map_inv.items():
            lut[train] = raw
        return lut

    def remap_voxel_labels(self, raw: np.ndarray, *, source: str = "labels") -> np.ndarray:
        """Map raw uint16 voxel ids to train ids with the official SSC rule.

        Args:
            raw: any shape, integer raw SemanticKITTI ids.
            source: what the array came from, for the error message.

        Raises:
            ValueError: an id is at or above the table size (the official script crashes there).
        """
        raw = np.asarray(raw)
        if raw.size and int(raw.max()) >= _REMAP_LUT_SIZE:
            raise ValueError(
                f"{source}: raw label id {int(raw.max())} is not a SemanticKITTI id "
                f"(must be < {_REMAP_LUT_SIZE})"
            )
        return self.ssc_remap_lut[raw.astype(np.int64)]

    def remap_point_labels(self, raw_u32: np.ndarray) -> np.ndarray:
        """uint32 point labels (instance << 16 | semantic) -> uint8 train ids, unlabeled -> 255."""
        return self.point_label_lut[np.asarray(raw_u32).astype(np.uint32) & 0xFFFF]

    def to_raw(self, train_ids: np.ndarray) -> np.ndarray:
        """uint8 train ids -> uint16 raw ids (learning_map_inv); 255 -> 0."""
        return self.inv_lut[np.asarray(train_ids).astype(np.uint8)]

    def colorize(self, train_ids: np.ndarray) -> np.ndarray:
        """train ids (any shape) -> (..., 3) uint8 RGB; 255 and unknown ids -> grey."""
        palette = np.full((256, 3), 128, dtype=np.uint8)
        palette[: self.num_classes] = self.colors_rgb
        return palette[np.asarray(train_ids).astype(np.uint8)]

    def class_weights(self) -> np.ndarray:
        """(num_classes,) float32 weights 10 / ln(f + 0.001) (MonoScene / MonoOcc)."""
        return (10.0 / np.log(self.voxel_frequencies + 0.001)).astype(np.float32)


def load_label_map(path: Path = LABEL_CONFIG_PATH) -> LabelMap:
    """Read a label configuration file in the project's format (see semantic_kitti.yaml).

    ``classes``, ``colors_rgb`` and ``voxel_frequencies`` are required; ``learning_map`` and
    ``learning_map_inv`` default to the identity (raw id = train id) and ``paper_table_order`` to
    1..N-1.

    Raises:
        ConfigError: unreadable file, missing key or entries that do not fit the class list.
    """
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"label set {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"label set {path}: expected a mapping at the top level")
    missing = [k for k in ("classes", "colors_rgb", "voxel_frequencies") if k not in cfg]
    if missing:
        raise ConfigError(f"label set {path}: missing key(s) {missing}")
    names = tuple(str(c) for c in cfg["classes"])
    if not 2 <= len(names) < IGNORE:
        raise ConfigError(f"label set {path}: needs 2..{IGNORE - 1} classes (empty first), got {len(names)}")
    colors = np.asarray(cfg["colors_rgb"], dtype=np.uint8)
    freqs = np.asarray(cfg["voxel_frequencies"], dtype=np.float64)
    if colors.shape != (len(names), 3) or freqs.shape != (len(names),):
        raise ConfigError(f"{path}: colors_rgb and voxel_frequencies need one entry per class")
    identity = {i: i for i in range(len(names))}
    return LabelMap(
        names=names,
        colors_rgb=colors,
        learning_map={int(k): int(v) for k, v in cfg.get("learning_map", identity).items()},
        learning_map_inv={int(k): int(v) for k, v in cfg.get("learning_map_inv", identity).items()},
        voxel_frequencies=freqs,
        paper_table_order=tuple(int(c) for c in cfg.get("paper_table_order", range(1, len(names)))),
    )


LABEL_SETS = {"semantic_kitti": LABEL_CONFIG_PATH}
"""Label sets known by name; any other label set is given by the path of its YAML file."""


def load_label_set(name_or_path: str) -> LabelMap:
    """The label set called ``name_or_path`` in :data:`LABEL_SETS`, else the YAML file at that path.

    Files are read once per content version (path, modification time, size).

    Raises:
        ConfigError: neither a known name nor an existing file, or an invalid file.
    """
    if name_or_path in LABEL_SETS:
        path = LABEL_SETS[name_or_path]
        return SEMANTIC_KITTI if path == LABEL_CONFIG_PATH else _load_cached(str(path), 0, 0)
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"labels: {name_or_path!r} is neither a known label set {sorted(LABEL_SETS)} nor a file")
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int) -> LabelMap:
    return load_label_map(Path(path))


SEMANTIC_KITTI = load_label_map()
