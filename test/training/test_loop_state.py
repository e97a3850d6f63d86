"""Per-rank sharding with mid-epoch skip, RNG state round trip, atomic training checkpoints."""

import random

import numpy as np
import pytest
import torch

from training.checkpoint import LoopState, capture_rng_state, load_training_state, restore_rng_state, save_training_state
from training.ddp import ShardedSampler


def test_shards_cover_the_epoch_and_change_per_epoch():
    shards = [ShardedSampler(7, rank=r, world_size=2, seed=5) for r in (0, 1)]
    for s in shards:
        s.set_epoch(0)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 4  # padded to a multiple of the world size
    assert set(a) | set(b) == set(range(7)) and not set(a[:3]) & set(b[:3])
    shards[0].set_epoch(1)
    assert list(shards[0]) != a


def test_skip_resumes_inside_an_epoch():
    s = ShardedSampler(10, seed=1)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, skip=4)
    assert list(s) == full[4:] and len(s) == 6


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_training_checkpoint_round_trip_and_model_only_refused(tmp_path):
    from monoocc_ros.models.checkpoint import SCHEMA, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    payload = {"schema": SCHEMA, "config_name": "x", "model_config": {}, "model": model.state_dict(), "meta": {}}
    path = tmp_path / "last.pt"
    save_training_state(
        path, model_payload=payload, optimizer=opt, scheduler=sched, scaler=None,
        rng_per_rank=[capture_rng_state()], loop=LoopState(1, 2, 3, 0.5), train_config={"seed": 1},
    )
    state = load_training_state(path)
    assert state["loop"] == {"epoch": 1, "step_in_epoch": 2, "global_step": 3, "best_miou": 0.5}
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    restore_rng_state(state["rng"][0])
    save_checkpoint(tmp_path / "model.pt", payload)
    with pytest.raises(ValueError, match="without training state"):
        load_training_state(tmp_path / "model.pt")
