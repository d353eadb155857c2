"""Placing and painting one object of a built-in scene (shared by generator v1, ``coarsecrop.data.synthetic``,
and v2, ``coarsecrop.data.synthetic_v2``): unit polygons scaled to an area, placed at the least crowded of a
few centres, rotated, shadowed, textured by the caller's ``surface``, shaded, soft-edged, and written into
the label map (a later object occludes earlier ones)."""

from __future__ import annotations

import math

import cv2
import numpy as np

PLACEMENT_TRIES = 3  # candidate centres per object; the least crowded wins


def place_centre(labels: np.ndarray, half: float, rng: np.random.Generator, tries: int = PLACEMENT_TRIES
                  ) -> tuple[float, float]:
    """Centre of a new object: the least crowded of a few random candidates (fewest already painted
    object pixels under its box), so objects overlap partly rather than pile up. The centre keeps 0.2
    half-extents from the border, so up to 40% of an object's extent may be cut by the frame."""
    size = labels.shape[0]
    best, best_overlap = None, None
    for cx, cy in rng.uniform(0.2 * half, size - 0.2 * half, (tries, 2)):
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        overlap = np.count_nonzero(labels[y0:int(cy + half) + 1, x0:int(cx + half) + 1])
        if best is None or overlap < best_overlap:
            best, best_overlap = (float(cx), float(cy)), overlap
    return best


def place(polys: list[tuple[np.ndarray, int]], cx: float, cy: float, half: float, aspect: float,
           angle: float) -> list[tuple[np.ndarray, int]]:
    """Unit polygons -> image pixel polygons (scale, anisotropic aspect, rotation, translation)."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = np.array([half * aspect, half]) if aspect <= 1 else np.array([half, half / aspect])
    return [((p * stretch) @ rot.T + [cx, cy], value) for p, value in polys]


def unit_area(polys: list[tuple[np.ndarray, int]], res: int = 128) -> float:
    """Area of unit-coordinate polygons (holes cut), measured by rasterising [-1, 1]^2 at ``res`` px."""
    canvas = np.zeros((res, res), np.uint8)
    for p, value in polys:
        cv2.fillPoly(canvas, [np.round((p + 1) * res / 2 * 16).astype(np.int32)], int(value), cv2.LINE_8, 4)
    return max(np.count_nonzero(canvas), 1) * (2 / res) ** 2


def frame(x0: int, x1: int, y0: int, y1: int, cx: float, cy: float, angle: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) [h, w] of the window [y0:y1, x0:x1] in the frame centred at (cx, cy),
    rotated by ``angle``."""
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)  # [1, w]
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)  # [h, 1]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return dx * cos + dy * sin, dy * cos - dx * sin


def paint_polygons(img: np.ndarray, labels: np.ndarray, k: int, unit: list[tuple[np.ndarray, int]], scale: float,
                   angle: float, rng: np.random.Generator, surface) -> bool:
    """Paint the unit polygons ``unit`` as object ``k`` (placed, shadowed, textured by
    ``surface(u, v, half, under)`` -> colours [h, w, 3], where ``under`` is the mean colour below the
    object, shaded, soft-edged) into ``img`` and the label map; False when it falls outside the image."""
    size = img.shape[0]
    half = scale * size / math.sqrt(unit_area(unit))  # area in pixels = (scale * size) ** 2
    cx, cy = place_centre(labels, half, rng)
    polys = place(unit, cx, cy, half, 1.0, angle)
    pts = np.concatenate([p for p, _ in polys])
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 3, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 4, size)
    if x1 <= x0 or y1 <= y0:
        return False
    win = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for p, value in polys:
        cv2.fillPoly(win, [np.round((p - [x0, y0]) * 16).astype(np.int32)], int(value), cv2.LINE_8, 4)
    inside = win.astype(bool)
    if not inside.any():
        return False
    region = img[y0:y1, x0:x1]
    if rng.random() < 0.5:  # soft drop shadow (not object)
        dx, dy = rng.uniform(-0.12, 0.12, 2) * half
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        shadow = cv2.warpAffine(win.astype(np.float32), m, (win.shape[1], win.shape[0]))
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, half * 0.08))
        region *= (1 - rng.uniform(0.2, 0.45) * shadow)[..., None]
    u, v = frame(x0, x1, y0, y1, cx, cy, angle)  # [h, w] in the object's frame
    tex = surface(u, v, half, region[inside].mean(0))
    a = rng.uniform(0, 2 * np.pi)  # shading across the object
    tex *= (1 + 0.25 * (u * np.cos(a) + v * np.sin(a)) / (2 * half))[..., None]
    alpha = cv2.GaussianBlur(win.astype(np.float32), (3, 3), 0.6)[..., None]  # soft edges
    region[:] = region * (1 - alpha) + tex * alpha
    labels[y0:y1, x0:x1][inside] = k
    return True
