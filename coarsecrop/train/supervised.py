"""A supervised trunk: the ceiling row of the built-in benchmark (notebooks/17_benchmark.py).

The same trunk the SSL methods train, trained WITH the class labels on GT object crops (the train split's,
as ``coarsecrop.data.objects.object_crops`` cuts them): a linear head on the trunk's pooled output,
softmax cross-entropy, SGD with momentum and a cosine schedule, random horizontal flips as the only
augmentation. Inputs are normalised as the object probe's MONITOR protocol does (x / 255, then ImageNet
mean / std), so the probe later sees the trunk in the input range it was trained in.

    trunk, history = train_supervised(trunk, crops, labels, epochs=12, lr=0.1)

What it measures: how far the object probe can go on this data with this trunk and this budget when
the labels are given -- the row the SSL rows are read against (a ceiling, not a target).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.models.probe import MONITOR, pool


def train_supervised(trunk: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 12,
                     lr: float = 0.1, batch_size: int = 64, weight_decay: float = 5e-4, momentum: float = 0.9,
                     seed: int = 0, device: torch.device | str = "cpu") -> tuple[nn.Module, list[dict]]:
    """Train ``trunk`` (in place) and a linear head on ``images`` uint8 [N, 3, S, S] with int64 ``labels`` [N].

    Returns (the trunk in eval mode, one dict per epoch: epoch, loss (mean over the epoch's samples),
    train_top1 (fraction of the epoch's samples whose augmented view was classified right, before the
    step)). The head is discarded: the benchmark reads the trunk through the object probe. The batch
    order and the flips come from a generator seeded with ``seed``; the head's weights from ``seed`` too.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images and at least one, got {len(images)} and {len(labels)}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N, 3, S, S], got {images.dtype} {tuple(images.shape)}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(labels.max()) + 1
    trunk = trunk.to(device).eval()
    with torch.no_grad():  # the feature width, from one eval-mode forward (BN statistics untouched)
        dim = pool(trunk(MONITOR.normalise(images[:2].to(device)))).shape[1]
    trunk.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(dim, num_classes).to(device)
    params = list(trunk.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]                                                   # uint8 [B, 3, S, S]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            y = labels[idx].to(device)
            logits = head(pool(trunk(MONITOR.normalise(x.to(device)))))      # [B, num_classes]
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(images), "train_top1": correct / len(images)})
    return trunk.eval(), history
