"""Training / evaluation samples from converted bags.

Example:
    >>> ds = BagDataset([Path("seq00")], temporal_offsets=(-1, 1))   # doctest: +SKIP
    >>> ds[0]["temporal_images"].shape                                 # doctest: +SKIP
    torch.Size([2, 3, 370, 1226])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from monoocc_ros.camera import invert_rigid, project_points
from monoocc_ros.data.bag_io import BagIndex, read_bag_frames
from monoocc_ros.grid import downsample_labels
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI

__all__ = ["BagDataset", "project_lidar"]


def project_lidar(
    points: np.ndarray,
    train_ids: np.ndarray,
    K: np.ndarray,
    T_cam_grid: np.ndarray,
    image_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse 2D label and depth maps from LiDAR points; the nearest point wins per pixel.

    Args:
        points: (P, 3) positions in the grid (velodyne) frame.
        train_ids: (P,) uint8 train ids, 255 = unlabelled (not drawn in the label map).
        K: (3, 3) intrinsics.
        T_cam_grid: (4, 4) grid -> camera optical frame.
        image_hw: (H, W).

    Returns:
        sem2d: (H, W) int64 train ids, 255 = no labelled point.
        depth: (H, W) float32 depth along the optical axis in metres, 0 = no point.
    """
    h, w = image_hw
    uv, z = project_points(points, K, T_cam_grid)
    with np.errstate(invalid="ignore"):
        keep = (z > 1e-3) & np.all(np.isfinite(uv), axis=1)
        keep &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    u = uv[keep, 0].astype(np.int64)
    v = uv[keep, 1].astype(np.int64)
    z, ids = z[keep], np.asarray(train_ids)[keep]
    depth = np.zeros((h, w), dtype=np.float32)
    sem2d = np.full((h, w), IGNORE, dtype=np.int64)
    far_first = np.argsort(-z, kind="stable")  # later writes win: the nearest point is written last
    depth[v[far_first], u[far_first]] = z[far_first]
    lab = far_first[ids[far_first] != IGNORE]
    sem2d[v[lab], u[lab]] = ids[lab]
    return sem2d, depth


class BagDataset(Dataset):
    """Ground-truth frames of one or more bags as training samples.

    Indexing happens once, here; each DataLoader worker opens its own bag readers lazily.

    Args:
        bags: rosbag2 folders written by ``monoocc convert-kitti``.
        temporal_offsets: frame offsets of the temporal neighbours (e.g. ``(-1, 1)``), counted
            in camera frames of the same bag and clamped at its ends.
        frames: slice of the concatenated ground-truth frames to use.
        queries: VoxFormer query files (``DIR/sequences/SS/queries/NNNNNN.query_<tag>``, SS from
            each bag's converter metadata): every sample gets its frame's ``proposals``
            (128, 128, 16) bool, the official protocol's DCA queries. Frames without a file are
            left out and listed in ``problems``.

    Attributes:
        problems: everything skipped while indexing, per bag.

    Raises:
        ValueError: no ground-truth frame remains, or neighbours lack ``/tf`` poses.
    """

    def __init__(
        self,
        bags: Sequence[Path],
        *,
        temporal_offsets: Sequence[int] = (),
        frames: slice | None = None,
        queries: Path | None = None,
    ):
        self.temporal_offsets = tuple(int(o) for o in temporal_offsets)
        self.indexes: list[BagIndex] = [
            read_bag_frames(Path(b), require_ground_truth=True) for b in bags
        ]
        self.problems = [p for index in self.indexes for p in index.problems]
        items = [(b, r) for b, index in enumerate(self.indexes) for r in index.selected]
        self.queries = None if queries is None else [_query_files(index.bag, Path(queries)) for index in self.indexes]
        if self.queries is not None:
            kept = []
            for b, r in items:
                rec = self.indexes[b].records[r]
                if rec.kitti_frame in self.queries[b].files:
                    kept.append((b, r))
                else:
                    self.problems.append(
                        f"{self.indexes[b].bag}: frame at {rec.stamp_ns} ns (KITTI frame {rec.kitti_frame}) has no "
                        f"query file in {self.queries[b].folder}; left out"
                    )
            items = kept
        self.items: list[tuple[int, int]] = items[frames] if frames is not None else items
        if not self.items:
            raise ValueError(
                f"no ground-truth frames in {[str(b) for b in bags]}"
                + (f" (slice {frames})" if frames is not None else "")
                + "".join(f"\n  {p}" for p in self.problems)
            )
        if self.temporal_offsets:
            for b, r in self.items:
                for n in {r, *self._neighbours(b, r)}:
                    if self.indexes[b].records[n].T_odom_grid is None:
                        rec = self.indexes[b].records[n]
                        raise ValueError(
                            f"{self.indexes[b].bag}: frame at {rec.stamp_ns} ns has no /tf "
                            "odom -> base_link "
                            "pose, needed for temporal neighbours"
                        )

    def __len__(self) -> int:
        return len(self.items)

    def _neighbours(self, b: int, r: int) -> list[int]:
        last = len(self.indexes[b].records) - 1
        return [min(max(r + o, 0), last) for o in self.temporal_offsets]

    def __getitem__(self, i: int) -> dict:
        b, r = self.items[i]
        index = self.indexes[b]
        rec = index.records[r]
        image = index.load_image(r)
        labels = index.load_ground_truth(r)
        h, w = image.shape[:2]
        cloud = index.load_points(r)
        if cloud is None:
            sem2d = np.full((h, w), IGNORE, dtype=np.int64)
            depth = np.zeros((h, w), dtype=np.float32)
        else:
            scan, raw = cloud
            sem2d, depth = project_lidar(
                scan[:, :3], SEMANTIC_KITTI.remap_point_labels(raw), rec.K, rec.T_cam_grid, (h, w)
            )
        t_images, t_poses = [], []
        for n in self._neighbours(b, r):
            t_images.append(_to_chw(index.load_image(n)))
            nrec = index.records[n]
            # current grid -> odom -> neighbour grid -> neighbour camera
            t_poses.append(nrec.T_cam_grid @ invert_rigid(nrec.T_odom_grid) @ rec.T_odom_grid)
        extra = {}
        if self.queries is not None:
            extra["proposals"] = torch.from_numpy(self.queries[b].load(rec.kitti_frame))
        return {
            **extra,
            "image": _to_chw(image),
            "K": torch.from_numpy(rec.K.astype(np.float32)),
            "T_cam_grid": torch.from_numpy(rec.T_cam_grid.astype(np.float32)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "labels_half": torch.from_numpy(downsample_labels(labels).astype(np.int64)),
            "sem2d": torch.from_numpy(sem2d),
            "depth": torch.from_numpy(depth),
            "temporal_images": torch.stack(t_images) if t_images else torch.zeros((0, 3, h, w)),
            "temporal_T_cam_grid": torch.from_numpy(np.stack(t_poses).astype(np.float32))
            if t_poses
            else torch.zeros((0, 4, 4)),
            "stamp_ns": torch.tensor(rec.stamp_ns, dtype=torch.int64),
            "index": i,
        }


def _query_files(bag: Path, root: Path):
    """The query files of the sequence ``bag`` was converted from (its converter metadata)."""
    from monoocc_ros.evaluation.offline import bag_sequence
    from monoocc_ros.models.proposals import QueryFiles

    sequence = bag_sequence(bag)
    if sequence is None:
        raise ValueError(f"{bag}: no KITTI sequence in the bag's metadata, so its query files cannot be found")
    try:
        return QueryFiles(root, sequence)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e


def _to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
