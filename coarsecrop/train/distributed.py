"""Process group set-up: one process as is, or many under torchrun (env:// rendezvous).

gloo on CPU, NCCL on CUDA. Under torchrun each process takes ``cuda:LOCAL_RANK``, and a process
group is formed even for a world of one (``torchrun --nproc_per_node=1``), so one GPU runs the same
DDP / SyncBN / NCCL path as many. Nothing here assumes a GPU is present.

The host-side agreements (the stop vote every step, the RNG states of a checkpoint, the logged loss
mean) go over a gloo group on CPU tensors, beside NCCL: a collective on the NCCL group would queue
behind the step's kernels and make the host wait for the GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from coarsecrop.device import resolve_device


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when running as a single process without a process group
    host_group: object = None  # gloo group for CPU-tensor collectives (None: the default group, gloo itself)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets these for every process it starts."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ


def init_distributed(device_name: str) -> Dist:
    """Join the process group torchrun describes in the environment, or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size == 1 and not launched_by_torchrun():
        return Dist(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                device_id=device if device.type == "cuda" else None)
    host_group = dist.new_group(backend="gloo") if backend == "nccl" else None
    return Dist(rank, world_size, local_rank, device, backend, host_group)


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def any_true(flag: bool, d: Dist) -> bool:
    """True on every process when any process's flag is true (a stop request seen by one stops all)."""
    if not d.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=d.host_group)  # CPU, gloo: no wait on the GPU
    return bool(t.item() > 0)


def mean_over_ranks(value: float, d: Dist) -> float:
    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, group=d.host_group)
    return float(t.item() / d.world_size)


def gather_objects(obj, d: Dist) -> list:
    """Every process's ``obj`` on every process (used for per-rank RNG states in checkpoints)."""
    if not d.active:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj, group=d.host_group)
    return out


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
