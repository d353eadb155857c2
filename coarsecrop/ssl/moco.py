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
Not behaviour-preserving, and small: the cosine learning rate moves every step (``train.optim``), where
main_moco.py sets it once per epoch (at most pi / (2 epochs) of the peak apart: 0.4% at 400 epochs).

What DenseCL and BYOL share with it (the EMA update, InfoNCE, the queue write, the cross-process gather
and shuffle helpers, the checks) is in ``coarsecrop.ssl.common``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.models.heads import moco_v2_projector
from coarsecrop.models.narrow import trunk_channels
from coarsecrop.ssl.common import (batch_shuffle, batch_unshuffle, check_common, check_views, contrast_stats,
                                  ema_update, enqueue, frozen_copy, has_sync_bn, info_nce, world_size)


class MoCoV2(nn.Module):
    """MoCo-v2 on any trunk returning [B, C, h, w] (global average pooled here)."""

    pipeline = "moco_v2"

    def __init__(self, backbone: nn.Module, image_size: int = 224, dim: int = 128, hidden_dim: int = 2048,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2,
                 symmetric: bool = False, shuffle_bn: bool = True, random_resized_crop: bool = True,
                 local_views: int = 0):
        """
        backbone: the trunk being trained (query encoder); exported as phi / the pretrained model.
        image_size: view size S of its views (coarsecrop.data.views.method_views).
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
        self.keys_per_image = len(enqueued_views(symmetric))  # what one step enqueues, per image of the batch

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
