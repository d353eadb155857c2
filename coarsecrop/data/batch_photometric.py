"""The photometric half of the SSL views, batched on the GPU: colour jitter, grayscale, blur, solarize.

With ``photometric_on="device"`` the DataLoader workers only decode, crop (RandomResizedCrop) and flip,
and send uint8 views; this module finishes each view on the device, every image with its own random
draws, as the CPU pipeline (coarsecrop.data.views) would: the same probabilities and ranges, colour
jitter's four steps in a random order per image, the same closed-form hue rotation. Measured on the
lent H100's 16 CPU cores, the photometric steps are about two thirds of a worker's time per image,
so moving them here is what lets the loader keep up with a ResNet-50 (see benchmarks/pretrain_speed.py).

Two documented differences from the CPU path, both below one grey level on average: values stay in
float between steps (the CPU path rounds to uint8 after each step), and the blur uses one kernel
radius for the batch, ceil(3 * sigma_max), so an image with a smaller sigma gets a few extra taps of
weight < exp(-4.5) relative to the centre.

Random draws come from torch's global CPU RNG (as torchvision's v2 transforms), so seeding the process
seeds them; the parameters are drawn on the CPU and moved to the device with the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.data.images import IMAGENET_MEAN, IMAGENET_STD
from coarsecrop.data.views import ViewSpec, adjust_hue, blur_kernel_sigma, view_specs

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] float -> luminance [B, 1, H, W]."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1] (torchvision's _blend); factor [B, 1, 1, 1]."""
    return (factor * x + (1.0 - factor) * other).clamp_(0.0, 1.0)


def jitter_step(x: torch.Tensor, step: int, factor: torch.Tensor) -> torch.Tensor:
    """One of colour jitter's steps (0 brightness, 1 contrast, 2 saturation, 3 hue) with per-image factors."""
    f = factor.view(-1, 1, 1, 1)
    if step == 0:
        return (x * f).clamp_(0.0, 1.0)
    if step == 1:
        return blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)
    if step == 2:
        return blend(x, grayscale(x), f)
    return adjust_hue(x, factor.view(-1, 1, 1))


def gaussian_blur_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of [B, C, H, W] float with its own sigma [B] (separable, one radius for the batch)."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, K]
    mode = "reflect" if radius < min(h, w) else "replicate"
    out = x.reshape(1, b * c, h, w)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode=mode), kernel[:, None, None, :], groups=b * c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode=mode), kernel[:, None, :, None], groups=b * c)
    return out.reshape(b, c, h, w)


class BatchPhotometric(nn.Module):
    """uint8 views [B, 3, S, S] (any device) -> float views, photometric steps applied, ImageNet-normalised.

    jitter: colour jitter strengths (brightness, contrast, saturation, hue), applied with probability
        ``jitter_p`` in a random order per image;  grayscale_p: probability of grayscale;
    blur_p: probability of a Gaussian blur with sigma ~ U(blur_sigma) (pixels of this view);
    solarize_p: probability of solarizing (values >= 128/255 inverted).
    photometric=None (MAE): only the conversion to float and the normalisation.
    """

    def __init__(self, size: int, photometric: dict | None):
        super().__init__()
        self.size = size
        p = dict(photometric or {})
        self.enabled = photometric is not None
        bri, con, sat, hue = p.get("jitter", (0.0, 0.0, 0.0, 0.0))
        self.ranges = ((max(0.0, 1 - bri), 1 + bri), (max(0.0, 1 - con), 1 + con), (max(0.0, 1 - sat), 1 + sat),
                       (-hue, hue))
        self.jitter_p, self.grayscale_p = p.get("jitter_p", 0.8), p.get("grayscale_p", 0.2)
        self.blur_p, self.solarize_p = p.get("blur_p", 0.0), p.get("solarize_p", 0.0)
        self.blur_sigma = blur_kernel_sigma(size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def draw(self, n: int) -> dict:
        """Every random choice for a batch of n images, drawn on the CPU."""
        u = torch.rand(n, 4)
        factors = torch.stack([lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(self.ranges)], dim=1)
        return {"jitter": torch.rand(n) < self.jitter_p, "order": torch.argsort(torch.rand(n, 4), dim=1),
                "factors": factors, "gray": torch.rand(n) < self.grayscale_p,
                "blur": torch.rand(n) < self.blur_p,
                "sigma": torch.empty(n).uniform_(self.blur_sigma[0], self.blur_sigma[1]),
                "solarize": torch.rand(n) < self.solarize_p}

    @torch.no_grad()
    def forward(self, views: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        if views.dtype != torch.uint8 or views.ndim != 4 or views.shape[1] != 3:
            raise ValueError(f"BatchPhotometric takes uint8 views [B, 3, S, S], got {views.dtype} {list(views.shape)}")
        x = views.float().div_(255)
        if self.enabled:
            params = params or self.draw(len(x))
            params = {k: v.to(x.device, non_blocking=True) for k, v in params.items()}
            x = self.colour_jitter(x, params)
            x = torch.where(params["gray"].view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
            idx = params["blur"].nonzero().squeeze(1)
            if len(idx):
                x[idx] = gaussian_blur_batch(x[idx], params["sigma"][idx])
            sol = params["solarize"].view(-1, 1, 1, 1) & (x >= 128 / 255)
            x = torch.where(sol, 1.0 - x, x)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def colour_jitter(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """At each of the 4 positions, every jittered image applies the step its own order puts there."""
        for position in range(4):
            for step in range(4):
                idx = (params["jitter"] & (params["order"][:, position] == step)).nonzero().squeeze(1)
                if len(idx):
                    x[idx] = jitter_step(x[idx], step, params["factors"][idx, step])
        return x

    def extra_repr(self) -> str:
        return (f"size={self.size}, jitter_ranges={self.ranges}, jitter_p={self.jitter_p}, "
                f"grayscale_p={self.grayscale_p}, blur_p={self.blur_p}, solarize_p={self.solarize_p}")


def batch_photometric(name: str, size: int, local_views: int = 0, local_size: int | None = None) -> list[BatchPhotometric]:
    """One BatchPhotometric per view of method ``name`` (aligned with view_pipeline's views)."""
    specs: list[ViewSpec] = view_specs(name, size, local_views=local_views, local_size=local_size)
    return [BatchPhotometric(spec.size, spec.photometric) for spec in specs]
