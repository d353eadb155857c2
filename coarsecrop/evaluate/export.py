"""Export a pretrained trunk for downstream frameworks: torchvision state_dict or detectron2 pickle.

torchvision: the trunk keeps torchvision's names (conv1, bn1, layer1.0.conv1, ...), so the export is the
trunk state_dict plus, by default, ``fc.weight`` / ``fc.bias`` from a fresh seeded ``nn.Linear`` init
(torchvision's own default init) so that ``torchvision.models.resnet50().load_state_dict(sd, strict=True)``
works; the classifier is untrained and meant to be replaced. ``include_fc=False`` leaves it out: that file
loads with ``strict=True`` into torchvision's detection backbones (``resnet_fpn_backbone(...).body``,
``fasterrcnn_resnet50_fpn(...).backbone.body``), which have no fc.

detectron2: MoCo's ``detection/convert-pretrain-to-detectron2.py`` rules, key by key:
``layerN -> res(N+1)``, ``bnK -> convK.norm``, ``downsample.0 -> shortcut``, ``downsample.1 ->
shortcut.norm``, keys outside the stages get ``stem.``; values as numpy arrays; the pickle holds
``{"model": ..., "__author__": "coarsecrop", "matching_heuristics": True}``. Unlike MoCo's script we
never emit the projection head (MoCo's writes it as ``stem.fc.*``, which detectron2 then ignores):
the trunk has no head. Load it with the configs in ``coarsecrop/evaluate/configs`` (RGB input,
torchvision mean/std in 0-255, ``STRIDE_IN_1X1: False`` since torchvision ResNets stride in the 3x3).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from coarsecrop.evaluate.checkpoints import make_trunk
from coarsecrop.io import write_atomic

FORMATS = ("torchvision", "detectron2")


def detectron2_name(key: str) -> str:
    """detectron2 name of one torchvision trunk key (MoCo's conversion rules, in MoCo's order)."""
    if "layer" not in key:
        key = "stem." + key
    for t in [1, 2, 3, 4]:
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    key = key.replace("downsample.0", "shortcut")
    key = key.replace("downsample.1", "shortcut.norm")
    return key


def to_detectron2(trunk_state: Mapping[str, torch.Tensor]) -> dict:
    """The detectron2 checkpoint dict for a trunk state_dict (torchvision names, no fc)."""
    model = {}
    for key, value in trunk_state.items():
        if key.startswith("fc."):
            continue
        name = detectron2_name(key)
        if name in model:
            raise ValueError(f"two trunk keys map to the detectron2 name {name!r}")
        model[name] = value.detach().cpu().numpy()
    return {"model": model, "__author__": "coarsecrop", "matching_heuristics": True}


def to_torchvision(trunk_state: Mapping[str, torch.Tensor], include_fc: bool = True,
                   num_classes: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state_dict: the trunk keys, plus a freshly initialised ``fc`` when asked."""
    state = {k: v.detach().cpu().clone() for k, v in trunk_state.items() if not k.startswith("fc.")}
    if include_fc:
        last = _last_norm_width(state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fc = nn.Linear(last, num_classes)  # torchvision.models.ResNet leaves nn.Linear's default init
        state["fc.weight"], state["fc.bias"] = fc.weight.detach(), fc.bias.detach()
    return state


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path, backbone: str | None = None,
                      include_fc: bool = True) -> Path:
    """Read ``checkpoint`` (architecture ``backbone``, or read from the file) and write it as ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    trunk = make_trunk(backbone, checkpoint)
    state = trunk.state_dict()
    if fmt == "torchvision":
        sd = to_torchvision(state, include_fc=include_fc)
        return write_atomic(out, lambda f: torch.save(sd, f))
    obj = to_detectron2(state)
    return write_atomic(out, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def _last_norm_width(state: Mapping[str, torch.Tensor]) -> int:
    """Channels of the trunk's output: the size of layer4's last BatchNorm (512 for basic, 2048 for bottleneck)."""
    norms = [k for k in state if k.startswith("layer4.") and k.endswith(".running_mean")
             and ".downsample." not in k]
    if not norms:
        raise ValueError("trunk state has no layer4 BatchNorm: not a torchvision ResNet trunk")
    return int(state[sorted(norms, key=_natural)[-1]].shape[0])


def _natural(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in key.replace(".", " . ").split()]
