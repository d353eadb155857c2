"""MoCo-v2: a query encoder, a momentum key encoder and a queue of negative keys (paper Sec. 3.1, Eq. 1).

Follows facebookresearch/moco moco/builder.py (MoCo-v2 = MoCo with --mlp --aug-plus --cos), with
the paper's settings (Sec. 4.1): queue 65,536, key momentum 0.999, temperature 0.2, MLP head with
hidden 2048 and output 128, SGD lr 0.3 at batch 256 (the lr of DenseCL's COCO configs; MoCo-v2's
ImageNet lr was 0.03), weight decay 1e-4, momentum 0.9, cosine schedule.

Differences from builder.py, all behaviour-preserving:
- the key encoder is updated by ``momentum_update()``, called by the trainer after
  optimizer.step(), instead of at the start of forward (same sequence of weights);
- the queue write wraps around, so the queue size need not be a multiple of the global batch;
- shuffle-BN gathers over any backend (gloo on CPU, NCCL on GPU) and is skipped on one process,
  where shuffling inside the batch would change nothing, and when the key encoder already has
  SyncBatchNorm (the trainer converts on GPU), whose statistics span all processes anyway;
- the loss is computed in float32 even under bf16 autocast.

This module also holds what DenseCL and BYOL reuse: the EMA update, InfoNCE, the queue write and
the cross-process gather / shuffle helpers.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from coarsecrop.data.views import view_pipeline
from coarsecrop.models.heads import moco_v2_projector
from coarsecrop.models.narrow import trunk_channels


class MoCoV2(nn.Module):
    """MoCo-v2 on any trunk returning [B, C, h, w] (global average pooled here)."""

    pipeline = "moco_v2"

    def __init__(self, backbone: nn.Module, image_size: int = 224, dim: int = 128, hidden_dim: int = 2048,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2,
                 symmetric: bool = False, shuffle_bn: bool = True, random_resized_crop: bool = True,
                 local_views: int = 0):
        """
        backbone: the trunk being trained (query encoder); exported as phi / the pretrained model.
        image_size: view size S of ``view_transform()``.
        dim: output (key) dimension of the MLP head (128).
        hidden_dim: hidden width of the MLP head (2048).
        queue_size: number of negative keys K (65,536).
        momentum: key encoder momentum m (0.999), constant over training.
        temperature: softmax temperature tau (0.2).
        symmetric: False = MoCo-v2's loss (query from view 1, key from view 2); True = also the
            swapped pair, loss averaged, both keys enqueued (2 keys per image in the queue).
        shuffle_bn: shuffle the key batch across processes (MoCo's shuffle-BN) when there is more
            than one process and the key encoder has no SyncBatchNorm.
        random_resized_crop: False = views resize the whole pseudo-image (Table 15).
        local_views: k SwAV-style small views (Table 11's s3); each is a query against both global
            keys, averaged with the global pair(s).
        """
        super().__init__()
        check_common(image_size, momentum, local_views)
        if queue_size < 1 or dim < 1 or hidden_dim < 1:
            raise ValueError(f"queue_size, dim and hidden_dim must be positive, got {queue_size}, {dim}, {hidden_dim}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.image_size, self.random_resized_crop, self.local_views = image_size, random_resized_crop, local_views
        self.queue_size, self.momentum, self.temperature = queue_size, momentum, temperature
        self.symmetric, self.shuffle_bn = symmetric, shuffle_bn

        # query encoder: trunk + MLP; key encoder: a copy updated only by momentum_update()
        self.backbone = backbone
        self.projector = moco_v2_projector(trunk_channels(backbone), hidden_dim, dim)
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)

        # the queue: K normalised keys as columns, oldest overwritten first
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def optimizer_defaults(self) -> dict:
        """Paper Sec. 4.1 (lr 0.3 at batch 256) and MoCo-v2 (SGD momentum 0.9, wd 1e-4, cosine, no warm-up)."""
        return dict(name="sgd", lr=0.3, ref_batch=256, weight_decay=1e-4, momentum=0.9, paper_batch=256,
                    warmup_epochs=0, exclude_bias_and_norm=False)

    def view_transform(self, image_size: int | None = None, photometric_on: str = "worker"):
        """MoCo-v2 views (2 global [+ k local]) of one uint8 pseudo-image."""
        return view_pipeline(self.pipeline, image_size or self.image_size,
                             random_resized_crop=self.random_resized_crop, local_views=self.local_views,
                             photometric_on=photometric_on)

    @torch.no_grad()
    def momentum_update(self, progress: float = 0.0) -> None:
        """Key encoder <- m * key encoder + (1 - m) * query encoder (m constant; progress unused)."""
        ema_update(self.momentum_backbone, self.backbone, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> normalised queries [B, dim]."""
        return F.normalize(self.projector(self.backbone(x).mean(dim=(2, 3))), dim=1)

    @torch.no_grad()
    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> normalised keys [B, dim], with shuffle-BN across processes when it applies."""
        x, idx_unshuffle = batch_shuffle(x) if self.use_shuffle_bn() else (x, None)
        k = F.normalize(self.momentum_projector(self.momentum_backbone(x).mean(dim=(2, 3))), dim=1)
        return batch_unshuffle(k, idx_unshuffle)

    def use_shuffle_bn(self) -> bool:
        return self.shuffle_bn and world_size() > 1 and not has_sync_bn(self.momentum_backbone)

    def forward(self, views: list[torch.Tensor]) -> dict:
        """views: [view 1, view 2, local views ...], each [B, 3, s, s]. Returns the loss and what to log."""
        check_views(views, 2)
        pairs = contrast_pairs(len(views), self.symmetric)  # (query view, key view)
        keys = {j: self.encode_key(views[j]) for j in sorted({j for _, j in pairs})}  # [B, dim] each
        queries = {i: self.encode_query(views[i]) for i in sorted({i for i, _ in pairs})}  # [B, dim] each

        losses, first_logits = [], None
        for i, j in pairs:
            loss, logits = info_nce(queries[i], keys[j], self.queue, self.temperature)
            losses.append(loss)
            first_logits = logits if first_logits is None else first_logits
        loss = torch.stack(losses).mean()

        enqueue(self.queue, self.queue_ptr, torch.cat([keys[j] for j in enqueued_views(self.symmetric)]))
        return dict(loss=loss, **contrast_stats(first_logits, self.temperature))


def contrast_pairs(num_views: int, symmetric: bool) -> list[tuple[int, int]]:
    """(query view, key view) pairs: (0, 1) [+ (1, 0) if symmetric] + (l, 0), (l, 1) for local views l >= 2."""
    pairs = [(0, 1), (1, 0)] if symmetric else [(0, 1)]
    return pairs + [(local, g) for local in range(2, num_views) for g in (0, 1)]


def enqueued_views(symmetric: bool) -> tuple[int, ...]:
    """Whose keys enter the queue: the positives of the global pair(s)."""
    return (1, 0) if symmetric else (1,)


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
        raise ValueError(f"expected {wanted} views, got {len(views)}; use the method's view_transform()")
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
