"""Projection and prediction heads put on top of a pooled (or, for DenseCL, unpooled) trunk.

- MoCo-v2 (Chen et al. 2020): fc(C, 2048) - ReLU - fc(2048, 128); no BN.
- BYOL (Grill et al. 2020, Sec. 3.3): projector fc(C, 4096) - BN - ReLU - fc(4096, 256);
  predictor the same MLP from 256 to 256.
- DenseCL (Wang et al. 2021, openselfsup/models/necks.py DenseCLNeck): the MoCo-v2 MLP for the
  global vector plus a dense head conv1x1(C, 2048) - ReLU - conv1x1(2048, 128) applied at every
  location of the feature map.
PyTorch's default initialisation throughout (as MoCo and BYOL reference code). DenseCL's reference
initialises its global MLP's Linear layers kaiming-normal (fan_in, bias 0) instead (openselfsup
necks.py init_weights); ours keeps PyTorch's default there too.
"""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False) -> nn.Sequential:
    """fc - [BN] - ReLU - fc: [B, in_dim] -> [B, out_dim]. The first fc has no bias when BN follows."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)


def moco_v2_projector(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> nn.Sequential:
    """MoCo-v2's 2-layer MLP head (hidden 2048, output 128, ReLU, no BN)."""
    return mlp(in_dim, hidden_dim, out_dim, batch_norm=False)


def byol_projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """BYOL's projector g: fc 4096 - BN - ReLU - fc 256."""
    return mlp(in_dim, hidden_dim, out_dim, batch_norm=True)


def byol_predictor(dim: int = 256, hidden_dim: int = 4096) -> nn.Sequential:
    """BYOL's predictor q: the projector's MLP shape, from dim to dim."""
    return mlp(dim, hidden_dim, dim, batch_norm=True)


def dense_projector(in_channels: int, hidden_channels: int = 2048, out_channels: int = 128) -> nn.Sequential:
    """DenseCL's dense head: conv1x1 - ReLU - conv1x1, [B, C, h, w] -> [B, out, h, w]."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
    )
