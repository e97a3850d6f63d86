"""LR schedule: mmcv linear warm-up from lr/3 and per-epoch cosine to min_lr_ratio."""

import math

import pytest
import torch

from training.schedule import WarmupCosine


def test_warmup_starts_at_ratio_and_reaches_one():
    s = WarmupCosine(steps_per_epoch=1000, epochs=20, warmup_iters=500, warmup_ratio=1 / 3, min_lr_ratio=1e-3)
    assert s(0) == pytest.approx(1 / 3)
    assert s(250) == pytest.approx(1 - 0.5 * (2 / 3))
    assert s(500) == pytest.approx(1.0)
    assert s(999) == pytest.approx(1.0)


def test_cosine_by_epoch_to_floor():
    s = WarmupCosine(steps_per_epoch=10, epochs=4, warmup_iters=0, warmup_ratio=1 / 3, min_lr_ratio=1e-3)
    expected = [1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]
    assert [s(10 * e) for e in range(5)] == pytest.approx(expected)
    assert s(15) == s(10)  # constant inside an epoch, as mmcv's by-epoch annealing
    assert s(40) == pytest.approx(1e-3)


def test_lambda_lr_state_round_trip():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(5, 2, 3, 1 / 3, 1e-3))
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([p], lr=2e-4)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, WarmupCosine(5, 2, 3, 1 / 3, 1e-3))
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    assert sched.get_last_lr()[0] == pytest.approx(2e-4)
