"""Built-in scene data: seeded procedural multi-object scenes with instance masks, written as COCO.

Why: the paper works on uncurated scene images (COCO, VOC). Tests, CI and the book need the same kind of
data without a download: several objects per image, of varied class, size and pose, partly occluded and
cut by the frame, on a cluttered background with "stuff" (blobs, lines, pebbles, surfaces) that is not an
object and is not in the masks.

- ``CLASSES``: 12 shape and glyph classes; each has its own look (colour family + texture pattern). So in
  v1 colour alone names the class (issue 13); ``version=2`` renders scenes v2 (``synthetic_v2``: one
  colour and texture distribution for all classes, the class is the shape); ``version=3`` renders scenes v3
  (``synthetic_v3``: v2's objects on a greyish ground that no object uses). v1 stays the default: every
  committed result was made with it, and it renders byte-identically.
- ``render_scene(seed, index, size, version=1)``: one image and its visible instance masks. Its content
  depends only on ``(seed, index)`` (a ``numpy`` generator seeded by ``SeedSequence([seed, index])``), so
  any image can be regenerated alone.
- ``write_scenes(out, num_images, seed, size, val_fraction, version=1)``: ``out/images/NNNNNN.jpg`` plus
  ``out/annotations.json`` (COCO, compressed RLE masks, an extra ``"split"`` key per image entry; the
  generator version in ``info.generator_version``).

Objects are painted in random order; a later object occludes earlier ones, so an instance mask holds only
its visible pixels. An instance whose visible area falls below ``min_visible_area`` is dropped from the
annotations (its few painted pixels stay in the image, like an unannotated scrap in COCO).
"""

from __future__ import annotations

import colorsys
import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

from coarsecrop.data.scene_paint import paint_polygons, place
from coarsecrop.io import TMP_MARK, write_text

GENERATOR_VERSION = 3  # the newest generator; bump when the rendering changes (data sets record theirs)
GENERATOR_VERSIONS = (1, 2, 3)  # 1 stays the default: results/cpu-full-v1 was made with it (cpu-full: 3)


@dataclass(frozen=True)
class ObjectClass:
    """How one class looks: shape, colour family (hue range in degrees, saturation, value) and texture."""

    name: str
    shape: str
    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]
    pattern: str  # solid | stripes | dots | checker | gradient | radial | grid


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("disc", "disc", (350, 372), (0.75, 0.95), (0.70, 0.95), "radial"),
    ObjectClass("ring", "ring", (205, 230), (0.70, 0.95), (0.60, 0.90), "stripes"),
    ObjectClass("square", "square", (95, 135), (0.60, 0.90), (0.45, 0.80), "checker"),
    ObjectClass("triangle", "triangle", (45, 58), (0.80, 1.00), (0.85, 1.00), "gradient"),
    ObjectClass("star", "star", (285, 315), (0.60, 0.90), (0.60, 0.90), "dots"),
    ObjectClass("cross", "cross", (175, 192), (0.70, 1.00), (0.70, 0.95), "solid"),
    ObjectClass("crescent", "crescent", (35, 55), (0.05, 0.20), (0.88, 1.00), "stripes"),
    ObjectClass("hexagon", "hexagon", (18, 32), (0.80, 1.00), (0.80, 1.00), "grid"),
    ObjectClass("heart", "heart", (325, 345), (0.35, 0.60), (0.85, 1.00), "gradient"),
    ObjectClass("arrow", "arrow", (255, 275), (0.55, 0.85), (0.45, 0.75), "checker"),
    ObjectClass("glyph_A", "glyph_A", (220, 240), (0.30, 0.60), (0.10, 0.25), "solid"),
    ObjectClass("glyph_S", "glyph_S", (80, 100), (0.90, 1.00), (0.70, 0.90), "dots"),
)

CATEGORIES: list[dict] = [
    {"id": i + 1, "name": c.name, "supercategory": "glyph" if c.shape.startswith("glyph") else "shape"}
    for i, c in enumerate(CLASSES)
]

MIN_OBJECTS, MAX_OBJECTS = 1, 6
OBJECT_COUNT_WEIGHTS = (0.10, 0.15, 0.20, 0.20, 0.20, 0.15)  # of 1..6 objects (before drops)
MIN_SCALE, MAX_SCALE = 0.05, 0.50  # object size = sqrt(area before occlusion and cropping) / image side


@dataclass
class RenderedScene:
    """One generated image and its annotations (visible instance masks, in paint order)."""

    image: np.ndarray  # uint8 [H, W, 3] RGB
    category_ids: list[int]  # [K], 1-based, ids of ``CATEGORIES``
    masks: list[np.ndarray]  # K x bool [H, W], visible pixels only
    scales: list[float]  # [K] sampled sqrt(area) / image side (before truncation and occlusion)


# --------------------------------------------------------------------------------------------- shapes
# A shape is a list of (polygon [n, 2] in unit coordinates, fill value): value 1 paints, value 0 cuts a hole.
# Unit coordinates span [-1, 1] on the larger axis; the renderer scales them to the object's area.


def shared_scenes_name(num_images: int, size: int, seed: int, version: int = 1) -> str:
    """The folder name of a built-in scene set that several runs share (runs/02_pretrain/_scenes/<name>);
    v1's names stay as they were, later versions end in ``-v<version>``."""
    suffix = "" if check_version(version) == 1 else f"-v{version}"
    return f"{num_images}x{size}px-seed{seed}{suffix}"


def _circle(radius: float = 1.0, cx: float = 0.0, cy: float = 0.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)


def _star(points: int, inner: float) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    return np.stack([radii * np.cos(t), radii * np.sin(t)], 1)


def _cross(arm: float) -> np.ndarray:
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
                     [-1, a], [-1, -a], [-a, -a]], dtype=np.float64)


def _heart(n: int = 60) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.abs(pts).max()


def _arrow(shaft: float, head: float) -> np.ndarray:
    return np.array([[-1, -shaft], [1 - head, -shaft], [1 - head, -1], [1, 0], [1 - head, 1],
                     [1 - head, shaft], [-1, shaft]], dtype=np.float64)


@lru_cache(maxsize=None)
def _glyph(letter: str) -> tuple[tuple[np.ndarray, int], ...]:
    """A thick Hershey letter as polygons (outer contours paint, holes cut), normalised to [-1, 1]."""
    canvas = np.zeros((160, 160), np.uint8)
    font = cv2.FONT_HERSHEY_DUPLEX
    (tw, th), _ = cv2.getTextSize(letter, font, 4.0, 16)
    cv2.putText(canvas, letter, ((160 - tw) // 2, (160 + th) // 2), font, 4.0, 255, 16, cv2.LINE_8)
    contours, hierarchy = cv2.findContours(canvas, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    centre = (pts.max(0) + pts.min(0)) / 2
    half = (pts.max(0) - pts.min(0)).max() / 2
    polys = []
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        poly = (contour.reshape(-1, 2).astype(np.float64) - centre) / half
        polys.append((poly, 1 if parent < 0 else 0))
    polys.sort(key=lambda pv: -pv[1])  # outer contours first, then the holes
    return tuple(polys)


def _shape(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """The unit polygons of one instance of a class, centred, the larger side of their box spanning [-1, 1]."""
    polys = _raw_shape(name, rng)
    pts = np.concatenate([p for p, v in polys if v])
    centre = (pts.max(0) + pts.min(0)) / 2
    half = (pts.max(0) - pts.min(0)).max() / 2
    return [((p - centre) / half, v) for p, v in polys]


def _raw_shape(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """The polygons of one instance of a class, with a little per-instance variation."""
    if name == "disc":
        return [(_circle(), 1)]
    if name == "ring":
        return [(_circle(), 1), (_circle(rng.uniform(0.45, 0.62)), 0)]
    if name == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64), 1)]
    if name == "triangle":
        return [(_regular(3) + rng.uniform(-0.08, 0.08, (3, 2)), 1)]
    if name == "star":
        return [(_star(5, rng.uniform(0.48, 0.56)), 1)]
    if name == "cross":
        return [(_cross(rng.uniform(0.34, 0.45)), 1)]
    if name == "crescent":
        return [(_circle(), 1), (_circle(0.8, cx=rng.uniform(0.55, 0.75)), 0)]
    if name == "hexagon":
        return [(_regular(6, phase=0.0), 1)]
    if name == "heart":
        return [(_heart(), 1)]
    if name == "arrow":
        return [(_arrow(rng.uniform(0.35, 0.5), rng.uniform(0.8, 1.0)), 1)]
    if name.startswith("glyph_"):
        return list(_glyph(name[len("glyph_"):]))
    raise ValueError(f"unknown shape {name!r}")


# ------------------------------------------------------------------------------------------ colours


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360) / 360, float(np.clip(s, 0, 1)),
                                        float(np.clip(v, 0, 1))), np.float32) * 255


def _class_colours(cls: ObjectClass, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Primary and secondary colour of one instance: same hue family, the second darker or lighter."""
    h = rng.uniform(*cls.hue)
    s = rng.uniform(*cls.sat)
    v = rng.uniform(*cls.val)
    c1 = _hsv(h, s, v)
    if v > 0.5:
        c2 = _hsv(h + rng.uniform(-8, 8), s * rng.uniform(0.5, 0.9), v * rng.uniform(0.35, 0.6))
    else:
        c2 = _hsv(h + rng.uniform(-8, 8), s * rng.uniform(0.4, 0.8), min(1.0, v + rng.uniform(0.3, 0.5)))
    return c1, c2


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A background / stuff colour: any hue, low saturation."""
    return _hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.45), rng.uniform(0.25, 0.85))


# ----------------------------------------------------------------------------------------- textures


def _texture(pattern: str, u: np.ndarray, v: np.ndarray, half: float, c1: np.ndarray, c2: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Colour [h, w, 3] of a pattern in the object's own frame (u, v in pixels from its centre)."""
    period = max(3.0, half * rng.uniform(0.25, 0.45))
    if pattern == "solid":
        t = np.zeros_like(u)
    elif pattern == "stripes":
        t = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif pattern == "dots":
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        t = (du * du + dv * dv < (0.3 * period) ** 2).astype(np.float32)
    elif pattern == "checker":
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif pattern == "gradient":
        t = np.clip(0.5 + u / (2 * half), 0, 1)
    elif pattern == "radial":
        t = np.clip(np.hypot(u + 0.35 * half, v + 0.35 * half) / (1.6 * half), 0, 1)
    elif pattern == "grid":
        lw = max(1.0, period * 0.18)
        t = ((np.mod(u, period) < lw) | (np.mod(v, period) < lw)).astype(np.float32)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    t = t[..., None]
    return c1 * (1 - t) + c2 * t


# -------------------------------------------------------------------------------------- background


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], [size, size] float32: a cells x cells grid upsampled bicubically."""
    small = rng.random((cells, cells), dtype=np.float32)
    field = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0, 1)


def _background(rng: np.random.Generator, size: int, colour=_muted_colour) -> np.ndarray:
    """Cluttered textured background [size, size, 3] float32: surfaces, smooth colour noise, grain; the
    surfaces' colours drawn by ``colour(rng)``."""
    x = (np.arange(size, dtype=np.float32) / size - 0.5)[None, :]  # [1, W]
    y = (np.arange(size, dtype=np.float32) / size - 0.5)[:, None]  # [H, 1]
    c1, c2 = colour(rng), colour(rng)
    mix = _smooth_field(rng, size, int(rng.integers(2, 6)))  # [H, W]
    img = c1 + (c2 - c1) * mix[..., None]
    if rng.random() < 0.6:  # a second surface (wall / floor / table edge) split by a soft line
        a = rng.uniform(0, 2 * np.pi)
        d = x * np.float32(np.cos(a)) + y * np.float32(np.sin(a)) - np.float32(rng.uniform(-0.3, 0.3))
        side = np.clip(d * (size / 3) + 0.5, 0, 1)[..., None]
        img += side * (colour(rng) + 30 * (mix[..., None] - 0.5) - img)
    a = rng.uniform(0, 2 * np.pi)  # lighting gradient
    light = 1 + np.float32(rng.uniform(0.1, 0.35)) * (x * np.float32(np.cos(a)) + y * np.float32(np.sin(a)))
    kind = rng.integers(3)
    if kind == 0:  # grain
        tex = np.float32(rng.uniform(4, 12)) * (_smooth_field(rng, size, size // 4) - 0.5)
    elif kind == 1:  # wood / fabric: faint warped stripes
        warp = _smooth_field(rng, size, 4)
        b = rng.uniform(0, np.pi)
        phase = (x * np.float32(np.cos(b)) + y * np.float32(np.sin(b))) * np.float32(rng.uniform(8, 30))
        tex = np.float32(rng.uniform(5, 14)) * np.sin(np.float32(2 * np.pi) * (phase + 2 * warp))
    else:  # mottled
        tex = np.float32(rng.uniform(8, 20)) * (_smooth_field(rng, size, 16) - 0.5)
    img *= light[..., None]
    img += tex[..., None]
    return img


def _stuff(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """Paint distractors that are not objects: amorphous blobs, pebbles, lines and scribbles."""
    for _ in range(int(rng.integers(1, 4))):  # amorphous blobs (puddles, foliage, stains)
        field = _smooth_field(rng, size, int(rng.integers(4, 9)))
        alpha = np.clip((field - np.float32(rng.uniform(0.72, 0.85))) * 12, 0, 1)
        colour = _muted_colour(rng)
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        if len(rows):
            win = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            img[win] += alpha[win][..., None] * (colour - img[win])
    for _ in range(int(rng.integers(2, 9))):  # pebbles: small irregular polygons in muted colours
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = size * rng.uniform(0.01, 0.05) * rng.uniform(0.6, 1.0, n)
        centre = rng.uniform(0, size, 2)
        pts = np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], 1)
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], _muted_colour(rng).tolist(),
                     cv2.LINE_AA, 4)
    for _ in range(int(rng.integers(2, 10))):  # lines and scribbles (cables, twigs, cracks)
        n = int(rng.integers(2, 7))
        start = rng.uniform(-0.1 * size, 1.1 * size, 2)
        steps = rng.normal(0, size * 0.15, (n - 1, 2))
        pts = np.concatenate([start[None], start + np.cumsum(steps, 0)])
        colour = _muted_colour(rng) * rng.uniform(0.4, 1.3)
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, np.clip(colour, 0, 255).tolist(),
                      int(rng.integers(1, max(2, size // 64) + 1)), cv2.LINE_AA, 4)


# ------------------------------------------------------------------------------------------ objects


def _sample_scales(rng: np.random.Generator, k: int) -> np.ndarray:
    """Object sizes (sqrt(area) / image side): one main object in [0.35, 0.5]; each other one small
    (log-uniform in [0.05, 0.2]) with probability 0.35, else medium to large (uniform in [0.2, 0.5]).
    Tuned so whole images are about a third object pixels, like VOC (the paper's Image-Crop: 36.4%)."""
    main = rng.uniform(0.35, MAX_SCALE)
    small = np.exp(rng.uniform(np.log(MIN_SCALE), np.log(0.2), k - 1))
    large = rng.uniform(0.2, MAX_SCALE, k - 1)
    rest = np.where(rng.random(k - 1) < 0.35, small, large)
    scales = np.concatenate([[main], rest])
    rng.shuffle(scales)
    return scales


def _paint_object(img: np.ndarray, labels: np.ndarray, k: int, cls: ObjectClass, scale: float,
                  rng: np.random.Generator) -> bool:
    """Paint object ``k`` into ``img`` and the label map; False when it falls outside the image.

    ``scale`` is sqrt(object area) / image side (the COCO notion of object size), so sparse shapes
    (glyphs, stars) get a larger extent than compact ones (squares, discs) at the same scale."""
    aspect = rng.uniform(0.75, 1.0) if cls.shape in ("disc", "square", "ring", "hexagon") else 1.0
    angle = rng.uniform(0, 2 * np.pi)
    unit = place(_shape(cls.shape, rng), 0.0, 0.0, 1.0, aspect, 0.0)

    def surface(u, v, half, under):
        return _texture(cls.pattern, u, v, half, *_class_colours(cls, rng), rng)

    return paint_polygons(img, labels, k, unit, scale, angle, rng, surface)


def min_visible_area(size: int) -> int:
    """Smallest visible area (pixels) an instance keeps; below it the instance is dropped."""
    return max(16, int(round(0.0008 * size * size)))


def check_version(version: int) -> int:
    """``version`` as an int when it names a generator (1: v1, the default, that of results/cpu-full-v1;
    2: scenes v2, ``coarsecrop.data.synthetic_v2``; 3: scenes v3, ``coarsecrop.data.synthetic_v3``), else
    ValueError."""
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or int(version) not in GENERATOR_VERSIONS:
        raise ValueError(f"scenes generator version must be one of {GENERATOR_VERSIONS}, got {version!r}")
    return int(version)


def categories(version: int = 1) -> list[dict]:
    """The COCO categories of the scenes of generator ``version`` (v3 has v2's)."""
    if check_version(version) == 1:
        return CATEGORIES
    from coarsecrop.data.synthetic_v2 import V2_CATEGORIES

    return V2_CATEGORIES


def finish_scene(img: np.ndarray, labels: np.ndarray, painted: list[tuple[int, int, float]],
                 rng: np.random.Generator) -> RenderedScene | None:
    """Sensor noise, rounding to uint8, and the visible masks of the painted objects (``(label, category id,
    scale)`` each) that keep ``min_visible_area``; None when none does."""
    size = img.shape[0]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 5.0))  # sensor
    image = (np.clip(img, 0, 255, out=img) + 0.5).astype(np.uint8)  # rounded
    ids, masks, kept_scales = [], [], []
    for j, cat, s in painted:
        m = labels == j
        if np.count_nonzero(m) >= min_visible_area(size):
            ids.append(cat)
            masks.append(m)
            kept_scales.append(s)
    return RenderedScene(image, ids, masks, kept_scales) if ids else None


def render_scene(seed: int, index: int, size: int = 256, version: int = 1) -> RenderedScene:
    """Render image ``index`` of the data set ``seed``; depends only on (seed, index, size, version).
    ``version`` 2 renders scenes v2 (``coarsecrop.data.synthetic_v2``: the class is the shape), 3 scenes v3
    (``coarsecrop.data.synthetic_v3``: v2's objects on a ground that can be told apart from them)."""
    if check_version(version) == 2:
        from coarsecrop.data.synthetic_v2 import render_scene_v2

        return render_scene_v2(seed, index, size)
    if version == 3:
        from coarsecrop.data.synthetic_v3 import render_scene_v3

        return render_scene_v3(seed, index, size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    while True:  # retry (same stream, so still deterministic) in the rare case no instance survives
        img = _background(rng, size)
        _stuff(img, rng, size)
        labels = np.zeros((size, size), np.uint8)
        k = int(rng.choice(np.arange(MIN_OBJECTS, MAX_OBJECTS + 1), p=OBJECT_COUNT_WEIGHTS))
        classes = rng.integers(len(CLASSES), size=k)
        scales = _sample_scales(rng, k)
        painted = []
        for j, (c, s) in enumerate(zip(classes, scales)):
            if _paint_object(img, labels, j + 1, CLASSES[c], float(s), rng):
                painted.append((j + 1, int(c) + 1, float(s)))
        scene = finish_scene(img, labels, painted, rng)
        if scene is not None:
            return scene


# --------------------------------------------------------------------------------------------- COCO


def _is_val(index: int, val_fraction: float) -> bool:
    """Every 1/val_fraction-th image is val: exact proportion, independent of the data set length."""
    return math.floor((index + 1) * val_fraction + 1e-9) > math.floor(index * val_fraction + 1e-9)


def _coco_annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (int(v) for v in mask_util.toBbox(rle))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
            "area": int(mask_util.area(rle)), "iscrowd": 0,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}}


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    # 4:4:4: keep thin colour detail. Not atomic: annotations.json, written last and atomically, marks a
    # complete folder, and an incomplete one is written again.
    Image.fromarray(image).save(path, format="JPEG", quality=95, subsampling=0)


def _write_scene(out: Path, seed: int, index: int, size: int, version: int) -> list[dict]:
    """Render scene ``index``, save its JPEG under ``out``, return the annotation of each visible instance
    (id 0, numbered by the caller): one scene's work, in a worker process when write_scenes has workers."""
    scene = render_scene(seed, index, size, version)
    _save_jpeg(scene.image, out / f"images/{index + 1:06d}.jpg")
    return [_coco_annotation(0, index + 1, cat, mask) for cat, mask in zip(scene.category_ids, scene.masks)]


MAX_SCENE_SIZE = 4096  # px; larger scenes take minutes each and gigabytes of masks


def _check_scenes_folder(out: Path, num_images: int, info: dict) -> None:
    """Refuse ``out`` unless it is new, empty, or holds only the scenes this ``write_scenes`` call writes
    (``info``): ``images/NNNNNN.jpg`` of ids 1..num_images (an interrupted call, written again) and an
    annotations.json with the same ``info`` (the same call, rewritten byte for byte). Hidden files and
    temporaries are ignored. Anything else would be overwritten or left stale in the data set: ValueError."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; give the scenes a new or empty folder")
    if not out.exists():
        return
    expected = {f"{i:06d}.jpg" for i in range(1, num_images + 1)}
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith(".") or TMP_MARK in entry.name:
            continue
        if entry.name == "images" and entry.is_dir():
            foreign += [f"images/{f.name}" for f in sorted(entry.iterdir())
                        if not (f.name.startswith(".") or (f.name in expected and f.is_file()))]
        elif entry.name == "annotations.json" and entry.is_file():
            try:
                written = json.loads(entry.read_text(encoding="utf-8")).get("info")
            except (OSError, ValueError, AttributeError):
                written = None
            if written != json.loads(json.dumps(info)):
                foreign.append("annotations.json (of other scenes)")
        else:
            foreign.append(entry.name)
    if foreign:
        raise ValueError(f"{out}: holds files that are not these {num_images} scenes ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}); writing here would overwrite them or leave them "
                         "in the data set: choose a new or empty folder, or remove them")


def write_scenes(out: str | Path, num_images: int, seed: int, size: int = 256, val_fraction: float = 0.2,
                 progress: bool = True, version: int = 1, workers: int = 1) -> Path:
    """Write ``num_images`` scenes as a COCO data set under ``out``; return the annotations.json path.

    ``out/images/NNNNNN.jpg`` (JPEG quality 95, no chroma subsampling; NNNNNN = image id = index + 1) and
    ``out/annotations.json`` (images with ``"split": "train" | "val"``, annotations with compressed RLE
    masks as str, categories).
    ``version``: the generator (1, the default; 2 or 3: scenes v2, v3), recorded as ``info.generator_version``.
    Same arguments -> byte-identical annotations and identical pixels, whatever ``workers`` (processes that
    render and encode scenes side by side; each scene depends only on (seed, index); they are started with
    "spawn", so a script that calls this needs Python's ``if __name__ == "__main__":`` guard). The json is
    written last, through a temporary file and ``os.replace``, so a folder holding annotations.json is complete.
    ``out`` must be new, empty, or hold only this call's scenes (``_check_scenes_folder``: a finished or
    interrupted call with the same arguments is written again); ``size`` is 32 .. MAX_SCENE_SIZE pixels.
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 32 <= int(size) <= MAX_SCENE_SIZE:
        raise ValueError(f"size must be 32 .. {MAX_SCENE_SIZE} pixels, got {size}")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    version = check_version(version)
    info = {"description": "coarsecrop synthetic scenes", "generator_version": version,
            "seed": int(seed), "size": int(size), "num_images": int(num_images),
            "val_fraction": float(val_fraction)}
    out = Path(out)
    _check_scenes_folder(out, int(num_images), info)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    job = functools.partial(_write_scene, out, int(seed), size=int(size), version=version)
    indices = range(int(num_images))
    with contextlib.ExitStack() as stack:
        if int(workers) > 1:  # spawn: no forked copy of a parent's torch threads or CUDA state
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                int(workers), mp_context=multiprocessing.get_context("spawn")))
            scenes = pool.map(job, indices, chunksize=16)  # in index order
        else:
            scenes = map(job, indices)
        for index, instances in zip(indices, tqdm(scenes, total=len(indices), desc="scenes", unit="img",
                                                  disable=not progress)):
            images.append({"id": index + 1, "file_name": f"images/{index + 1:06d}.jpg", "width": size,
                           "height": size, "split": "val" if _is_val(index, val_fraction) else "train"})
            for annotation in instances:
                annotations.append({**annotation, "id": len(annotations) + 1})
    dataset = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(version),
    }
    path = out / "annotations.json"
    return write_text(path, json.dumps(dataset, separators=(",", ":")))


def scenes_or_builtin(scenes: str | Path | None, folder: str | Path, num_images: int, seed: int,
                      size: int, version: int = 1, workers: int = 1) -> Path:
    """The data set a notebook works on: ``scenes`` when given (it must exist), else the built-in scenes of
    generator ``version``, written into ``folder`` once by ``workers`` processes (annotations.json is written
    last, so its presence marks a finished set; a finished set of other parameters, generator version, number,
    seed or size, is refused, not reused)."""
    if scenes:
        path = Path(scenes).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"scenes {str(scenes)!r}: no such file or folder (give a COCO json, a VOC "
                                    "root, an image folder, or None for the built-in scenes)")
        return path
    version = check_version(version)
    folder = Path(folder)
    ann = folder / "annotations.json"
    if not ann.is_file():
        write_scenes(folder, num_images=num_images, seed=seed, size=size, progress=False, version=version,
                     workers=workers)
    else:
        info = {"generator_version": 1, **json.loads(ann.read_text(encoding="utf-8")).get("info", {})}  # v1: unsaid
        wanted = {"generator_version": version, "num_images": int(num_images), "seed": int(seed), "size": int(size)}
        differ = [f"{k} {info.get(k)} there, {v} now" for k, v in wanted.items() if info.get(k) != v]
        if differ:  # a run folder reused with other scenes parameters: its crops would be of the old scenes
            raise ValueError(f"{folder}: holds other built-in scenes ({'; '.join(differ)}); remove the folder or "
                             "write the scenes elsewhere (another out folder)")
    return folder
