"""Box means (Eq. 4) for all boxes at once from a summed-area table, batched, on any device.

Pixel convention: a box [x1, y1, x2, y2] covers pixel columns floor(x1) .. ceil(x2) - 1 and rows
floor(y1) .. ceil(y2) - 1 -- every pixel the box touches, each counted fully. For integer boxes
that is exactly columns x1 .. x2 - 1. The box mean is the sum over those pixels divided by their
number. A box of the contract (inside the image, w, h >= 1) always covers at least one pixel.

Precision: the table is float64, so a 640 x 480 map's sums (up to ~3e5) keep ~1e-11 absolute
error and every box mean stays within 1e-5 of the naive mean (float32 tables would not, for
small boxes far from the origin). Devices without float64 (Apple MPS) build the table on the CPU.
"""

from __future__ import annotations

import torch


def summed_area_table(maps: torch.Tensor) -> torch.Tensor:
    """[B, H, W] maps -> float64 [B, H + 1, W + 1] table, T[b, i, j] = sum of maps[b, :i, :j]."""
    device = maps.device if maps.device.type != "mps" else torch.device("cpu")
    maps = maps.to(device=device, dtype=torch.float64)
    table = maps.cumsum(dim=1).cumsum(dim=2)
    return torch.nn.functional.pad(table, (1, 0, 1, 0))


def pixel_bounds(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Integer pixel bounds [..., 4] (c0, r0, c1, r1), half-open: columns c0 .. c1 - 1, rows r0 .. r1 - 1."""
    boxes = boxes.to(torch.float64)
    c0 = boxes[..., 0].floor().clamp(0, width - 1)
    r0 = boxes[..., 1].floor().clamp(0, height - 1)
    c1 = torch.maximum(boxes[..., 2].ceil().clamp(max=width), c0 + 1)
    r1 = torch.maximum(boxes[..., 3].ceil().clamp(max=height), r0 + 1)
    return torch.stack([c0, r0, c1, r1], dim=-1).long()


def box_sums(table: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and pixel counts of boxes from a table.

    table: float64 [B, H + 1, W + 1]; boxes: [N, 4] (shared by all B images) or [B, N, 4].
    Returns (sums float64 [B, N], counts float64 [B, N])."""
    B, H1, W1 = table.shape
    if boxes.ndim == 2:
        boxes = boxes[None].expand(B, -1, -1)
    c0, r0, c1, r1 = pixel_bounds(boxes.to(table.device), H1 - 1, W1 - 1).unbind(-1)  # each [B, N]
    flat = table.reshape(B, -1)

    def at(r, c):
        return flat.gather(1, r * W1 + c)

    sums = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)
    counts = ((r1 - r0) * (c1 - c0)).to(torch.float64)
    return sums, counts


def box_means(table: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Mean of the map inside each box: float32 [B, N] (see ``box_sums`` for shapes)."""
    sums, counts = box_sums(table, boxes)
    return (sums / counts).to(torch.float32)


def score_boxes(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Convenience: box means of [B, H, W] maps for boxes [N, 4] or [B, N, 4] -> float32 [B, N]."""
    return box_means(summed_area_table(maps), boxes)
