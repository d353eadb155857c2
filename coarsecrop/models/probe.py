"""The object probe: classifiers on frozen trunk features of ground-truth object crops.

One probe, two named protocols (its callers), each keeping the numbers it has always produced:

- ``MONITOR`` (the trainer's epoch-end monitor, ``coarsecrop.train.monitor.ObjectProbe``): the trunk's own
  forward (or a named layer, hooked), x / 255 then mean / std, batches of 256; a weighted kNN
  (``knn_top1``) and an L-BFGS logistic regression (``linear_top1``); top-1 as a fraction
  (``probe_knn_top1`` / ``probe_linear_top1`` in pretrain runs).
- ``TRANSFER`` (the ``objects`` transfer task, ``coarsecrop.evaluate.objects``, and every frozen-feature
  pass of the transfer tasks through ``evaluate.features.pooled_features``): res5 global average,
  mean / std in 0..255 units, batches of 64, channels_last on CUDA; a linear head trained with AdamW
  (``fit_linear``, also the mAP^l and ``classify`` heads); top-1 in percent (``objects.run_probe``).

Crops come from ``coarsecrop.data.objects.object_crops`` (one cutter). ``frozen_features`` is the one
feature pass; the protocols differ only in the input arithmetic and batch size their committed numbers
were made with (equal up to float rounding, so neither was switched to the other).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.data.images import normalise, normalise_unit
from coarsecrop.device import autocast


@dataclass(frozen=True)
class Protocol:
    """How one caller runs the frozen-feature pass."""

    name: str
    normalise: Callable[[torch.Tensor], torch.Tensor]  # uint8 [B, 3, H, W] -> float, normalised
    batch_size: int
    channels_last: bool  # the input batch in channels_last on CUDA (the trunk is prepared by the caller)


MONITOR = Protocol("monitor", normalise_unit, batch_size=256, channels_last=False)
TRANSFER = Protocol("transfer", normalise, batch_size=64, channels_last=True)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def pool(output) -> torch.Tensor:
    """[B, C, h, w] -> GAP; [B, N, C] tokens -> mean; [B, C] as is (float32)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if output.ndim == 4:
        return output.float().mean(dim=(2, 3))
    if output.ndim == 3:
        return output.float().mean(dim=1)
    return output.float().flatten(1)


@torch.no_grad()
def frozen_features(backbone: nn.Module, images: torch.Tensor, device: torch.device, protocol: Protocol,
                    layer: str = "") -> torch.Tensor:
    """Frozen features [N, C] (float32, CPU) of uint8 images [N, 3, S, S]: the pooled output of the
    backbone's forward (a ResNet trunk: res5), or of the submodule named ``layer`` (a forward hook).

    Eval mode during the pass (the caller's mode is restored), bf16 autocast on CUDA; the backbone must
    already be on ``device``."""
    captured = {}
    hook = None
    if layer:
        modules = dict(backbone.named_modules())
        if layer not in modules:
            raise ValueError(f"monitor_layer {layer!r} is not a submodule of the backbone; "
                             f"top-level ones: {', '.join(n for n, _ in backbone.named_children())}")
        hook = modules[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    features = []
    try:
        with _eval_mode(backbone), autocast(device):
            for start in range(0, len(images), protocol.batch_size):
                x = protocol.normalise(images[start:start + protocol.batch_size].to(device))
                if protocol.channels_last and device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                out = backbone(x)
                features.append(pool(captured["x"] if layer else out).cpu())
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(features) if features else torch.zeros((0, 0))


@torch.no_grad()
def recalibrate_bn(backbone: nn.Module, images: torch.Tensor, device: torch.device,
                   protocol: Protocol = MONITOR) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm statistics are re-estimated on ``images`` (train-mode
    forwards, cumulative average, no gradients); the weights stay as they are.

    A random init keeps BN's initial running statistics (mean 0, var 1), a trained trunk has statistics
    of the data; recalibrating the random init separates what training learned from what BN merely
    measured. (At toy scale the latter alone moved the probe by several points.)"""
    model = copy.deepcopy(backbone)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(images), protocol.batch_size):
        model(protocol.normalise(images[start:start + protocol.batch_size].to(device)))
    return model.eval()


# ---------------------------------------------------------------- classifiers

def knn_top1(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted kNN on cosine similarity (InstDisc / DINO protocol): top-1 accuracy on the test set."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = 0
    for start in range(0, len(test_x), 1024):
        sim = test_x[start:start + 1024] @ train_x.T                     # [b, Ntrain]
        top_sim, top_idx = sim.topk(k, dim=1)                             # [b, k]
        votes = torch.zeros(len(sim), num_classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += int((votes.argmax(1) == test_y[start:start + 1024]).sum())
    return correct / max(1, len(test_x))


def linear_top1(train_x, train_y, test_x, test_y, weight_decay: float = 1e-3, steps: int = 100) -> float:
    """Multinomial logistic regression (L-BFGS, L2) on standardised features: top-1 on the test set."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    linear = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train_x), train_y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float((linear(test_x).argmax(1) == test_y).float().mean())


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per class, mean over the known entries: a target of -1 (a class present only
    as VOC "difficult" objects) is left out, as the VOC benchmark leaves it out of the AP.
    logits, targets: float [N, C]."""
    known = targets >= 0
    if bool(known.all()):
        return F.binary_cross_entropy_with_logits(logits, targets)
    loss = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0), reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, multilabel: bool,
               epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 256,
               seed: int = 0) -> nn.Module:
    """A linear classifier on frozen features (mAP^l, the ``objects`` task, single-label transfer);
    returns a module mapping raw features [N, D] to logits [N, C].

    Features are standardised with the training set's mean and std (a BatchNorm without affine, as
    MAE's linear probe), then one zero-initialised ``nn.Linear`` is trained with AdamW and a cosine
    schedule on mini-batches drawn by a seeded generator. Loss: binary cross-entropy per class
    (multi-label) or softmax cross-entropy. The problem is convex and the head starts at zero, so on a
    fixed trunk the seed only changes the batch order: when the training set fits in one batch, every
    seed gives the same probe (zero spread).

    train_x: float [N, D]; train_y: float {0,1} [N, C] (multilabel; -1: ignored, ``multilabel_loss``) or
    int64 [N] class indices."""
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
                loss = multilabel_loss(logits, train_y[idx].float())
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


# ---------------------------------------------------------------- the monitor's scores

def monitor_scores(train_f, train_y, val_f, val_y, probes: tuple[str, ...]) -> dict[str, float]:
    """MONITOR: {knn_top1, linear_top1} (those named in ``probes``: knn, linear), fractions of the val crops."""
    result = {}
    if "knn" in probes:
        result["knn_top1"] = knn_top1(train_f, train_y, val_f, val_y)
    if "linear" in probes:
        result["linear_top1"] = linear_top1(train_f, train_y, val_f, val_y)
    return result

