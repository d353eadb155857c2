"""Anchors of Sec. 3.3: 4 sizes x 3 aspect ratios at every location of phi's last feature map.

For an image H x W whose feature map is h x w, location (i, j) maps back to the image point
((j + 0.5) * W / w, (i + 0.5) * H / h) -- the down-sampling ratio H/h, W/w of the paper, taken at the
cell centre. Every anchor shape is centred there, then the box is clipped to the image
(``coarsecrop.boxes.clip_boxes``; a box squeezed under 1 px is widened to 1 px).

Shape convention (as torchvision's ``AnchorGenerator``): ``ratio = height / width`` and the area is
``size ** 2``, so a shape has ``w = size / sqrt(ratio)``, ``h = size * sqrt(ratio)``. Unlike torchvision
the shapes are not rounded to integers. Shapes are ordered ratio-major, size-minor (torchvision's
order): shape index ``a = r * len(sizes) + s``. Boxes are ordered location-major (row i, column j),
shape-minor: anchor ``k`` has location ``k // A`` and shape ``k % A``.

The paper's sizes 32 .. 256 were chosen for COCO images (~640 px). For smaller images,
``scaled_anchor_sizes`` scales them with the image side.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from coarsecrop.boxes import clip_boxes

SIZES = (32, 64, 128, 256)
RATIOS = (0.5, 1.0, 2.0)
FEATURE_STRIDE = 32  # torchvision ResNets down-sample by 32 at layer4


def anchor_shapes(sizes=SIZES, ratios=RATIOS) -> torch.Tensor:
    """Width and height of each anchor shape: float32 [A, 2], A = len(ratios) * len(sizes)."""
    size = torch.tensor(sizes, dtype=torch.float64)
    root = torch.tensor(ratios, dtype=torch.float64).sqrt()
    w = (size[None, :] / root[:, None]).reshape(-1)  # [R * S] ratio-major
    h = (size[None, :] * root[:, None]).reshape(-1)
    return torch.stack([w, h], dim=1).to(torch.float32)


def shape_size_index(sizes=SIZES, ratios=RATIOS) -> torch.Tensor:
    """For each anchor shape, the index of its size in ``sizes``: int64 [A]."""
    return torch.arange(len(sizes)).repeat(len(ratios))


def feature_size(height: int, width: int, stride: int = FEATURE_STRIDE) -> tuple[int, int]:
    """Size (h, w) of a torchvision ResNet's layer4 map for an H x W input: ceil(H/32), ceil(W/32)."""
    return max(1, math.ceil(height / stride)), max(1, math.ceil(width / stride))


def make_anchors(
    height: int, width: int, feat_h: int, feat_w: int, sizes=SIZES, ratios=RATIOS, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """All anchors of an H x W image with an h x w feature map.

    Returns (boxes float32 [h * w * A, 4] clipped xyxy pixels, shape index int64 [h * w * A])."""
    shapes = anchor_shapes(sizes, ratios).to(device=device, dtype=torch.float64)  # [A, 2]
    cy = (torch.arange(feat_h, device=device, dtype=torch.float64) + 0.5) * (height / feat_h)  # [h]
    cx = (torch.arange(feat_w, device=device, dtype=torch.float64) + 0.5) * (width / feat_w)  # [w]
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # [h*w, 1, 4]
    half = torch.cat([-shapes / 2, shapes / 2], dim=1)[None]  # [1, A, 4]
    boxes = (centres + half).reshape(-1, 4)  # [h*w*A, 4]
    shape_index = torch.arange(shapes.shape[0], device=device).repeat(feat_h * feat_w)
    return clip_boxes(boxes, width, height), shape_index


def cached_anchors(
    height: int, width: int, feat_h: int, feat_w: int, sizes=SIZES, ratios=RATIOS, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``make_anchors``, built once per (H, W, h, w, sizes, ratios, device) and then shared (the batch path
    of ``ours`` and ``random`` asks for the same anchors for every batch of one image size; building them
    costs ~20 small kernels on a GPU). The tensors are shared: callers must not modify them in place."""
    return _anchors(int(height), int(width), int(feat_h), int(feat_w), tuple(sizes), tuple(ratios),
                    torch.device(device))


@lru_cache(maxsize=256)  # ~100 kB per 640 x 480 entry
def _anchors(height, width, feat_h, feat_w, sizes, ratios, device):
    return make_anchors(height, width, feat_h, feat_w, sizes, ratios, device)


def scaled_anchor_sizes(image_side: float, reference_side: float = 640, sizes=SIZES) -> tuple[float, ...]:
    """The paper's anchor sizes scaled by image_side / reference_side (COCO images are ~640 px).

    E.g. 256-px scenes: 32 .. 256 -> 12.8 .. 102.4; ``reference_side=512`` gives 16 .. 128.
    Sizes are floored at 1 px."""
    scale = image_side / reference_side
    return tuple(max(1.0, round(s * scale, 2)) for s in sizes)
