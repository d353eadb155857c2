"""The box contract shared by every part: float32 ``[N, 4]`` ``x1 y1 x2 y2`` in pixels of the original
image, clipped to it, width and height >= 1."""

from __future__ import annotations

import torch


def clip_boxes(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Clip to the image and widen degenerate boxes to 1 px (kept inside the image).

    Images narrower or shorter than 1 px do not exist, so every box comes out valid. Element-wise only
    (no masked assignment), so on a GPU it never waits for the device."""
    boxes = boxes.to(torch.float32).reshape(-1, 4)
    sides = []
    for lo, hi, limit in ((0, 2, width), (1, 3, height)):
        a, b = boxes[:, lo].clamp(0, limit), boxes[:, hi].clamp(0, limit)
        short = b - a < 1
        b = torch.where(short, torch.clamp(a + 1, max=limit), b)
        sides.append((torch.where(short, b - 1, a), b))
    (x1, x2), (y1, y2) = sides
    return torch.stack([x1, y1, x2, y2], dim=1)


def is_valid(boxes: torch.Tensor, width: int, height: int) -> bool:
    """True when ``boxes`` follows the contract for an image of this size."""
    if boxes.dtype != torch.float32 or boxes.ndim != 2 or boxes.shape[1] != 4:
        return False
    if boxes.numel() == 0:
        return True
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return bool(
        (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        and (w >= 1 - 1e-4).all() and (h >= 1 - 1e-4).all()
    )
