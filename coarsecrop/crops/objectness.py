"""The SCDA objectness map of Sec. 3.3 (Eq. 3): sum phi's last feature map over channels,
min-max normalise each image's map to [0, 1], upsample bilinearly to the image size.

Normalisation happens on the h x w map, before upsampling (the paper's order); bilinear
interpolation (align_corners=False) of values in [0, 1] stays in [0, 1]. A constant map
(max == min, e.g. an all-black image through a ReLU network) carries no objectness signal and
becomes all zeros -- never NaN -- so every box then scores 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def channel_sum(features: torch.Tensor) -> torch.Tensor:
    """A = sum_d x[:, d]: [B, d, h, w] -> float32 [B, h, w]."""
    return features.float().sum(dim=1)


def minmax_normalise(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-image (A - min) / (max - min): [B, h, w] -> [B, h, w] in [0, 1]; a constant map -> 0."""
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    out = (maps - lo) / span.clamp_min(eps)
    return torch.where(span > eps, out, torch.zeros_like(out))


def objectness_maps(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A_hat: [B, d, h, w] features -> float32 [B, H, W] objectness in [0, 1]."""
    maps = minmax_normalise(channel_sum(features))  # [B, h, w]
    maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)
    return maps[:, 0].clamp_(0, 1)  # [B, H, W]
