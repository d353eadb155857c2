"""Crop quality as in Table 2 and Fig. 3: the objectness of a crop is the share of its pixels covered
by the union of the GT instance masks; crops are Poor (< 20 %), Precise (> 80 %) or Coarse (the rest).
Crop size is summarised by the side sqrt(w * h) in pixels.

Objectness uses the same pixel convention and summed-area scoring as the box scores
(``coarsecrop.crops.scoring``): a box covers every pixel it touches. Pixels the source leaves unlabelled
(VOC's void band, 255 in SegmentationObject: object borders and ambiguous regions) count neither as object
nor as background: objectness is object pixels over labelled pixels, as the VOC devkit ignores void in
segmentation (counting void as background understated a tight GT box's objectness by the band's share).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from coarsecrop.crops.scoring import box_means, summed_area_table

POOR_BELOW = 0.2
PRECISE_ABOVE = 0.8
PERCENTILES = (10, 50, 75, 90)


def labelled_masks(scene) -> tuple[np.ndarray, np.ndarray | None]:
    """A scene's object pixels (bool [H, W], ``Scene.object_mask``) and the pixels its source leaves
    unlabelled (VOC's void, bool [H, W]; None where the source labels every pixel), for ``crop_objectness``."""
    return scene.object_mask(), (np.asarray(scene.void_decoder(), dtype=bool) if scene.void_decoder else None)


def crop_objectness(boxes: torch.Tensor, object_mask, unlabelled=None) -> torch.Tensor:
    """Share of each crop's labelled pixels that are object pixels: boxes [M, 4], mask bool [H, W],
    unlabelled bool [H, W] or None (every pixel labelled) -> float32 [M].

    A pixel counts whole when the box touches it (``scoring.pixel_bounds``: a fractional edge takes its
    pixel in); a box reaching outside the image is measured on its part inside (the strategies' boxes are
    clipped to the image, so the book never meets one), and a box with no labelled pixel inside is NaN."""
    mask = torch.as_tensor(np.asarray(object_mask)).to(torch.float64)  # [H, W]
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float32)
    if unlabelled is None:
        means = box_means(summed_area_table(mask[None]), boxes)[0].cpu()
    else:  # object pixels over labelled pixels: the ratio of the two boxes' means (0 / 0: NaN)
        labelled = 1.0 - torch.as_tensor(np.asarray(unlabelled)).to(torch.float64)
        both = box_means(summed_area_table(torch.stack([mask * labelled, labelled])), boxes).cpu()  # [2, M]
        means = both[0] / both[1]
    H, W = mask.shape
    b = boxes.to(torch.float64).cpu()
    outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= W) | (b[:, 1] >= H)
    return torch.where(outside, torch.full_like(means, float("nan")), means)


def quality_buckets(values) -> dict[str, float]:
    """Shares of Poor (< 0.2), Coarse and Precise (> 0.8) crops among objectness values in [0, 1].

    Returns {"poor": .., "coarse": .., "precise": ..} summing to 1; all 0.0 when there are no crops."""
    v = _as_array(values)
    if v.size == 0:
        return {"poor": 0.0, "coarse": 0.0, "precise": 0.0}
    poor = float((v < POOR_BELOW).mean())
    precise = float((v > PRECISE_ABOVE).mean())
    return {"poor": poor, "coarse": 1.0 - poor - precise, "precise": precise}


def crop_sides(boxes: torch.Tensor) -> torch.Tensor:
    """Side sqrt(w * h) of each box in pixels: [M, 4] -> float32 [M]."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp_min(0).sqrt()


def size_summary(sides, percentiles: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """Percentiles of crop sides: {"p10": .., "p50": .., "p75": .., "p90": .., "mean": ..}; NaN when empty.

    ``sides``: a tensor / array of sides, or an iterable of per-image [M, 4] box tensors."""
    if isinstance(sides, (list, tuple)) and sides and isinstance(sides[0], torch.Tensor) and sides[0].ndim == 2:
        sides = [crop_sides(b) for b in sides]
    v = _as_array(sides)
    keys = [f"p{p:g}" for p in percentiles] + ["mean"]
    if v.size == 0:
        return dict.fromkeys(keys, float("nan"))
    stats = [float(x) for x in np.percentile(v, percentiles)] + [float(v.mean())]
    return dict(zip(keys, stats))


def _as_array(values) -> np.ndarray:
    """Flatten a tensor, an array, a number, or a list of any of these into one float array."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float32, copy=False).reshape(-1)
    if isinstance(values, torch.Tensor):
        return np.asarray(values.detach().cpu().float().reshape(-1))
    values = list(values) if isinstance(values, Iterable) else [values]
    parts = [np.asarray(torch.as_tensor(v).float().reshape(-1)) for v in values]
    return np.concatenate(parts) if parts else np.zeros(0)
