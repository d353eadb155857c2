"""SSL view pipelines: MoCo-v2, BYOL's asymmetric pair, MAE; optional SwAV multi-crop.

A pipeline maps one pseudo-image (uint8 tensor [3, H, W], CPU or GPU) to a list of float views
[3, S, S], ImageNet-normalised. Everything is torchvision.transforms.v2 on uint8 tensors, so the
same pipeline runs in DataLoader workers or on GPU tensors. The geometric step comes first (the
photometric steps then work on the small S x S view, not on the whole crop).

``random_resized_crop=False`` replaces RandomResizedCrop by a plain resize of the whole
pseudo-image to S x S (aspect ratio not kept, nothing cut away): the paper's Table 15 ablation.

Sources (the paper follows each method's own augmentations, Sec. 4.1):
- MoCo-v2 (Chen et al. 2020, moco/main_moco.py --aug-plus): RRC scale (0.2, 1), colour jitter
  0.4/0.4/0.4/0.1 at p 0.8, grayscale p 0.2, Gaussian blur sigma 0.1-2.0 at p 0.5, flip.
- BYOL (Grill et al. 2020, Table 6): RRC scale (0.08, 1) with bilinear interpolation (as PixPro's
  PyTorch port; BYOL's own code resizes bicubic), flip, colour jitter 0.4/0.4/0.2/0.1 at
  p 0.8, grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0.0 / 0.2 for the two views.
- MAE (He et al. 2022, main_pretrain.py): RRC scale (0.2, 1) with bicubic interpolation, flip.
- Multi-crop (SwAV, Caron et al. 2020): 2 global views + k local views of 96/224 of the global
  size at scale (0.05, 0.14), with the global views' photometric augmentations (Table 11's s3).

Colour jitter: v2.ColorJitter's parameters and random draws, computed in float once with a
closed-form hue rotation (FastColorJitter; measured 1.5-2x faster on a uint8 224-px view).

Gaussian blur: torchvision's tensor blur convolves with a full 2-D kernel (23 x 23 at 224 px:
~11 ms per view on one core), so this module blurs with two depthwise 1-D convolutions (same
Gaussian, ~1.5 ms, as fast as PIL's blur). Its kernel covers +-3 sigma. sigma is given for
224-px views, as in the papers, and scaled by S / 224, so a 64-px view is blurred as much
relative to its content as a 224-px one.

Randomness: v2 transforms take no torch.Generator; they draw from torch's global CPU RNG (also
for GPU tensors: the parameters are drawn on the CPU). Pass ``seed=`` to a pipeline call to fork
and seed that RNG for the call (the caller's RNG state is restored), or seed around the call as
coarsecrop.data.pseudo does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

from coarsecrop.data.images import IMAGENET_MEAN, IMAGENET_STD

PIPELINES = ("moco_v2", "byol", "mae")
LOCAL_SCALE = (0.05, 0.14)  # SwAV's local crops
LOCAL_FRACTION = 96 / 224  # SwAV's local / global view size
BLUR_SIGMA_224 = (0.1, 2.0)  # MoCo-v2 and BYOL, in pixels of a 224-px view


class FastColorJitter(v2.ColorJitter):
    """v2.ColorJitter (same parameters, same random draws, same random order of the four steps)
    computed in float32 once for uint8 input, with a fast exact hue rotation.

    torchvision converts uint8 to float and back inside each step and rotates hue through a
    sector-mask HSV round trip (most of the ~5 ms a 224-px jitter takes on one core); here the
    hue step uses the closed form RGB = V - C * clamp(min(k, 4 - k), 0, 1), k = (n + 6H) mod 6,
    n = 5, 3, 1, with V = max and C = max - min unchanged by a hue rotation. Results match
    torchvision's float path to ~1e-6; on uint8 they differ by a few grey levels (mean ~1.5),
    because torchvision rounds to uint8 after each of the four steps and this rounds once."""

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, torch.Tensor) or inpt.ndim < 3 or inpt.shape[-3] != 3:
            return super().transform(inpt, params)
        out = inpt.float().div_(255) if inpt.dtype == torch.uint8 else inpt
        for fn_id in params["fn_idx"]:
            if fn_id == 0 and params["brightness_factor"] is not None:
                out = v2.functional.adjust_brightness(out, params["brightness_factor"])
            elif fn_id == 1 and params["contrast_factor"] is not None:
                out = v2.functional.adjust_contrast(out, params["contrast_factor"])
            elif fn_id == 2 and params["saturation_factor"] is not None:
                out = v2.functional.adjust_saturation(out, params["saturation_factor"])
            elif fn_id == 3 and params["hue_factor"] is not None:
                out = adjust_hue(out, params["hue_factor"])
        if inpt.dtype == torch.uint8:
            return out.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        return out


def adjust_hue(image: torch.Tensor, hue_factor) -> torch.Tensor:
    """Rotate the HSV hue of float RGB [..., 3, H, W] in [0, 1] by hue_factor (in turns, |f| <= 0.5;
    a float, or a tensor broadcasting against [..., H, W], e.g. [B, 1, 1] for one factor per image)."""
    if not isinstance(hue_factor, torch.Tensor) and not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor must be in [-0.5, 0.5], got {hue_factor}")
    r, g, b = image.unbind(dim=-3)
    minc, maxc = torch.aminmax(image, dim=-3)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # hue in sixths of a turn, as torchvision's _rgb_to_hsv (PIL's convention)
    h = torch.where(maxc == r, (g - b) / safe,
                    torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h6 = (h + 6.0 * hue_factor).remainder_(6.0)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (h6 + n).remainder_(6.0)
        channels.append(maxc - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(channels, dim=-3)


class SeparableGaussianBlur(v2.Transform):
    """Gaussian blur with sigma ~ U(sigma) and a separable kernel of radius ceil(3 sigma).

    uint8 in, uint8 out (rounded); float in, float out. Reflect padding as torchvision's blur."""

    def __init__(self, sigma: tuple[float, float] = BLUR_SIGMA_224):
        super().__init__()
        if not 0.0 < sigma[0] <= sigma[1]:
            raise ValueError(f"sigma must be (min, max) with 0 < min <= max, got {sigma}")
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def make_params(self, flat_inputs: list) -> dict:
        return dict(sigma=torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item())

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, torch.Tensor):
            raise TypeError(f"SeparableGaussianBlur takes tensors, got {type(inpt).__name__}")
        return gaussian_blur(inpt, params["sigma"])


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [..., C, H, W] with a separable Gaussian of std ``sigma`` pixels (radius ceil(3 sigma)).

    Two depthwise convolutions (rows, then columns) on a channels-last float copy."""
    *lead, c, h, w = image.shape
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()  # [K]
    out = image.reshape(-1, c, h, w).float().contiguous(memory_format=torch.channels_last)  # [N, C, H, W]
    mode = "reflect" if radius < min(h, w) else "replicate"
    rows = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous()
    cols = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous()
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode=mode), rows, groups=c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode=mode), cols, groups=c)
    out = out.contiguous().reshape(*lead, c, h, w)
    if image.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(image.dtype)


def blur_kernel_sigma(size: int) -> tuple[float, float]:
    """The papers' sigma range (for 224-px views) scaled to an S-px view."""
    factor = size / 224
    return (BLUR_SIGMA_224[0] * factor, BLUR_SIGMA_224[1] * factor)


def geometric(size: int, scale: tuple[float, float], random_resized_crop: bool = True,
              interpolation=InterpolationMode.BILINEAR) -> list:
    """RandomResizedCrop to S x S (or a plain resize of the whole image), then a horizontal flip."""
    if random_resized_crop:
        crop = v2.RandomResizedCrop(size, scale=scale, interpolation=interpolation, antialias=True)
    else:
        crop = v2.Resize((size, size), interpolation=interpolation, antialias=True)
    return [crop, v2.RandomHorizontalFlip(p=0.5)]


def photometric(size: int, jitter: tuple[float, float, float, float], jitter_p: float = 0.8,
                grayscale_p: float = 0.2, blur_p: float = 0.5, solarize_p: float = 0.0) -> list:
    """Colour jitter (random order, as torchvision), grayscale, blur and solarize; skips p = 0 steps."""
    steps = [v2.RandomApply([FastColorJitter(*jitter)], p=jitter_p), v2.RandomGrayscale(p=grayscale_p)]
    if blur_p > 0:
        steps.append(v2.RandomApply([SeparableGaussianBlur(blur_kernel_sigma(size))], p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=solarize_p))  # 0.5 of the [0, 1] range
    return steps


def to_float_normalised() -> list:
    """uint8 [0, 255] -> float [0, 1] -> ImageNet mean / std."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


@dataclass(frozen=True)
class ViewSpec:
    """One view of a pipeline: its geometry and (None for MAE) its photometric steps."""

    size: int
    scale: tuple[float, float]
    random_resized_crop: bool = True
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    photometric: dict | None = None  # keyword arguments of photometric() besides size


MOCO_V2_PHOTOMETRIC = dict(jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5, solarize_p=0.0)
BYOL_PHOTOMETRIC = (dict(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=1.0, solarize_p=0.0),  # view 1: always blurred
                    dict(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1, solarize_p=0.2))  # view 2: solarized at 0.2


def view_specs(name: str, size: int, random_resized_crop: bool = True, local_views: int = 0,
               local_size: int | None = None, local_scale: tuple[float, float] = LOCAL_SCALE) -> list[ViewSpec]:
    """The views of method ``name`` (global views first, then local ones): see view_pipeline."""
    if name not in PIPELINES:
        raise ValueError(f"unknown view pipeline {name!r}; valid: {', '.join(PIPELINES)}")
    if size < 8:
        raise ValueError(f"view size {size} is too small; use at least 8 px")
    if local_views < 0:
        raise ValueError(f"local_views must be >= 0, got {local_views}")
    if name == "mae":
        if local_views:
            raise ValueError("MAE takes one view; multi-crop (local_views > 0) applies to moco_v2 and byol")
        return [ViewSpec(size, (0.2, 1.0), random_resized_crop, InterpolationMode.BICUBIC)]
    if name == "moco_v2":
        looks, scale = (MOCO_V2_PHOTOMETRIC, MOCO_V2_PHOTOMETRIC), (0.2, 1.0)
    else:
        looks, scale = BYOL_PHOTOMETRIC, (0.08, 1.0)
    specs = [ViewSpec(size, scale, random_resized_crop, photometric=look) for look in looks]
    small = local_size or max(8, round(size * LOCAL_FRACTION))
    # Local views always crop (a local view *is* a small crop), even when random_resized_crop=False;
    # local view i uses the photometric steps of global view i mod 2.
    specs += [ViewSpec(small, local_scale, True, photometric=looks[i % 2]) for i in range(local_views)]
    return specs


def compose_view(spec: ViewSpec, photometric_on: str = "worker") -> v2.Compose:
    """uint8 pseudo-image -> one view. photometric_on="worker": the whole pipeline, float normalised out;
    "device": the geometric steps only, uint8 out (BatchPhotometric finishes the view on the GPU)."""
    steps = geometric(spec.size, spec.scale, spec.random_resized_crop, spec.interpolation)
    if photometric_on == "device":
        return v2.Compose(steps)
    if spec.photometric is not None:
        steps += photometric(spec.size, **spec.photometric)
    return v2.Compose(steps + to_float_normalised())


class MultiView:
    """Applies each global pipeline once, then each local pipeline once: uint8 [3, H, W] -> list of views.

    Global views come first ([3, S, S] each), local views after ([3, s, s], s < S)."""

    def __init__(self, global_views: Sequence[Callable], local_views: Sequence[Callable] = ()):
        self.global_views = list(global_views)
        self.local_views = list(local_views)

    def __len__(self) -> int:
        return len(self.global_views) + len(self.local_views)

    def __call__(self, image: torch.Tensor, seed: int | None = None) -> list[torch.Tensor]:
        check_image(image)
        if seed is None:
            return [t(image) for t in self.global_views + self.local_views]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [t(image) for t in self.global_views + self.local_views]

    def __repr__(self) -> str:
        return f"MultiView(global={self.global_views}, local={self.local_views})"


def check_image(image) -> None:
    """A pipeline's input must be a uint8 tensor [3, H, W] (decode and cut the crop first)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"view pipelines take a uint8 tensor [3, H, W], got {type(image).__name__}; "
                        "convert with torch.from_numpy(array).permute(2, 0, 1)")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"view pipelines take a uint8 tensor [3, H, W], got {image.dtype} "
                         f"{list(image.shape)}; pass RGB uint8 channels-first")


def view_pipeline(name: str, size: int, random_resized_crop: bool = True, local_views: int = 0,
                  local_size: int | None = None, local_scale: tuple[float, float] = LOCAL_SCALE,
                  photometric_on: str = "worker") -> MultiView:
    """The views of SSL method ``name`` at output size ``size``.

    name: "moco_v2" (also DenseCL's), "byol" or "mae".
    random_resized_crop: False = resize the whole pseudo-image instead (Table 15).
    local_views: k > 0 adds k SwAV local views of ``local_size`` (default round(96/224 * size), at
        least 8) at ``local_scale``; local view i uses the photometric steps of global view i mod 2.
        The two global views keep the method's own pipeline (SwAV's used scale (0.14, 1)).
    photometric_on: "worker" = the whole pipeline here (float views out); "device" = geometric steps
        only (uint8 views out), the photometric ones run batched on the GPU
        (coarsecrop.data.batch_photometric), which takes most of the per-image CPU work off the loader.
    """
    if photometric_on not in ("worker", "device"):
        raise ValueError(f"photometric_on must be 'worker' or 'device', got {photometric_on!r}")
    specs = view_specs(name, size, random_resized_crop, local_views, local_size, local_scale)
    views = [compose_view(spec, photometric_on) for spec in specs]
    n_global = 1 if name == "mae" else 2
    return MultiView(views[:n_global], views[n_global:])


def method_views(method, image_size: int | None = None, photometric_on: str = "worker") -> MultiView:
    """The views an SSL method trains on, picked by its pipeline name: ``view_pipeline(method.pipeline, ...)``
    with the method's own settings (``image_size`` unless given, ``random_resized_crop``, ``local_views``).
    A method (coarsecrop.ssl) only names its pipeline; the trainer builds the views here."""
    return view_pipeline(method.pipeline, image_size or method.image_size,
                         random_resized_crop=getattr(method, "random_resized_crop", True),
                         local_views=getattr(method, "local_views", 0), photometric_on=photometric_on)
