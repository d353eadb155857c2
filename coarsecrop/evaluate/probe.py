"""A linear classifier on frozen features (mAP^l, the object probe, single-label transfer).

Features are standardised with the training set's mean and std (a BatchNorm without affine, as MAE's
linear probe), then one zero-initialised ``nn.Linear`` is trained with AdamW and a cosine schedule on mini-batches drawn
by a seeded generator. Loss: binary cross-entropy per class (multi-label) or softmax cross-entropy.
The problem is convex and the head starts at zero, so on a fixed trunk the seed only changes the batch
order: when the training set fits in one batch, every seed gives the same probe (zero spread).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, multilabel: bool,
               epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 256,
               seed: int = 0) -> nn.Module:
    """Train a linear classifier; returns a module mapping raw features [N, D] to logits [N, C].

    train_x: float [N, D]; train_y: float {0,1} [N, C] (multilabel) or int64 [N] class indices."""
    if len(train_x) == 0:
        raise ValueError("no training samples for the linear probe")
    gen = torch.Generator().manual_seed(seed)
    mean = train_x.mean(0)
    std = (train_x.var(0, unbiased=False) + 1e-6).sqrt()
    head = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(head.weight)  # a feature constant on the training set (a dead ReLU) gets no gradient
    nn.init.zeros_(head.bias)  # and so keeps weight 0: it cannot blow up at test time
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    xs = (train_x - mean) / std
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), batch_size):
            idx = order[start : start + batch_size]
            logits = head(xs[idx])
            if multilabel:
                loss = F.binary_cross_entropy_with_logits(logits, train_y[idx].float())
            else:
                loss = F.cross_entropy(logits, train_y[idx].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return _Standardised(head, mean, std).eval()


class _Standardised(nn.Module):
    """(x - mean) / std, then the linear head."""

    def __init__(self, head: nn.Linear, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)
