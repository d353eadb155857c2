"""Devices: one rule for ``auto | cpu | cuda | cuda:K``, and what a compute path does differently on CUDA.

Every compute path takes a device; CPU is the path the tests run and nothing assumes a GPU is there.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None) -> cuda when torch sees a GPU, else cpu; ``cpu``; ``cuda`` -> cuda:LOCAL_RANK
    (one GPU per torchrun rank, modulo the GPUs visible); ``cuda:K`` as given. A CUDA device becomes the
    current one. Anything else, CUDA without a GPU, or a GPU index that does not exist: ValueError."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a device; use auto, cpu, cuda or cuda:K") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not a device; use auto, cpu, cuda or cuda:K")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for CUDA but torch sees no GPU; use device cpu or auto")
        index = local_rank % torch.cuda.device_count() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"cuda:{index} does not exist ({torch.cuda.device_count()} GPUs visible)")
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    return dev


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU (fp32 keeps CPU results exact)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(module: nn.Module, device: torch.device) -> nn.Module:
    """Move to ``device``; channels_last on CUDA."""
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if device.type == "cuda" else module
