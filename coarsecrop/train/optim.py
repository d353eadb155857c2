"""Optimisers (SGD, LARS, AdamW), the learning-rate scaling rule and the cosine schedule with warm-up.

LARS follows BYOL / SoCo (and the PixPro code the paper cites for BYOL's schedule): weight matrices
and kernels get weight decay and the layer-wise trust ratio; biases and normalisation parameters
(every parameter with one dimension) get neither. AdamW excludes the same parameters from weight
decay (as MAE does). SGD decays everything (as MoCo does).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017, as used by BYOL).

    For a parameter group with ``lars=True``: g <- g + wd * w; g <- g * eta * ||w|| / ||g|| (when both
    norms are positive); mu <- momentum * mu + g; w <- w - lr * mu. Groups with ``lars=False`` skip
    the trust ratio (and are given weight_decay 0 by ``param_groups``): plain SGD with momentum.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["weight_decay"]:
                    update = update.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    weight_norm, update_norm = torch.norm(p), torch.norm(update)
                    one = torch.ones_like(weight_norm)
                    trust = torch.where(weight_norm > 0,
                                        torch.where(update_norm > 0, group["eta"] * weight_norm / update_norm, one), one)
                    update = update.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = True) -> list[dict]:
    """Weights (decayed, LARS-adapted) and biases / normalisation parameters (ndim <= 1: neither, when
    ``exclude_bias_and_norm``). Frozen parameters (momentum encoders, fixed embeddings) are left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if exclude_bias_and_norm and p.ndim <= 1 else decay).append(p)
    groups = [dict(params=decay, weight_decay=weight_decay, lars=True)]
    if no_decay:
        groups.append(dict(params=no_decay, weight_decay=0.0, lars=False))
    return groups


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    beta2: float = 0.95, exclude_bias_and_norm: bool | None = None,
                    trust_coefficient: float = 0.001) -> torch.optim.Optimizer:
    """sgd | lars | adamw over the trainable parameters of ``model``; ``lr`` is the scaled rate.

    momentum is AdamW's beta1. exclude_bias_and_norm defaults to False for SGD (MoCo decays
    everything) and True for LARS and AdamW (BYOL, MAE)."""
    if exclude_bias_and_norm is None:
        exclude_bias_and_norm = name != "sgd"
    groups = param_groups(model, weight_decay, exclude_bias_and_norm)
    if name == "sgd":
        groups = [{k: v for k, v in g.items() if k != "lars"} for g in groups]
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=trust_coefficient)
    if name == "adamw":
        groups = [{k: v for k, v in g.items() if k != "lars"} for g in groups]
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, beta2))
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, lars, adamw")


def scaled_lr(base_lr: float, global_batch: int, ref_batch: int, rule: str = "linear") -> float:
    """The rate actually used: base_lr * global_batch / ref_batch (linear rule, Goyal et al.) or base_lr."""
    if rule == "linear":
        return base_lr * global_batch / ref_batch
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; valid: linear, none")


def resolve_optimizer(params, defaults: dict) -> dict:
    """The optimiser settings of a run (``PretrainParams`` ``params``): each parameter that is None takes the
    method's default (the paper's). An ``optimizer`` other than the method's takes none of the method's
    settings, which belong to its own optimiser (moco_v2's lr 0.3 is SGD's): lr and weight_decay must then be
    given, and biases and norms are excluded from weight decay by the chosen optimiser's rule (LARS and AdamW
    exclude them, SGD decays everything); the warm-up and the batch the lr refers to stay the method's."""
    def pick(ours, key, fallback=None):
        return ours if ours is not None else defaults.get(key, fallback)

    name = pick(params.optimizer, "name")
    if name != defaults.get("name", name):
        missing = [key for key in ("lr", "weight_decay") if getattr(params, key) is None]
        if missing:
            raise ValueError(f"optimizer={name} is not the method's ({defaults['name']}), whose {' and '.join(missing)} "
                             f"belong to {defaults['name']}: give {' and '.join(f'{k}=...' for k in missing)} for {name}")
        defaults = {key: defaults[key] for key in ("ref_batch", "warmup_epochs") if key in defaults}  # schedule
    betas = list(defaults.get("betas", (0.9, 0.999)))
    momentum = params.momentum if params.momentum is not None else defaults.get("momentum", betas[0])
    return dict(optimizer=name, base_lr=float(pick(params.lr, "lr")),
                ref_batch=int(pick(params.ref_batch, "ref_batch", 256)),
                weight_decay=float(pick(params.weight_decay, "weight_decay", 0.0)),
                momentum=float(momentum), beta2=float(betas[1]),
                exclude_bias_and_norm=bool(defaults.get("exclude_bias_and_norm", name != "sgd")),
                trust_coefficient=float(defaults.get("trust_coefficient", 0.001)),
                warmup_epochs=float(pick(params.warmup_epochs, "warmup_epochs", 0.0)))


class CosineSchedule:
    """Per-step learning rate: linear warm-up over ``warmup_steps`` (peak/W, 2 peak/W, ..., peak: the first
    update already moves, where MAE's and BYOL's warm-ups start at 0), then half a cosine to ``min_lr``.

    Stateless (a function of the step), so resuming needs only the step; ``state_dict`` records the
    settings for the checkpoint."""

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0):
        self.peak_lr, self.total_steps = peak_lr, max(1, total_steps)
        self.warmup_steps, self.min_lr = min(warmup_steps, self.total_steps), min_lr

    def __call__(self, step: int) -> float:
        """Rate for the update that follows ``step`` completed steps."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return dict(peak_lr=self.peak_lr, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    min_lr=self.min_lr)
