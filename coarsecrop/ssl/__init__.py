"""Self-supervised methods: MoCo-v2, BYOL, DenseCL and MAE, one module each (paper Sec. 3.1, 4.1).

The contract with the trainer (coarsecrop/train):
  METHODS = {"moco_v2": MoCoV2, "byol": BYOL, "densecl": DenseCL, "mae": MAE}
  build_method(name, backbone, image_size, **hyper) -> SSLMethod (an nn.Module)
  method.pipeline -> the name of its views ("moco_v2", "byol" or "mae"); with method.image_size,
      method.random_resized_crop and method.local_views the trainer builds them
      (coarsecrop.data.views.method_views): a method is views in, loss out, and imports no data pipeline
  method(views: list of [B, 3, S, S]) -> dict(loss=scalar tensor, plus detached tensors to log)
  method.momentum_update(progress)   # after optimizer.step(); progress = step / total_steps in [0, 1]
  method.optimizer_defaults -> dict(name="sgd"|"lars"|"adamw", lr=<at ref_batch>, ref_batch=256,
      weight_decay, momentum (sgd, lars) or betas (adamw), paper_batch, warmup_epochs,
      exclude_bias_and_norm, trust_coefficient (lars))
  method.backbone -> the trunk whose state_dict is exported / handed to crops as phi
Queues and momentum encoders are registered buffers / submodules, so they travel with checkpoints.
Parameters with requires_grad=False (momentum encoders, MAE's fixed position embeddings) must be
left out of the optimiser.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from typing import Protocol

import torch
from torch import nn

from coarsecrop.models.backbones import ARCHS, build_backbone
from coarsecrop.models.narrow import build_narrow, is_narrow_name
from coarsecrop.models.vit import VITS, build_vit, is_vit_name
from coarsecrop.params import check_value
from coarsecrop.ssl.byol import BYOL
from coarsecrop.ssl.densecl import DenseCL
from coarsecrop.ssl.mae import MAE
from coarsecrop.ssl.moco import MoCoV2

METHODS = {"moco_v2": MoCoV2, "byol": BYOL, "densecl": DenseCL, "mae": MAE}


class SSLMethod(Protocol):
    """What every entry of METHODS provides (they are nn.Modules)."""

    backbone: nn.Module
    optimizer_defaults: dict
    pipeline: str
    image_size: int
    random_resized_crop: bool
    local_views: int

    def momentum_update(self, progress: float) -> None: ...

    def __call__(self, views: list[torch.Tensor]) -> dict: ...


def hyperparameters(name: str) -> dict:
    """The hyperparameters of method ``name`` and their defaults (the paper's)."""
    if name not in METHODS:
        raise ValueError(f"unknown SSL method {name!r}; valid: {', '.join(METHODS)}")
    params = inspect.signature(METHODS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "backbone", "image_size")}


def build_method(name: str, backbone: str | nn.Module, image_size: int, seed: int | None = None,
                 **hyper) -> nn.Module:
    """An SSL method around a freshly initialised trunk.

    name: a key of METHODS.
    backbone: a trunk name -- narrow ResNets "resnet10_w16[_cifar]" (coarsecrop.models.narrow),
        torchvision ResNets "resnet18" / "resnet50" (coarsecrop.models.backbones), ViTs
        "vit_base_patch16" / "vit_micro_patch8" ... (coarsecrop.models.vit, MAE only) -- or an
        nn.Module trunk returning [B, C, h, w] (a timm VisionTransformer for MAE).
    image_size: the view size S.
    seed: if given, all weights (trunk, heads, queues) are drawn from torch's RNG seeded with it,
        and the caller's RNG state is left untouched.
    hyper: the method's hyperparameters (see hyperparameters(name)); unknown ones, and values not of the type
        the method's constructor declares, raise ValueError.
    """
    valid = hyperparameters(name)
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)} for {name}; "
                         f"valid: {', '.join(f'{k}={v!r}' for k, v in valid.items())}")
    hints = typing.get_type_hints(METHODS[name].__init__)
    for key, value in hyper.items():
        try:
            hyper[key] = check_value(value, hints[key]) if key in hints else value
        except TypeError as err:
            raise ValueError(f"method_params: {name}'s {key} = {value!r}: {err}") from None
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        trunk = build_trunk(backbone, name, image_size, seed) if isinstance(backbone, str) else backbone
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
        return METHODS[name](trunk, image_size=image_size, **hyper)


def build_trunk(backbone: str, method: str, image_size: int, seed: int | None = None) -> nn.Module:
    """A randomly initialised trunk from its name, in train mode."""
    if method == "mae":
        if not is_vit_name(backbone):
            raise ValueError(f"MAE needs a ViT backbone, got {backbone!r}; valid: {', '.join(VITS)}")
        return build_vit(backbone, image_size)
    if is_vit_name(backbone):
        raise ValueError(f"{method} takes a ResNet trunk, not the ViT {backbone!r} (ViTs are for mae)")
    if is_narrow_name(backbone):
        return build_narrow(backbone)
    if backbone not in ARCHS:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(ARCHS)}, narrow ResNets "
                         "resnet{10,18,34}_w<width>[_cifar] (e.g. resnet10_w16), or for mae a ViT")
    return build_backbone(backbone, seed=0 if seed is None else seed).train()


__all__ = ["METHODS", "BYOL", "DenseCL", "MAE", "MoCoV2", "SSLMethod", "build_method", "build_trunk",
           "hyperparameters"]
