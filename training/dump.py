"""``monoocc train dump-teacher``: the frozen teacher's voxel features on disk, for cached distillation.

Under torchrun each rank computes every world_size-th frame and writes those frames' files;
rank 0 gathers the stamps and writes the manifests, which is what makes a split usable
(:class:`~training.feature_cache.TeacherFeatureCache`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.config import TrainConfig
from training.data import open_dataset, to_device
from training.ddp import all_gather_objects, autocast, init_distributed, shutdown_distributed
from training.errors import TrainingError
from training.feature_cache import TeacherFeatureCache, cache_settings
from training.logs import configure_logging
from training.teacher_source import OnlineTeacher, teacher_forward

__all__ = ["dump_teacher"]

log = logging.getLogger(__name__)


@torch.no_grad()
def dump_teacher(cfg: TrainConfig) -> list[Path]:
    """Write the frozen teacher's voxel features for the train (and val) bags as fp16 files.

    Uses ``distill.teacher_checkpoint`` and writes ``<distill.cache_dir>/{train,val}/``.

    Returns:
        The split folders written (on rank 0; empty on the other ranks).

    Raises:
        TrainingError: no teacher checkpoint or cache_dir, a bad checkpoint or bag.
    """
    dc = cfg.distill
    if not dc.teacher_checkpoint or not dc.cache_dir:
        raise TrainingError("dump-teacher needs distill.teacher_checkpoint and distill.cache_dir")
    env = init_distributed(cfg.device)
    configure_logging(env.rank)
    try:
        source = OnlineTeacher.load(Path(dc.teacher_checkpoint), cfg.precision, env.device)
        teacher = source.teacher
        settings = cache_settings(source.temporal_offsets, cfg.data.image_scale)
        written = []
        d = cfg.data
        splits = [("train", d.train_bags, d.max_train_frames)]
        if d.val_bags:
            splits.append(("val", d.val_bags, d.max_val_frames))
        for split, bags, limit in splits:
            dataset = open_dataset(bags, f"data.{split}_bags", source.temporal_offsets, limit, d.image_scale)
            folder = Path(dc.cache_dir) / split
            cache = TeacherFeatureCache.create(
                folder,
                teacher_checkpoint=Path(dc.teacher_checkpoint),
                bags=[Path(b) for b in bags],
                settings=settings,
                feature_shape=[teacher.cfg.voxel.embed_dim, *teacher.occupancy.grid_size],
            )
            indices = list(range(env.rank, len(dataset), env.world_size))
            loader = DataLoader(dataset, batch_size=1, sampler=indices, num_workers=cfg.num_workers)
            for batch in tqdm(loader, desc=f"dump-teacher {split}", disable=not env.is_main):
                batch = to_device(batch, env.device)
                with autocast(cfg.precision, env.device):
                    out = teacher_forward(teacher, batch)
                cache.put(int(batch["index"][0]), int(batch["stamp_ns"][0]), out["voxel_features"][0])
            stamps = all_gather_objects(cache.manifest.stamps)
            if env.is_main:
                for part in stamps:
                    cache.manifest.stamps.update(part)
                cache.finish()
                written.append(folder)
                log.info("[dump-teacher] %s: %d frames -> %s", split, len(dataset), folder)
        return written
    finally:
        shutdown_distributed()
