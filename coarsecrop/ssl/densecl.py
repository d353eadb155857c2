"""DenseCL: MoCo-v2 plus a dense projection head and a dense InfoNCE over matched locations.

Wang et al. 2021 (WXinlong/DenseCL openselfsup/models/densecl.py, necks.py DenseCLNeck):
- global branch = MoCo-v2 (pooled trunk -> MLP 2048 -> 128, queue of keys);
- dense branch: conv1x1-ReLU-conv1x1 (2048 -> 128) at each of the S = h*w locations; each query
  location is matched to the key location whose *trunk* feature is most cosine-similar (argmax);
  its positive is the key's dense vector there, its negatives a second queue that stores the
  spatial mean of each key image's dense map (normalised);
- loss = (1 - lambda) L_global + lambda L_dense, lambda = 0.5, temperature 0.2, queues 65,536,
  key momentum 0.999; optimisation and augmentations as MoCo-v2 (paper Sec. 4.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.models.heads import dense_projector, moco_v2_projector
from coarsecrop.models.narrow import trunk_channels
from coarsecrop.ssl.common import (batch_shuffle, batch_unshuffle, check_common, check_views, contrast_stats,
                                   ema_update, enqueue, frozen_copy, has_sync_bn, info_nce, world_size)


class DenseCL(nn.Module):
    """DenseCL on any trunk returning [B, C, h, w]."""

    pipeline = "moco_v2"

    def __init__(self, backbone: nn.Module, image_size: int = 224, dim: int = 128, hidden_dim: int = 2048,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2,
                 loss_lambda: float = 0.5, shuffle_bn: bool = True, random_resized_crop: bool = True):
        """
        backbone: the trunk being trained (query encoder); exported as phi / the pretrained model.
        image_size: view size S of its views (coarsecrop.data.views.method_views).
        dim: output dimension of both heads (128).
        hidden_dim: hidden width of both heads (2048).
        queue_size: negatives K of each queue (65,536).
        momentum: key encoder momentum (0.999), constant.
        temperature: softmax temperature of both losses (0.2).
        loss_lambda: weight lambda of the dense loss (0.5).
        shuffle_bn: MoCo's shuffle-BN across processes (see moco.py).
        random_resized_crop: False = views resize the whole pseudo-image (Table 15).
        """
        super().__init__()
        check_common(image_size, momentum)
        if queue_size < 1 or dim < 1 or hidden_dim < 1:
            raise ValueError(f"queue_size, dim and hidden_dim must be positive, got {queue_size}, {dim}, {hidden_dim}")
        if temperature <= 0 or not 0.0 <= loss_lambda <= 1.0:
            raise ValueError(f"need temperature > 0 and loss_lambda in [0, 1], got {temperature}, {loss_lambda}")
        self.image_size, self.random_resized_crop, self.local_views = image_size, random_resized_crop, 0
        self.queue_size, self.momentum, self.temperature = queue_size, momentum, temperature
        self.loss_lambda, self.shuffle_bn = loss_lambda, shuffle_bn
        self.keys_per_image = 1  # what one step enqueues into each queue, per image of the batch

        channels = trunk_channels(backbone)
        self.backbone = backbone
        self.projector = moco_v2_projector(channels, hidden_dim, dim)  # global: [B, C] -> [B, dim]
        self.dense_projector = dense_projector(channels, hidden_dim, dim)  # dense: [B, C, h, w] -> [B, dim, h, w]
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.momentum_dense_projector = frozen_copy(self.dense_projector)

        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("dense_queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("dense_queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def optimizer_defaults(self) -> dict:
        """As MoCo-v2 (paper Sec. 4.1; DenseCL's configs: SGD lr 0.3 at batch 256, wd 1e-4, cosine)."""
        return dict(name="sgd", lr=0.3, ref_batch=256, weight_decay=1e-4, momentum=0.9, paper_batch=256,
                    warmup_epochs=0, exclude_bias_and_norm=False)

    @torch.no_grad()
    def momentum_update(self, progress: float = 0.0) -> None:
        """Key encoder (trunk and both heads) <- m * key + (1 - m) * query."""
        ema_update(self.momentum_backbone, self.backbone, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)
        ema_update(self.momentum_dense_projector, self.dense_projector, self.momentum)

    def encode_query(self, x: torch.Tensor):
        """[B, 3, S, S] -> (q [B, dim], q_grid [B, dim, s], q_feat [B, C, s]), all L2-normalised over channels."""
        feat = self.backbone(x)  # [B, C, h, w]
        q = F.normalize(self.projector(feat.mean(dim=(2, 3))), dim=1)
        q_grid = F.normalize(self.dense_projector(feat).flatten(2), dim=1)
        return q, q_grid, F.normalize(feat.detach().flatten(2), dim=1)

    @torch.no_grad()
    def encode_key(self, x: torch.Tensor):
        """[B, 3, S, S] -> (k [B, dim], k_grid [B, dim, s], k_pooled [B, dim], k_feat [B, C, s]), normalised."""
        shuffle = self.shuffle_bn and world_size() > 1 and not has_sync_bn(self.momentum_backbone)
        x, idx_unshuffle = batch_shuffle(x) if shuffle else (x, None)
        feat = self.momentum_backbone(x)  # [B, C, h, w]
        k = F.normalize(self.momentum_projector(feat.mean(dim=(2, 3))), dim=1)
        dense = self.momentum_dense_projector(feat)  # [B, dim, h, w]
        k_grid = F.normalize(dense.flatten(2), dim=1)
        k_pooled = F.normalize(dense.mean(dim=(2, 3)), dim=1)  # what enters the dense queue
        k_feat = F.normalize(feat.flatten(2), dim=1)
        return tuple(batch_unshuffle(t, idx_unshuffle) for t in (k, k_grid, k_pooled, k_feat))

    def forward(self, views: list[torch.Tensor]) -> dict:
        """views: [query view, key view], each [B, 3, S, S]. Returns the loss and what to log."""
        check_views(views, 2, 2)
        q, q_grid, q_feat = self.encode_query(views[0])
        k, k_grid, k_pooled, k_feat = self.encode_key(views[1])

        # global InfoNCE, as MoCo-v2
        loss_global, logits = info_nce(q, k, self.queue, self.temperature)

        # dense InfoNCE: every query location against the best-matching key location
        k_matched = match_dense(q_feat, k_feat, k_grid)  # [B, dim, s]
        dim = q_grid.shape[1]
        q_dense = q_grid.transpose(1, 2).reshape(-1, dim)  # [B * s, dim]
        k_dense = k_matched.transpose(1, 2).reshape(-1, dim)  # [B * s, dim]
        loss_dense, _ = info_nce(q_dense, k_dense, self.dense_queue, self.temperature)

        loss = (1 - self.loss_lambda) * loss_global + self.loss_lambda * loss_dense
        enqueue(self.queue, self.queue_ptr, k)
        enqueue(self.dense_queue, self.dense_queue_ptr, k_pooled)
        return dict(loss=loss, loss_global=loss_global.detach(), loss_dense=loss_dense.detach(),
                    **contrast_stats(logits, self.temperature))


@torch.no_grad()
def dense_correspondence(q_feat: torch.Tensor, k_feat: torch.Tensor) -> torch.Tensor:
    """For each query location, the key location of highest trunk-feature cosine similarity.

    q_feat: [B, C, s_q], k_feat: [B, C, s_k], both normalised over C. Returns long [B, s_q]."""
    similarity = torch.einsum("bcq,bck->bqk", q_feat.float(), k_feat.float())  # [B, s_q, s_k]
    return similarity.argmax(dim=2)


def match_dense(q_feat: torch.Tensor, k_feat: torch.Tensor, k_grid: torch.Tensor) -> torch.Tensor:
    """The key dense vectors at each query location's matched key location: [B, dim, s_q]."""
    index = dense_correspondence(q_feat, k_feat)  # [B, s_q]
    return torch.gather(k_grid, 2, index.unsqueeze(1).expand(-1, k_grid.shape[1], -1))
