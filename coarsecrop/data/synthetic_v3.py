"""Scenes v3 of the built-in data: v2's shapes on a ground that can be told apart from the objects.

Why: in v2 (``coarsecrop.data.synthetic_v2``) the background and its "stuff" draw from the objects' own
colour and texture distribution. Measured on 1,000 scenes v2 of 128 px (issue 13's throw-away check, in
the cpu-full 17_benchmark preset's comments): a GT box holds on average 55% its own object, 37% ground and
8% other objects, and that ground hides the silhouette in a 32-px crop. A supervised trunk trained on all
5,488 train crops scores 0.39 on the object probe with the crops as they are, 0.80 with only the ground
grey (the neighbours kept) and 0.90 with everything but the object grey. No self-supervised trunk can learn
shape on a benchmark where even labels barely do.

So v3 keeps v2's rules for the objects and changes the ground:

- objects: v2's twelve shape classes, counts, COCO-like sizes, poses, occlusion and frame cuts; every
  instance draws its two colours (``_object_palette``: saturated, any hue) and its texture pattern
  (``PATTERNS``) from one distribution shared by all classes, so colour still says nothing of the class;
- ground: the background surfaces and the stuff (amorphous blobs, pebbles, lines) draw from greyish colours
  (``_ground_colour``: saturation at most ``GROUND_MAX_SAT``) that no object uses (objects' saturation is at
  least ``OBJECT_MIN_SAT``), and the blobs are plain or shaded, never patterned.

What v3 gives up: in v2 a colourful patterned blob was not automatically an object; in v3 it is. Telling
objects from ground becomes easy, as in many photographs where things stand out from walls, floors and
tables, while naming the class still needs the shape. ``coarsecrop.data.gates`` measures both (colour-only
and shape-only probes) and ``coarsecrop.studies.benchmark`` the trunks. Rendering goes through
``synthetic.render_scene(seed, index, size, version=3)``; the classes and categories are v2's.
"""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np

from coarsecrop.data import synthetic as v1
from coarsecrop.data import synthetic_v2 as v2
from coarsecrop.data.scene_paint import frame, paint_polygons

OBJECT_MIN_SAT = 0.45  # objects: saturation in [0.45, 1], value in [0.35, 1]
GROUND_MAX_SAT = 0.22  # ground: saturation in [0, 0.22], value in [0.25, 0.85]
GROUND_PATTERNS = ("solid", "gradient")


def _object_palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of one object, from the distribution every object shares whatever its class: any hue,
    saturated; the second a darker / lighter shade of the first or a saturated colour of its own."""
    h, s, v = rng.uniform(0, 360), rng.uniform(OBJECT_MIN_SAT, 1.0), rng.uniform(0.35, 1.0)
    c1 = v1._hsv(h, s, v)
    if rng.random() < 0.5:
        shade = rng.uniform(0.4, 0.65) if v > 0.6 else rng.uniform(1.5, 2.2)
        c2 = v1._hsv(h + rng.uniform(-15, 15), max(OBJECT_MIN_SAT, s * rng.uniform(0.7, 1.0)), v * shade)
    else:
        c2 = v1._hsv(rng.uniform(0, 360), rng.uniform(OBJECT_MIN_SAT, 1.0), rng.uniform(0.35, 1.0))
    return c1, c2


def _ground_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour of the ground (background surfaces, blobs, pebbles, lines): any hue, greyish."""
    return v1._hsv(rng.uniform(0, 360), rng.uniform(0.0, GROUND_MAX_SAT), rng.uniform(0.25, 0.85))


def _object_surface(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, half: float, under: np.ndarray
                    ) -> np.ndarray:
    """The texture [h, w, 3] of one object: the first of ``v2.COLOUR_TRIES`` palette draws whose mean lies
    ``v2.CONTRAST`` away from ``under`` (the mean colour below it), else the farthest; any pattern."""
    best, best_d = None, -1.0
    for _ in range(v2.COLOUR_TRIES):
        c1, c2 = _object_palette(rng)
        d = float(np.linalg.norm((c1 + c2) / 2 - under))
        if d > best_d:
            best, best_d = (c1, c2), d
        if d >= v2.CONTRAST:
            break
    return v1._texture(v2.PATTERNS[int(rng.integers(len(v2.PATTERNS)))], u, v, half, *best, rng)


def _stuff_v3(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """Distractors that are not objects, in the ground's colours: plain or shaded amorphous blobs, pebbles
    and lines (v2's shapes and counts)."""
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
        pattern = GROUND_PATTERNS[int(rng.integers(len(GROUND_PATTERNS)))]
        tex = v1._texture(pattern, u, v, max(x1 - x0, y1 - y0) / 2, _ground_colour(rng), _ground_colour(rng), rng)
        region += a * (tex - region)
    for _ in range(int(rng.integers(2, 9))):  # pebbles
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = size * rng.uniform(0.01, 0.05) * rng.uniform(0.6, 1.0, n)
        centre = rng.uniform(0, size, 2)
        pts = np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], 1)
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], _ground_colour(rng).tolist(), cv2.LINE_AA, 4)
    for _ in range(int(rng.integers(2, 10))):  # lines and scribbles
        n = int(rng.integers(2, 7))
        start = rng.uniform(-0.1 * size, 1.1 * size, 2)
        pts = np.concatenate([start[None], start + np.cumsum(rng.normal(0, size * 0.15, (n - 1, 2)), 0)])
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, _ground_colour(rng).tolist(),
                      int(rng.integers(1, max(2, size // 64) + 1)), cv2.LINE_AA, 4)


def render_scene_v3(seed: int, index: int, size: int) -> v1.RenderedScene:
    """Image ``index`` of the v3 data set ``seed``; depends only on (seed, index, size)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 3]))
    while True:  # retry (same stream, so still deterministic) in the rare case no instance survives
        img = v1._background(rng, size, colour=_ground_colour)
        _stuff_v3(img, rng, size)
        labels = np.zeros((size, size), np.uint8)
        k = int(rng.choice(np.arange(1, v2.V2_MAX_OBJECTS + 1), p=v2.V2_OBJECT_COUNT_WEIGHTS))
        classes = rng.integers(len(v2.V2_CLASSES), size=k)
        scales = np.sort(v2._sample_scales_v2(rng, k))[::-1]  # large first: small objects bite big ones
        painted = []
        for j, (c, s) in enumerate(zip(classes, scales)):
            angle = rng.uniform(0, 2 * np.pi)
            unit = v2._shape_v2(v2.V2_CLASSES[c], rng)
            if paint_polygons(img, labels, j + 1, unit, float(s), angle, rng, partial(_object_surface, rng)):
                painted.append((j + 1, int(c) + 1, float(s)))
        scene = v1.finish_scene(img, labels, painted, rng)
        if scene is not None:
            return scene
