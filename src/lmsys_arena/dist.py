"""Distributed helpers: rank, world size, barrier (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK).

Outside torchrun everything is rank 0 of 1 and nothing imports torch.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def init() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group once under torchrun
    (NCCL with CUDA, else gloo)."""
    world = world_size()
    if world == 1:
        return 0, 1, 0
    import torch
    import torch.distributed as dist

    local = local_rank()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local


def barrier() -> None:
    """Wait for every rank (no-op outside an initialised process group)."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
