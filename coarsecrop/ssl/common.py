"""What the SSL methods share: InfoNCE and the queue write (MoCo-v2, DenseCL), the EMA update and frozen
copies (the momentum encoders of MoCo-v2, DenseCL and BYOL), the argument and view checks, and the
cross-process gather and shuffle helpers (no-ops on one process)."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float):
    """Eq. (1): -log exp(q.k+/t) / (exp(q.k+/t) + sum_k- exp(q.k-/t)), averaged over the batch.

    q, k: [N, D] L2-normalised (k without gradient); queue: [D, K] normalised negatives.
    Returns (loss, logits [N, 1 + K], positive first). Computed in float32."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k = q.float(), k.float()
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # [N, 1]
        # [N, K]; on a copy, since the queue is overwritten before backward
        l_neg = torch.einsum("nc,ck->nk", q, queue.detach().clone().float())
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # [N, 1 + K]
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # the positive is index 0
        return F.cross_entropy(logits, labels), logits


@torch.no_grad()
def contrast_stats(logits: torch.Tensor, temperature: float) -> dict:
    """Detached numbers to log: top-1 accuracy of the positive, mean positive and negative cosine."""
    return dict(acc=(logits.argmax(dim=1) == 0).float().mean(),
                pos_cos=logits[:, 0].mean() * temperature,
                neg_cos=logits[:, 1:].mean() * temperature)


@torch.no_grad()
def enqueue(queue: torch.Tensor, queue_ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write the keys of all processes (in rank order) at the pointer, wrapping around; move the pointer.

    queue: [D, K]; queue_ptr: long [1]; keys: [N, D] of this process. No host sync."""
    keys = concat_all_gather(keys.detach())  # [N * world, D]
    n, size = keys.shape[0], queue.shape[1]
    if n > size:
        raise ValueError(f"{n} keys per step (global batch) exceed the queue size {size}; enlarge queue_size")
    idx = (queue_ptr + torch.arange(n, device=queue.device)) % size  # [n], distinct
    queue[:, idx] = keys.T.to(queue.dtype)
    queue_ptr.copy_((queue_ptr + n) % size)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, parameter by parameter (buffers are not averaged)."""
    target_params = [p for p in target.parameters()]
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise RuntimeError("momentum encoder and encoder have different parameter lists")
    torch._foreach_mul_(target_params, m)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - m)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with the same weights and requires_grad=False (updated only by EMA)."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def check_common(image_size: int, momentum: float, local_views: int = 0) -> None:
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 px, got {image_size}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if local_views < 0:
        raise ValueError(f"local_views must be >= 0, got {local_views}")


def check_views(views, min_views: int, max_views: int | None = None) -> None:
    """views must be a list of [B, 3, s, s] tensors with one batch size and equal global views."""
    if not isinstance(views, (list, tuple)) or not all(isinstance(v, torch.Tensor) for v in views):
        raise TypeError(f"a method takes a list of view batches [B, 3, S, S], got {type(views).__name__}")
    if len(views) < min_views or (max_views is not None and len(views) > max_views):
        wanted = min_views if max_views == min_views else f"{min_views}..{max_views or 'any'}"
        raise ValueError(f"expected {wanted} views, got {len(views)}; use coarsecrop.data.views.method_views(method)")
    for v in views:
        if v.ndim != 4 or v.shape[1] != 3:
            raise ValueError(f"each view batch must be [B, 3, S, S], got {list(v.shape)}")
        if v.shape[0] != views[0].shape[0]:
            raise ValueError(f"views have different batch sizes: {[x.shape[0] for x in views]}")
    if min_views >= 2 and views[0].shape != views[1].shape:
        raise ValueError(f"the two global views differ in shape: {list(views[0].shape)} vs {list(views[1].shape)}")


def has_sync_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.SyncBatchNorm) for m in module.modules())


# ---- cross-process helpers (no-ops on one process) -------------------------------------------

def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from all processes along dim 0, in rank order (no gradient). Identity on one process."""
    if world_size() == 1:
        return x
    gathered = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, x.contiguous())
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor):
    """MoCo's shuffle-BN: gather the batch, permute it (permutation of rank 0), keep this rank's slice.

    Returns (x_this [B, ...], idx_unshuffle [B * world]). All processes need the same batch size."""
    sizes = concat_all_gather(torch.tensor([x.shape[0]], device=x.device))
    if bool((sizes != x.shape[0]).any()):
        raise ValueError(f"shuffle-BN needs the same batch size on every process, got {sizes.tolist()}; "
                         "use drop_last=True in the DataLoader")
    x_all = concat_all_gather(x)  # [B * world, ...]
    idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    idx_this = idx_shuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, idx_unshuffle: torch.Tensor | None) -> torch.Tensor:
    """Undo batch_shuffle on an encoded batch (identity when idx_unshuffle is None)."""
    if idx_unshuffle is None:
        return x
    x_all = concat_all_gather(x)
    idx_this = idx_unshuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
    return x_all[idx_this]
