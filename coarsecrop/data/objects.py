"""Ground-truth object crops of annotated scenes: the input of the object probe (``coarsecrop.models.probe``).

One cutter for every caller: each GT box is cut from its decoded image with ``data.pseudo.cut_crop``
(exact box, no context; floor / ceil to whole pixels, clamped into the frame, at least one pixel; the
decode ``scale`` of ``load_image`` honoured), then resized to a ``size`` square (bilinear, antialiased,
rounded back to uint8). The trainer's monitor and the ``objects`` transfer task both read their crops
from ``object_crops``.

Before issue 12 the ``objects`` task had its own cutter (int / ceil, ignoring the decode scale). On
non-negative boxes inside the frame both rules cut the same pixels (tests/test_probe.py proves it for
fractional, out-of-frame and 1-pixel boxes), and images are decoded at full size (scale 1) here, so every
built-in scene gives the same crops as before. The old rule differed only on boxes with a corner left of /
above the frame by a pixel or more (``int(-3)`` sliced from the far edge; ``cut_crop`` clamps to 0) and
would have cut the wrong place on an image decoded smaller (``max_side``); the built-in scenes have neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from coarsecrop.data.images import BadImage, load_image
from coarsecrop.data.pseudo import cut_crop


def resize_crop(crop: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, h, w] -> uint8 [3, size, size]: bilinear, antialiased, rounded (the aspect ratio is not kept)."""
    x = F.interpolate(crop.unsqueeze(0).float(), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)  # [1, 3, size, size]
    return x[0].round().clamp(0, 255).to(torch.uint8)


class _SceneCrops(Dataset):
    """Item j: the chosen GT boxes of one scene, cut and resized: (uint8 [K, 3, s, s], int64 labels [K])."""

    def __init__(self, scenes: Sequence, groups: list[tuple[int, list[int]]], size: int,
                 index: dict[int, int] | None, skip_bad: bool):
        self.scenes, self.groups, self.size, self.index, self.skip_bad = scenes, groups, size, index, skip_bad

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, keys = self.groups[j]
        scene = self.scenes[i]
        try:
            image, scale = load_image(scene.file)
        except BadImage:
            if self.skip_bad:
                return no_crops(self.size)
            raise
        crops = [resize_crop(cut_crop(image, scene.boxes[k].tolist(), scale), self.size) for k in keys]
        labels = [int(scene.labels[k]) for k in keys]
        if self.index is not None:
            labels = [self.index[c] for c in labels]
        return torch.stack(crops), torch.tensor(labels, dtype=torch.int64)


def no_crops(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty result: (uint8 [0, 3, size, size], int64 [0])."""
    return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)


def box_side(box) -> float:
    """An object's size in pixels: sqrt of its GT box area (x0, y0, x1, y1 in the annotation's pixels), the
    measure of COCO's size classes (small: under 32 px, i.e. area under 32^2)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)))


def object_crops(scenes: Sequence, size: int, max_crops: int | None = None, seed: int = 0,
                 index: dict[int, int] | None = None, skip_bad: bool = False,
                 workers: int = 0, min_side: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """GT object crops of ``scenes``, resized to ``size``: (uint8 [M, 3, size, size], int64 labels [M]).

    min_side: only objects whose ``box_side`` (sqrt of the box area, annotation pixels) is at least this;
        0 keeps every object. Applied before ``max_crops``.
    max_crops: at most this many, a seeded (``seed``) subset of the (scene, object) pairs when there are
        more; None keeps every object. Crops stay in scene order, then box order.
    index: category id -> class index (``evaluate.data.class_index``); None keeps the category ids.
    skip_bad: an undecodable image gives no crops (the monitor) instead of raising its BadImage.
    workers: DataLoader processes decoding the scenes (one scene per item)."""
    pairs = [(i, k) for i, scene in enumerate(scenes) for k in range(len(scene.boxes))
             if min_side <= 0 or box_side(scene.boxes[k].tolist()) >= min_side]
    if max_crops is not None and len(pairs) > max_crops:
        keep = np.random.default_rng(seed).choice(len(pairs), size=max_crops, replace=False)
        pairs = [pairs[j] for j in sorted(keep)]
    groups: dict[int, list[int]] = {}
    for i, k in pairs:
        groups.setdefault(i, []).append(k)
    loader = DataLoader(_SceneCrops(list(scenes), list(groups.items()), size, index, skip_bad),
                        batch_size=None, num_workers=workers)
    parts = [(crops, labels) for crops, labels in loader if len(labels)]
    if not parts:
        return no_crops(size)
    crops, labels = zip(*parts)
    return torch.cat(crops), torch.cat(labels)
