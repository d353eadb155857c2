"""Narrow ResNet trunks for CPU runs, built from torchvision's ResNet machinery.

torchvision fixes the stage widths at 64/128/256/512; at toy scale (32-64 px views, 2 CPU cores)
those nets are slow and, as the calibration runs of issue 3 showed, do not learn in minutes. A
narrow trunk keeps torchvision's blocks, `_make_layer`, initialisation and attribute names
(conv1, bn1, layer1.0.conv1, ...) so its state_dict reads like a torchvision ResNet's (without
fc) and the same checkpoint code handles both; only the widths (and optionally the stem) change.

Names, for parameter files: ``resnet{10,18,34}_w{W}`` and ``..._cifar``:
  resnet10 = BasicBlock x (1, 1, 1, 1), resnet18 = (2, 2, 2, 2), resnet34 = (3, 4, 6, 3);
  W = width of the stem and stage 1 (stages: W, 2W, 4W, 8W; torchvision's is 64);
  _cifar = 3x3 stride-1 stem without max-pool (total stride 8 instead of 32), so 32-px views
  still give a 4 x 4 feature map (DenseCL needs a grid to match).
"""

from __future__ import annotations

import re

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

LAYOUTS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
NAME = re.compile(r"^(resnet10|resnet18|resnet34)_w(\d+)(_cifar)?$")


class NarrowResNet(torchvision.models.ResNet):
    """torchvision ResNet with stage widths (W, 2W, 4W, 8W), up to layer4: [B,3,H,W] -> [B,8W*e,h,w].

    Reuses ResNet._make_layer and torchvision's init; no avgpool / fc (methods pool themselves)."""

    def __init__(self, width: int = 16, layers=(1, 1, 1, 1), block: type[nn.Module] = BasicBlock,
                 small_stem: bool = False, zero_init_residual: bool = False):
        nn.Module.__init__(self)  # not ResNet.__init__: it hard-codes the widths and adds fc
        if width < 1 or len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"need width >= 1 and 4 stages of >= 1 block, got width={width}, layers={layers}")
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        if small_stem:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.out_channels = 8 * width * block.expansion
        self.small_stem = small_stem
        init_like_torchvision(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, W, H/4, W/4] (H, W with a small stem)
        x = self.layer2(self.layer1(x))  # [B, 2W, H/8, W/8]
        return self.layer4(self.layer3(x))  # [B, 8W, H/32, W/32]


def init_like_torchvision(model: nn.Module, zero_init_residual: bool = False) -> None:
    """The initialisation of torchvision.models.ResNet.__init__ (kaiming fan_out convs, unit BN)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.constant_(m.bn3.weight, 0)
            elif isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)


def resnet_narrow(width: int = 16, layers=(1, 1, 1, 1), small_stem: bool = False) -> NarrowResNet:
    """A BasicBlock ResNet trunk of stage widths (W, 2W, 4W, 8W); output channels 8W."""
    return NarrowResNet(width, tuple(layers), BasicBlock, small_stem)


def is_narrow_name(name: str) -> bool:
    return bool(NAME.match(name))


def build_narrow(name: str) -> NarrowResNet:
    """A narrow trunk from its name, e.g. "resnet10_w16" or "resnet18_w32_cifar" (see module doc)."""
    match = NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a narrow ResNet name; use resnet{{10,18,34}}_w<width>[_cifar], "
                         "e.g. resnet10_w16 or resnet18_w32_cifar")
    depth, width, cifar = match.groups()
    return resnet_narrow(int(width), LAYOUTS[depth], small_stem=bool(cifar))


def trunk_channels(trunk: nn.Module) -> int:
    """Channels C of a trunk's output [B, C, h, w]: its ``out_channels`` attribute, the last
    block of a torchvision-style layer4, or else one eval-mode forward of a 64-px dummy."""
    channels = getattr(trunk, "out_channels", None)
    if isinstance(channels, int):
        return channels
    layer4 = getattr(trunk, "layer4", None)
    if isinstance(layer4, nn.Sequential) and len(layer4):
        last = layer4[-1]
        for bn in ("bn3", "bn2"):
            if isinstance(getattr(last, bn, None), nn.BatchNorm2d):
                return getattr(last, bn).num_features
    param = next(trunk.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = trunk.training
    trunk.eval()
    try:
        with torch.no_grad():
            out = trunk(torch.zeros(1, 3, 64, 64, device=device))
    finally:
        trunk.train(was_training)
    if out.ndim != 4:
        raise ValueError(f"a trunk must return [B, C, h, w] feature maps; {type(trunk).__name__} returned "
                         f"shape {list(out.shape)}")
    return int(out.shape[1])
