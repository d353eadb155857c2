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

import numpy as np

from coarsecrop.data import synthetic as v1
from coarsecrop.data import synthetic_v2 as v2
from coarsecrop.data.scene_paint import paint_polygons

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


def _ground_blob(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, half: float, under: np.ndarray
                ) -> np.ndarray:
    """The texture [h, w, 3] of one distractor blob: plain or shaded, in the ground's colours (``under`` is
    not looked at: the ground need not stand out from itself)."""
    pattern = GROUND_PATTERNS[int(rng.integers(len(GROUND_PATTERNS)))]
    return v1._texture(pattern, u, v, half, _ground_colour(rng), _ground_colour(rng), rng)


def render_scene_v3(seed: int, index: int, size: int) -> v1.RenderedScene:
    """Image ``index`` of the v3 data set ``seed``; depends only on (seed, index, size)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 3]))
    while True:  # retry (same stream, so still deterministic) in the rare case no instance survives
        img = v1._background(rng, size, colour=_ground_colour)
        v2._stuff_v2(img, rng, size, blob=_ground_blob, colour=_ground_colour)
        labels = np.zeros((size, size), np.uint8)
        k = int(rng.choice(np.arange(1, v2.V2_MAX_OBJECTS + 1), p=v2.V2_OBJECT_COUNT_WEIGHTS))
        classes = rng.integers(len(v2.V2_CLASSES), size=k)
        scales = np.sort(v2._sample_scales_v2(rng, k))[::-1]  # large first: small objects bite big ones
        painted = []
        for j, (c, s) in enumerate(zip(classes, scales)):
            angle = rng.uniform(0, 2 * np.pi)
            unit = v2._shape_v2(v2.V2_CLASSES[c], rng)
            if paint_polygons(img, labels, j + 1, unit, float(s), angle, rng, partial(v2._surface, rng, palette=_object_palette)):
                painted.append((j + 1, int(c) + 1, float(s)))
        scene = v1.finish_scene(img, labels, painted, rng)
        if scene is not None:
            return scene
