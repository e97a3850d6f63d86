"""Learning-rate schedule: mmcv-style linear warm-up then per-epoch cosine annealing.

MonoOcc (spec §5.2) trains with ``CosineAnnealing`` by epoch down to ``min_lr_ratio`` and a
500-iteration linear warm-up starting at ``lr / 3``. mmcv computes the warm-up on top of the
regular (cosine) learning rate: ``lr_warm = lr_regular * (1 - (1 - it / warmup_iters) * (1 - ratio))``.

Example:
    >>> sched = WarmupCosine(steps_per_epoch=10, epochs=2, warmup_iters=0, warmup_ratio=1/3,
    ...                      min_lr_ratio=1e-3)
    >>> [round(sched(step), 4) for step in (0, 10, 20)]  # epochs 0, 1, 2: cosine from 1 to min_lr_ratio
    [1.0, 0.5005, 0.001]
    >>> warm = WarmupCosine(steps_per_epoch=10, epochs=2, warmup_iters=4, warmup_ratio=1/3, min_lr_ratio=1e-3)
    >>> [round(warm(step), 4) for step in (0, 2, 4)]  # linear from lr / 3 to lr over 4 steps
    [0.3333, 0.6667, 1.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WarmupCosine"]


@dataclass
class WarmupCosine:
    """Multiplicative LR factor per optimiser step, usable as a ``LambdaLR`` lambda.

    A plain dataclass (not a closure) so that ``LambdaLR.state_dict`` can store it.

    Attributes:
        steps_per_epoch: optimiser steps in one epoch (the cosine advances at epoch ends).
        epochs: total epochs.
        warmup_iters: linear warm-up length in steps (0 disables it).
        warmup_ratio: factor at step 0 of the warm-up.
        min_lr_ratio: factor at the end of the cosine.
    """

    steps_per_epoch: int
    epochs: int
    warmup_iters: int
    warmup_ratio: float
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        epoch = min(step // max(self.steps_per_epoch, 1), self.epochs)
        cos = 0.5 * (1.0 + math.cos(math.pi * epoch / max(self.epochs, 1)))
        regular = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cos
        if step < self.warmup_iters:
            k = (1.0 - step / self.warmup_iters) * (1.0 - self.warmup_ratio)
            return regular * (1.0 - k)
        return regular
