"""Multi-label classification on scenes (the paper's mAP and mAP^l, Tables 1, 13, 14).

Targets: which categories are present in an image. Two protocols, both scored by VOC-style mAP (mean
over classes of AP, ``metrics.mean_ap``), in percent:

- ``run_linear`` (mAP^l): frozen trunk, global-average-pooled res5, a linear classifier (``probe``).
- ``run_finetune`` (mAP): the whole trunk plus a linear head trained end to end with BCE, SGD momentum
  0.9, cosine schedule, random-resized-crop + flip; BatchNorm in train mode (trainable).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.evaluate.data import augment, class_index, decode_images, multilabel_targets, normalise
from coarsecrop.device import autocast, prepare
from coarsecrop.evaluate.features import pooled_features, stage_outputs
from coarsecrop.evaluate.metrics import mean_ap, per_class_ap
from coarsecrop.models.probe import fit_linear, multilabel_loss


@dataclass
class MultilabelData:
    """Decoded images and targets of both splits. images: uint8 [N, 3, S, S]; targets: float [N, C]."""

    names: list[str]
    train_images: torch.Tensor
    train_targets: torch.Tensor
    val_images: torch.Tensor
    val_targets: torch.Tensor


def prepare_data(train, val, image_size: int = 128, workers: int = 0) -> MultilabelData:
    """Decode both splits at ``image_size`` and build their targets (class order: category id)."""
    index = class_index(train.categories)
    return MultilabelData(
        names=[train.categories[c] for c in sorted(index)],
        train_images=decode_images([s.file for s in train.scenes], image_size, workers),
        train_targets=multilabel_targets(train.scenes, index),
        val_images=decode_images([s.file for s in val.scenes], image_size, workers),
        val_targets=multilabel_targets(val.scenes, index),
    )


def _scores(data: MultilabelData, val_scores: torch.Tensor, key: str) -> dict:
    ap = per_class_ap(val_scores.numpy(), data.val_targets.numpy())
    return {key: 100 * mean_ap(val_scores.numpy(), data.val_targets.numpy()),
            f"{key}_per_class": {n: (None if math.isnan(a) else 100 * float(a)) for n, a in zip(data.names, ap)}}


def run_linear(trunk: nn.Module, data: MultilabelData, seed: int = 0, device: str | torch.device = "cpu",
               epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4) -> dict:
    """mAP^l: linear probe on frozen pooled res5 features."""
    device = torch.device(device)
    train_f = pooled_features(trunk, data.train_images, device)
    val_f = pooled_features(trunk, data.val_images, device)
    head = fit_linear(train_f, data.train_targets, len(data.names), multilabel=True, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, seed=seed)
    with torch.no_grad():
        scores = head(val_f)
    return _scores(data, scores, "mAP_l")


class Classifier(nn.Module):
    """Trunk -> global average pool of res5 -> linear: [B, 3, S, S] -> logits [B, C]."""

    def __init__(self, trunk: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.trunk = trunk
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(stage_outputs(self.trunk, x)["res5"].mean((2, 3)))


def run_finetune(trunk: nn.Module, data: MultilabelData, seed: int = 0, device: str | torch.device = "cpu",
                 epochs: int = 30, lr: float = 0.05, batch_size: int = 32, weight_decay: float = 1e-4) -> dict:
    """mAP: end-to-end finetuning of a copy of ``trunk`` (the caller's trunk is untouched)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    width = pooled_features(trunk, data.train_images[:1], device).shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(copy.deepcopy(trunk), width, len(data.names))
    model = prepare(model, device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    n = len(data.train_images)
    steps = max(1, epochs * math.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        epoch_loss = []
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x = normalise(augment(data.train_images[idx], gen).to(device))
            with autocast(device):
                loss = multilabel_loss(model(x).float(), data.train_targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            epoch_loss.append(float(loss.detach()))
        losses.append(sum(epoch_loss) / max(1, len(epoch_loss)))
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(data.val_images), 64):
            x = normalise(data.val_images[start : start + 64].to(device))
            with autocast(device):
                scores.append(model(x).float().cpu())
    out = _scores(data, torch.cat(scores), "mAP")
    out["train_loss_first_epoch"], out["train_loss_last_epoch"] = losses[0], losses[-1]
    return out
