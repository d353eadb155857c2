"""Scenes v2 of the built-in data: the class is the shape, never the colour.

Why: in v1 (``coarsecrop.data.synthetic``) each class owns a hue range and a texture pattern, so the
colour of an object's own pixels names its class (a colour-only probe scores ~98%) and a random network
already "knows" the classes. Here:

- every instance draws its two colours and its texture pattern from ONE distribution (``_palette``,
  ``PATTERNS``), the same for all classes;
- the class lives in the geometry: outline, holes, parts, symmetry (``V2_CLASSES``), with within-class
  variation in aspect, shear, a smooth deformation of the outline, rotation and scale;
- the background surfaces and the "stuff" (amorphous blobs, pebbles, lines) draw from that same colour
  and texture distribution, so a colourful textured blob is not automatically an object; objects and
  blobs alike take the first colour pair that stands out from what lies under them (a rule that does not
  look at the class);
- object sizes follow COCO's spread (``_sample_scales_v2``), truncated so the smallest stay a few pixels
  wide at 128 px and the largest fill about half the frame; occlusion and frame cuts stay as in v1.

The class set is v1's minus ``hexagon`` (a disc once colour is gone and aspect varies), plus
``dumbbell`` (two parts and a bar). ``coarsecrop.data.gates`` measures the result (colour-only and
shape-only probes). Rendering goes through ``synthetic.render_scene(seed, index, size, version=2)``.
"""

from __future__ import annotations

from functools import lru_cache, partial

import cv2
import numpy as np

from coarsecrop.data import synthetic as v1
from coarsecrop.data.scene_paint import frame, paint_polygons

V2_CLASSES: tuple[str, ...] = ("disc", "ring", "square", "triangle", "star", "cross", "crescent", "heart",
                               "arrow", "dumbbell", "glyph_A", "glyph_S")
V2_CATEGORIES: list[dict] = [
    {"id": i + 1, "name": name, "supercategory": "glyph" if name.startswith("glyph") else "shape"}
    for i, name in enumerate(V2_CLASSES)
]
PATTERNS = ("solid", "stripes", "dots", "checker", "gradient", "radial", "grid")

V2_MAX_OBJECTS = 12  # COCO averages 7.3 objects per image; 6.8 here before drops
V2_OBJECT_COUNT_WEIGHTS = (0.03, 0.05, 0.07, 0.09, 0.11, 0.12, 0.12, 0.11, 0.09, 0.08, 0.07, 0.06)  # of 1..12
# COCO's relative object scale sqrt(area) / sqrt(image area): median 0.106, 10% below 0.024 and 10% above
# 0.472 (Singh & Davis, SNIP, CVPR 2018): a log-normal with sigma ~1.16. Truncated to [MIN, MAX]: below
# 0.045 an object is under 6 px at 128 px and its shape is gone; 0.7 is half the frame's area. Visible
# sizes at 128 px (300 scenes, seed 3): median 0.137, 34% below 0.1, 6.5% above 0.4, max 0.63.
COCO_MEDIAN_SCALE, COCO_LOG_SIGMA = 0.106, 1.16
V2_MIN_SCALE, V2_MAX_SCALE = 0.045, 0.70
CONTRAST = 60.0  # RGB distance between a new object's / blob's mean colour and what lies under it
COLOUR_TRIES = 4


# --------------------------------------------------------------------------------------------- shapes


@lru_cache(maxsize=None)
def _glyph_v2(letter: str, font: int, thickness: int) -> tuple[tuple[np.ndarray, int], ...]:
    """A Hershey letter in one of several fonts and stroke widths (outer contours paint, holes cut)."""
    canvas = np.zeros((160, 160), np.uint8)
    (tw, th), _ = cv2.getTextSize(letter, font, 4.0, thickness)
    cv2.putText(canvas, letter, ((160 - tw) // 2, (160 + th) // 2), font, 4.0, 255, thickness, cv2.LINE_8)
    contours, hierarchy = cv2.findContours(canvas, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polys = [(c.reshape(-1, 2).astype(np.float64), 1 if parent < 0 else 0)
             for c, (_, _, _, parent) in zip(contours, hierarchy[0])]
    polys.sort(key=lambda pv: -pv[1])  # outer contours first, then the holes
    return tuple(polys)


GLYPH_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def _dumbbell(r: float, bar: float) -> list[tuple[np.ndarray, int]]:
    """Two discs of radius ``r`` at the ends of [-1, 1] joined by a bar of half-width ``bar``."""
    c = 1 - r
    shaft = np.array([[-c, -bar], [c, -bar], [c, bar], [-c, bar]], np.float64)
    return [(v1._circle(r, -c, 0.0, 32), 1), (v1._circle(r, c, 0.0, 32), 1), (shaft, 1)]


def _raw_shape_v2(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """The polygons of one instance of a class, with its within-class variation of the geometry."""
    u = rng.uniform
    if name == "disc":
        return [(v1._circle(), 1)]
    if name == "ring":
        return [(v1._circle(), 1), (v1._circle(u(0.42, 0.62), u(-0.1, 0.1), u(-0.1, 0.1)), 0)]
    if name == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) + u(-0.1, 0.1, (4, 2)), 1)]
    if name == "triangle":
        return [(v1._regular(3) + u(-0.15, 0.15, (3, 2)), 1)]
    if name == "star":
        return [(v1._star(5, u(0.38, 0.55)), 1)]
    if name == "cross":
        return [(v1._cross(u(0.28, 0.42)), 1)]
    if name == "crescent":
        return [(v1._circle(), 1), (v1._circle(u(0.75, 0.9), cx=u(0.45, 0.7), cy=u(-0.1, 0.1)), 0)]
    if name == "heart":
        return [(v1._heart(), 1)]
    if name == "arrow":
        return [(v1._arrow(u(0.25, 0.45), u(0.7, 1.0)), 1)]
    if name == "dumbbell":
        return _dumbbell(u(0.3, 0.42), u(0.1, 0.2))
    if name.startswith("glyph_"):
        font = GLYPH_FONTS[int(rng.integers(len(GLYPH_FONTS)))]
        return list(_glyph_v2(name[len("glyph_"):], font, int(rng.integers(12, 20))))
    raise ValueError(f"unknown v2 shape {name!r}")


def _densify(p: np.ndarray, step: float = 0.08) -> np.ndarray:
    """The closed polygon ``p`` with points inserted so no edge is longer than ``step`` (so a smooth
    deformation bends edges, not only moves corners)."""
    nxt = np.roll(p, -1, 0)
    n = np.maximum(1, np.ceil(np.linalg.norm(nxt - p, axis=1) / step).astype(int))
    edge = np.repeat(np.arange(len(p)), n)  # the edge each output point lies on
    frac = (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
    return p[edge] + (nxt - p)[edge] * frac[:, None]


def _shape_v2(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Unit polygons of one instance: its class geometry, normalised to [-1, 1] on the larger side, then
    an aspect change, a shear and a smooth displacement field (the same field for outline and holes)."""
    polys = _raw_shape_v2(name, rng)
    pts = np.concatenate([p for p, v in polys if v])
    centre, half = (pts.max(0) + pts.min(0)) / 2, (pts.max(0) - pts.min(0)).max() / 2
    aspect, shear = rng.uniform(0.6, 1.0), rng.uniform(-0.2, 0.2)
    warp = np.array([[1.0, shear], [0.0, aspect]])
    amp = rng.uniform(0.0, 0.07, 2)
    freq = rng.uniform(1.5, 3.5, (2, 2))
    phase = rng.uniform(0, 2 * np.pi, 2)
    out = []
    for p, value in polys:
        q = _densify((p - centre) / half) @ warp.T
        q = q + amp * np.sin(q @ freq.T + phase)
        out.append((q, value))
    return out


# ------------------------------------------------------------------------------ colours and textures


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of one surface, from the distribution every object, blob and background shares: any
    hue, saturation and value; the second colour either a darker / lighter shade of the first or a colour
    of its own."""
    h, s, v = rng.uniform(0, 360), rng.uniform(0.0, 1.0), rng.uniform(0.15, 1.0)
    c1 = v1._hsv(h, s, v)
    if rng.random() < 0.5:
        shade = rng.uniform(0.35, 0.6) if v > 0.5 else rng.uniform(1.6, 2.6)
        c2 = v1._hsv(h + rng.uniform(-15, 15), s * rng.uniform(0.5, 1.0), v * shade)
    else:
        c2 = v1._hsv(rng.uniform(0, 360), rng.uniform(0.0, 1.0), rng.uniform(0.15, 1.0))
    return c1, c2


def _contrasting(rng: np.random.Generator, under: np.ndarray, palette=_palette) -> tuple[np.ndarray, np.ndarray]:
    """The first of ``COLOUR_TRIES`` draws of ``palette`` whose mean colour lies ``CONTRAST`` away from
    ``under`` (the mean colour below the new surface), else the farthest one."""
    best, best_d = None, -1.0
    for _ in range(COLOUR_TRIES):
        c1, c2 = palette(rng)
        d = float(np.linalg.norm((c1 + c2) / 2 - under))
        if d > best_d:
            best, best_d = (c1, c2), d
        if d >= CONTRAST:
            break
    return best


def _surface(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, half: float, under: np.ndarray,
             palette=_palette) -> np.ndarray:
    """The texture [h, w, 3] of one object or blob (u, v: pixels from its centre in its own frame): a colour
    pair of ``palette`` that stands out from ``under``, any pattern."""
    c1, c2 = _contrasting(rng, under, palette)
    return v1._texture(PATTERNS[int(rng.integers(len(PATTERNS)))], u, v, half, c1, c2, rng)


def _palette_colour(rng: np.random.Generator) -> np.ndarray:
    return _palette(rng)[0]


# ------------------------------------------------------------------------------------------- stuff


def _stuff_v2(img: np.ndarray, rng: np.random.Generator, size: int, blob=_surface, colour=_palette_colour) -> None:
    """Distractors that are not objects: amorphous blobs (texture ``blob(rng, u, v, half, under)``), pebbles
    and lines (``colour(rng)``); by default in the objects' colours and textures (v2)."""
    for _ in range(int(rng.integers(1, 4))):
        field = v1._smooth_field(rng, size, int(rng.integers(4, 9)))
        alpha = np.clip((field - np.float32(rng.uniform(0.72, 0.85))) * 12, 0, 1)
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        if not len(rows):
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        a = alpha[y0:y1, x0:x1][..., None]
        region = img[y0:y1, x0:x1]
        u, v = frame(x0, x1, y0, y1, (x0 + x1) / 2, (y0 + y1) / 2, rng.uniform(0, 2 * np.pi))
        under = (region * a).sum((0, 1)) / max(float(a.sum()), 1e-6)
        tex = blob(rng, u, v, max(x1 - x0, y1 - y0) / 2, under)
        region += a * (tex - region)
    for _ in range(int(rng.integers(2, 9))):  # pebbles
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = size * rng.uniform(0.01, 0.05) * rng.uniform(0.6, 1.0, n)
        centre = rng.uniform(0, size, 2)
        pts = np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], 1)
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour(rng).tolist(), cv2.LINE_AA, 4)
    for _ in range(int(rng.integers(2, 10))):  # lines and scribbles
        n = int(rng.integers(2, 7))
        start = rng.uniform(-0.1 * size, 1.1 * size, 2)
        pts = np.concatenate([start[None], start + np.cumsum(rng.normal(0, size * 0.15, (n - 1, 2)), 0)])
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, colour(rng).tolist(),
                      int(rng.integers(1, max(2, size // 64) + 1)), cv2.LINE_AA, 4)


# ------------------------------------------------------------------------------------------ objects


def _sample_scales_v2(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` object sizes (sqrt(area) / image side): COCO's log-normal spread, resampled into
    [V2_MIN_SCALE, V2_MAX_SCALE] (many small objects, a few that fill about half the frame)."""
    out = np.empty(0)
    while len(out) < k:
        s = COCO_MEDIAN_SCALE * np.exp(COCO_LOG_SIGMA * rng.standard_normal(4 * k))
        out = np.concatenate([out, s[(s >= V2_MIN_SCALE) & (s <= V2_MAX_SCALE)]])
    return out[:k]


def _paint_object_v2(img: np.ndarray, labels: np.ndarray, k: int, name: str, scale: float,
                     rng: np.random.Generator) -> bool:
    """Paint object ``k`` of class ``name`` (as v1's objects, but any colour pair and pattern of the shared
    distribution that stands out from what lies under it); False when it falls outside the image."""
    angle = rng.uniform(0, 2 * np.pi)
    unit = _shape_v2(name, rng)
    return paint_polygons(img, labels, k, unit, scale, angle, rng, partial(_surface, rng))


def render_scene_v2(seed: int, index: int, size: int) -> v1.RenderedScene:
    """Image ``index`` of the v2 data set ``seed``; depends only on (seed, index, size)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 2]))
    while True:  # retry (same stream, so still deterministic) in the rare case no instance survives
        img = v1._background(rng, size, colour=_palette_colour)
        _stuff_v2(img, rng, size)
        labels = np.zeros((size, size), np.uint8)
        k = int(rng.choice(np.arange(1, V2_MAX_OBJECTS + 1), p=V2_OBJECT_COUNT_WEIGHTS))
        classes = rng.integers(len(V2_CLASSES), size=k)
        scales = np.sort(_sample_scales_v2(rng, k))[::-1]  # large first: small objects bite big ones
        painted = []
        for j, (c, s) in enumerate(zip(classes, scales)):
            if _paint_object_v2(img, labels, j + 1, V2_CLASSES[c], float(s), rng):
                painted.append((j + 1, int(c) + 1, float(s)))
        scene = v1.finish_scene(img, labels, painted, rng)
        if scene is not None:
            return scene
