"""A student trained as the paper did: DCA queries from VoxFormer query files (official protocol)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monoocc_ros.data.bag_dataset import BagDataset
from monoocc_ros.grid import KITTI_GRID_HALF
from monoocc_ros.models.checkpoint import load_checkpoint
from monoocc_ros.models.proposals import read_query_file
from training.config import BUILTIN_CONFIG_DIR, load_train_config
from training.ddp import DistEnv
from training.errors import TrainingError
from training.trainer import LOSS_LOG, Trainer

FAST = ["data.image_scale=0.125", "num_workers=0", "log_images=false", "device=cpu", "validate=false", "epochs=1",
        "distill.mode=off", "distill.teacher_checkpoint="]


def _write_queries(root: Path, frames, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "sequences" / "00" / "queries"
    folder.mkdir(parents=True)
    for f in frames:
        grid = rng.random(KITTI_GRID_HALF.num_voxels) < 0.05
        np.packbits(grid.astype(np.uint8)).tofile(folder / f"{f:06d}.query_test")
    return root


def test_bag_dataset_carries_the_frames_proposals(synthetic_bag, tmp_path):
    queries = _write_queries(tmp_path / "q", [0, 10])  # frame 5 (and the rest) without a file
    ds = BagDataset([synthetic_bag], queries=queries)
    kept = [ds.indexes[b].records[r].kitti_frame for b, r in ds.items]
    assert kept == [0, 10]
    assert any("KITTI frame 5" in p and "no query file" in p for p in ds.problems)
    sample = ds[1]
    assert sample["proposals"].dtype == torch.bool and sample["proposals"].shape == (128, 128, 16)
    want = read_query_file(queries / "sequences" / "00" / "queries" / "000010.query_test")
    assert torch.equal(sample["proposals"], torch.from_numpy(want))
    assert "proposals" not in BagDataset([synthetic_bag])[0]


def test_student_trains_a_few_steps_on_query_files(synthetic_bag, tmp_path):
    queries = _write_queries(tmp_path / "q", range(0, 20))
    out = tmp_path / "run"
    items = FAST + [f"data.train_bags={synthetic_bag}", "data.max_train_frames=2", "max_steps=2", f"out_dir={out}",
                    f"data.queries={queries}"]
    trainer = Trainer(load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml", items), DistEnv())
    assert trainer.model_cfg.proposal.mode == "external"
    seen = []
    trainer.model.occupancy.dca[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    trainer.run()
    losses = [json.loads(line)["loss"] for line in (out / LOSS_LOG).read_text().splitlines()]
    assert len(losses) >= 2 and all(np.isfinite(losses))
    # DCA ran on the files' proposals (5 % of the voxels each), not on every voxel
    assert seen and all(0 < n < 0.1 * KITTI_GRID_HALF.num_voxels for n in seen), seen
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_config"]["proposal"]["mode"] == "external"

    no_queries = [i for i in items if not i.startswith("data.queries=")]
    cfg = load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml", no_queries)
    Trainer(cfg, DistEnv())  # the default student makes its own proposals
    with pytest.raises(TrainingError, match="teacher makes its own queries"):
        Trainer(load_train_config(BUILTIN_CONFIG_DIR / "teacher_tiny.yaml", items), DistEnv())
