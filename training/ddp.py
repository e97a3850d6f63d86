"""Distributed data parallel helpers: torchrun environment, per-rank sharding, reductions.

The same command runs on one process or under ``torchrun --nproc_per_node N`` (any number of
nodes): :func:`init_distributed` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, picks ``nccl``
on CUDA and ``gloo`` on CPU, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = [
    "DistEnv",
    "init_distributed",
    "shutdown_distributed",
    "ShardedSampler",
    "all_reduce_sum",
    "all_reduce_mean",
    "all_gather_objects",
    "broadcast_object",
    "broadcast_buffers",
    "unwrap",
    "autocast",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 writes checkpoints and logs.
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
        device: torch device of this rank.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the torchrun process group if there is one.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class ShardedSampler(Sampler[int]):
    """Per-rank shard of a deterministic per-epoch permutation, resumable mid-epoch.

    Like ``DistributedSampler``: the permutation of epoch e is drawn from ``seed + e``, padded
    by wrapping to a multiple of the world size and dealt round-robin, so every rank has the
    same number of samples. :meth:`set_epoch` with ``skip`` drops the first ``skip`` samples
    of this rank's shard, which is how an interrupted epoch continues where it stopped.

    Args:
        length: dataset size.
        rank / world_size: this rank's position.
        seed: base seed shared by all ranks.
        shuffle: False keeps the dataset order (validation).
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.length = length
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    @property
    def shard_size(self) -> int:
        return -(-self.length // self.world_size)

    def shard(self) -> list[int]:
        """This rank's full index list for the current epoch (before ``skip``)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.shard_size * self.world_size
        order = (order * (-(-total // self.length)))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.skip :])

    def __len__(self) -> int:
        return max(self.shard_size - self.skip, 0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op without a process group)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean over ranks of each value (every rank must pass the same keys); a copy without a group.

    Sums in float64, so a mean over ranks of float32 losses is exact to float32 precision.
    """
    if not dist.is_initialized():
        return dict(values)
    keys = sorted(values)
    total = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    mean = dict(zip(keys, (total / dist.get_world_size()).tolist()))
    return {k: mean[k] for k in values}  # in the caller's order


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP does this at the start of each forward, so after the last step the ranks' running
    statistics still differ by their local batches; calling this before a checkpoint or at the
    end makes every rank hold the weights rank 0 saves.
    """
    if dist.is_initialized():
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer.data, src=0)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or ``torch.compile``) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def autocast(precision: str, device: torch.device) -> ContextManager:
    """Mixed precision for ``precision`` (fp32: none, bf16, fp16) on ``device``'s type."""
    from monoocc_ros.predictor import PRECISIONS

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
