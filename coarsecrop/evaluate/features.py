"""Running a ResNet trunk: its stage outputs (res2..res5), pooled features, device handling.

The trunk is any module with torchvision's ResNet attributes (conv1, bn1, relu, maxpool, layer1..layer4),
as ``coarsecrop.models.backbones.ResNetTrunk`` has. We call the stages ourselves rather than the trunk's
forward, so every task can take the feature maps it needs.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from coarsecrop.device import prepare
from coarsecrop.models.probe import TRANSFER, frozen_features

STAGES = ("layer1", "layer2", "layer3", "layer4")
NAMES = ("res2", "res3", "res4", "res5")  # detectron2's names; strides 4, 8, 16, 32


def stem(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv1 -> bn1 -> relu -> maxpool: [B, 3, H, W] -> [B, 64, H/4, W/4]."""
    return trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))


def stage_outputs(trunk: nn.Module, x: torch.Tensor, upto: str = "res5") -> OrderedDict[str, torch.Tensor]:
    """{res2: [B, C2, H/4, W/4], ..., upto} for a normalised image batch x."""
    out = OrderedDict()
    x = stem(trunk, x)
    for stage, name in zip(STAGES, NAMES):
        x = getattr(trunk, stage)(x)
        out[name] = x
        if name == upto:
            break
    return out


def stage_channels(trunk: nn.Module) -> dict[str, int]:
    """Output channels of each stage, from one tiny forward pass in eval mode (running stats untouched)."""
    was_training = trunk.training
    trunk.eval()
    try:
        p = next(trunk.parameters())
        with torch.no_grad():
            outs = stage_outputs(trunk, torch.zeros(1, 3, 64, 64, device=p.device, dtype=p.dtype))
    finally:
        trunk.train(was_training)
    return {k: int(v.shape[1]) for k, v in outs.items()}


class TrunkStages(nn.Module):
    """The trunk as a feature extractor returning an OrderedDict of the chosen stages ("0", "1", ...)
    as torchvision's detection and segmentation heads expect."""

    def __init__(self, trunk: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.trunk = trunk
        self.names = names

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        outs = stage_outputs(self.trunk, x, upto=self.names[-1])
        return OrderedDict((str(i), outs[n]) for i, n in enumerate(self.names))


def pooled_features(trunk: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Frozen features: global average of res5, float32 [N, C5] on CPU. images: uint8 [N, 3, H, W].

    The trunk is moved to ``device`` (channels_last on CUDA) and left in eval mode; the pass itself is
    the object probe's TRANSFER protocol (``coarsecrop.models.probe.frozen_features``)."""
    trunk = prepare(trunk, device).eval()
    return frozen_features(trunk, images, device, TRANSFER)
