"""Every cropping strategy of the paper behind one signature (CONTRACT, other modules rely on it):

    strategy = make_strategy(name, device="cpu", **params)     # unknown name/param -> ValueError listing valid ones
    results = strategy(images, scenes)                          # one call per batch
      images: list of uint8 tensors [3, H, W] (RGB, CPU), one per scene, sizes may differ
      scenes: list of coarsecrop.data.scenes.Scene (annotations used only by gt, gtpad, poor)
      results: list of (boxes float32 [M, 4] xyxy pixels, scores float32 [M]), M <= n
    strategy.name, strategy.params (dict of the effective parameters, JSON-able),
    strategy.needs_annotations (bool)

STRATEGIES maps each name to its class; names: image, gt, gtpad, grid, poor, random, selective_search,
edgebox, ours, plus the documented coarse variant(s) of ours: ours_coarse (centre-surround contrast,
recommended) and ours_zscore (per-shape standardised mean). ``strategy_parameters(name)`` gives a
strategy's parameters and defaults.

Common rules
- Boxes are in pixels of the image tensor handed in, clipped, w, h >= 1 (``coarsecrop.boxes.is_valid``),
  also for images smaller than the smallest anchor or 1-3 px thin. GT boxes and masks are rescaled to
  the image tensor when the scene's annotated size differs (an image decoded smaller than its file).
- Every strategy returns at most ``n`` boxes (default 5, as the paper). Fewer only when the image cannot
  give more: ``image`` gives 1 box, ``grid`` 5, ``gt`` / ``gtpad`` one per GT object (0 for a scene
  without objects), ``selective_search`` / ``edgebox`` what the method proposes (at least the whole
  image), ``random`` / ``ours`` / variants fewer only when the image has fewer anchors left after
  suppression (images of a few pixels, where all anchors clip to the same box).
- Scores: the strategy's own ranking score, highest first (box mean objectness for ours, EdgeBox score,
  1 - rank / K for selective search, the crop's GT objectness for poor); 1.0 for strategies that do
  not rank (image, gt, gtpad, grid, random).
- Stochastic strategies (poor, random, selective_search) seed a private generator per image from their
  ``seed`` parameter and the scene id, so results never depend on batch composition or order, nor on
  the global RNG state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import zlib
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from coarsecrop.boxes import clip_boxes
from coarsecrop.crops.anchors import FEATURE_STRIDE, RATIOS, SIZES, feature_size, make_anchors
from coarsecrop.crops.objectness import objectness_maps
from coarsecrop.crops.quality import crop_objectness
from coarsecrop.crops.scoring import box_means, box_sums, summed_area_table
from coarsecrop.models.backbones import ARCHS, build_backbone, checkpoint_architecture, is_backbone_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- base


class Strategy:
    """One cropping strategy. Subclasses set ``name``, ``defaults`` and implement ``crop`` (one image)
    or ``crop_batch`` (a batch)."""

    name = ""
    needs_annotations = False
    defaults: dict = {"n": 5}

    def __init__(self, device: str | torch.device = "cpu", **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"strategy {self.name!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.defaults))}"
            )
        merged = {**self.defaults, **params}
        self.n = _positive_int(self.name, "n", merged["n"])
        self.device = torch.device(device)
        self.params = {k: _jsonable(v) for k, v in sorted(merged.items())}
        self.check_params(self.params)

    def check_params(self, params: dict) -> None:
        """Validate the effective parameters (raise ValueError naming the bad one)."""

    def __call__(self, images: list[torch.Tensor], scenes: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(images) != len(scenes):
            raise ValueError(f"strategy {self.name!r}: {len(images)} images but {len(scenes)} scenes")
        for image in images:
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"strategy {self.name!r}: images must be uint8 [3, H, W] tensors, "
                    f"got {image.dtype} {tuple(image.shape)}"
                )
        if self.needs_annotations:
            for scene in scenes:
                if not getattr(scene, "annotated", True):
                    raise ValueError(
                        f"strategy {self.name!r} needs annotations, but scene {scene.id} ({scene.file}) has none; "
                        "use an unsupervised strategy (image, grid, random, selective_search, edgebox, ours ...)"
                    )
        results = self.crop_batch(images, scenes)
        return [_finish(boxes, scores, image, self.n) for (boxes, scores), image in zip(results, images)]

    def crop_batch(self, images, scenes):
        return [self.crop(image, scene) for image, scene in zip(images, scenes)]

    def crop(self, image: torch.Tensor, scene) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _finish(boxes, scores, image, n):
    """The contract's output: float32 CPU boxes clipped to the image, at most n, scores float32."""
    H, W = image.shape[-2:]
    boxes = clip_boxes(torch.as_tensor(boxes).detach().cpu().reshape(-1, 4), W, H)[:n]
    scores = torch.as_tensor(scores).detach().cpu().to(torch.float32).reshape(-1)[:n]
    return boxes, scores.clone()


def _ones(m: int) -> torch.Tensor:
    return torch.ones(m, dtype=torch.float32)


def image_seed(seed: int, scene_id) -> int:
    """A 31-bit seed from (strategy seed, scene id): stable across processes and platforms."""
    return zlib.crc32(f"{int(seed)}/{scene_id}".encode()) & 0x7FFFFFFF


def _generator(seed: int, scene_id) -> torch.Generator:
    return torch.Generator().manual_seed(image_seed(seed, scene_id))


def _positive_int(strategy: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"strategy {strategy!r}: {key} must be a positive integer, got {value!r}")
    return int(value)


def _check_range(strategy: str, key: str, value, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"strategy {strategy!r}: {key} must be a number in [{lo}, {hi}], got {value!r}")


def _check_numbers(strategy: str, key: str, values) -> None:
    if not isinstance(values, list) or not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(f"strategy {strategy!r}: {key} must be a non-empty list of positive numbers, got {values!r}")


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------- GT helpers


def gt_boxes(scene, height: int, width: int) -> torch.Tensor:
    """The scene's GT boxes in the pixel frame of an H x W image: float32 [K, 4], clipped."""
    boxes = torch.as_tensor(scene.boxes, dtype=torch.float32).reshape(-1, 4)
    sx, sy = _annotation_scale(scene, height, width)
    if (sx, sy) != (1.0, 1.0):
        boxes = boxes * torch.tensor([sx, sy, sx, sy])
    return clip_boxes(boxes, width, height)


def object_mask(scene, height: int, width: int) -> torch.Tensor:
    """Union of the scene's GT instance masks in the frame of an H x W image: bool [H, W]."""
    mask = torch.as_tensor(np.asarray(scene.object_mask(), dtype=bool))
    if tuple(mask.shape) != (height, width):
        mask = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0] > 0.5
    return mask


def _annotation_scale(scene, height: int, width: int) -> tuple[float, float]:
    if not scene.width or not scene.height:
        return 1.0, 1.0
    return width / scene.width, height / scene.height


def _largest_first(boxes: torch.Tensor) -> torch.Tensor:
    """Indices of boxes by decreasing area (stable: ties keep annotation order)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return torch.sort(-area, stable=True).indices


# --------------------------------------------------------------------------------------------- simple


class ImageCrop(Strategy):
    """Image-Crop (Fig. 1a, s0): the whole image is the only crop."""

    name = "image"

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        return torch.tensor([[0.0, 0.0, W, H]]), _ones(1)


class GTCrop(Strategy):
    """GT-Crop (Fig. 1b): every GT box is a crop. ``n`` caps the number, keeping the largest boxes
    (ties in annotation order); a scene without objects gives no crop."""

    name = "gt"
    needs_annotations = True

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        boxes = gt_boxes(scene, H, W)
        boxes = boxes[_largest_first(boxes)[: self.n]]
        return boxes, _ones(len(boxes))


class GTPadCrop(Strategy):
    """GTPad-Crop (Table 2, s1): each GT box padded by ``pad`` x its width (height) on the left and
    right (top and bottom), then clipped. Same selection as ``gt`` (the n largest GT boxes).

    The paper picked its best padding ratio and reports 48.2 % objectness without giving the ratio.
    Default 0.135: on the built-in 256-px scenes (100 images, seed 0) it gives mean objectness 0.481
    (0.1: 0.51, 0.25: 0.41, 0.5: 0.32; the GT boxes alone: 0.65, since shapes do not fill their
    boxes and occluders cut them)."""

    name = "gtpad"
    needs_annotations = True
    defaults = {"n": 5, "pad": 0.135}

    def check_params(self, params):
        _check_range(self.name, "pad", params["pad"], 0.0, 100.0)

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        boxes = gt_boxes(scene, H, W)
        boxes = boxes[_largest_first(boxes)[: self.n]]
        return pad_boxes(boxes, self.params["pad"], W, H), _ones(len(boxes))


def pad_boxes(boxes: torch.Tensor, ratio: float, width: int, height: int) -> torch.Tensor:
    """Grow each box by ratio x its width (height) on each side, clip to the image."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    grown = boxes + ratio * torch.stack([-w, -h, w, h], dim=1)
    return clip_boxes(grown, width, height)


class GridCrop(Strategy):
    """Grid-Crop (Fig. 1c, s2): two rows of equal height; the top row split into 3 equal crops, the
    bottom row into 2 -- 5 crops in reading order. ``n`` < 5 keeps the first n."""

    name = "grid"

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        return grid_boxes(H, W), _ones(5)


def grid_boxes(height: int, width: int) -> torch.Tensor:
    """The 5 grid crops of an H x W image: float32 [5, 4]."""
    top = [[k * width / 3, 0.0, (k + 1) * width / 3, height / 2] for k in range(3)]
    bottom = [[k * width / 2, height / 2, (k + 1) * width / 2, height] for k in range(2)]
    return clip_boxes(torch.tensor(top + bottom, dtype=torch.float64), width, height)


class PoorCrop(Strategy):
    """Poor-Crop (Table 2): crops of low objectness, about 20 %, drawn with the GT masks.

    Draws ``candidates`` random boxes per image (side uniform in [min_side, max_side] x the shorter
    image side, aspect ratio log-uniform in [1/2, 2], position uniform), measures each one's
    objectness against the union of GT masks, and keeps the n closest to ``target`` while
    suppressing near-duplicates (IoU > 0.5), so the crops spread over the image. Scores are the crops'
    objectness. Seeded per image from ``seed`` and the scene id. An image whose objects cover (almost)
    nothing or everything cannot reach the target: its crops are the closest available."""

    name = "poor"
    needs_annotations = True
    defaults = {"n": 5, "seed": 0, "target": 0.2, "candidates": 512, "min_side": 0.2, "max_side": 0.6}

    def check_params(self, params):
        _check_range(self.name, "target", params["target"], 0.0, 1.0)
        _positive_int(self.name, "candidates", params["candidates"])
        _check_range(self.name, "min_side", params["min_side"], 0.0, 1.0)
        _check_range(self.name, "max_side", params["max_side"], params["min_side"], 1.0)
        _check_int(self.name, "seed", params["seed"])

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        p = self.params
        g = _generator(p["seed"], scene.id)
        k = p["candidates"]
        u = torch.rand(k, generator=g, dtype=torch.float64)
        side = min(H, W) * (p["min_side"] + (p["max_side"] - p["min_side"]) * u)
        aspect = torch.exp((torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1) * math.log(2))  # h / w
        bw = (side / aspect.sqrt()).clamp(1, W)
        bh = (side * aspect.sqrt()).clamp(1, H)
        x1 = torch.rand(k, generator=g, dtype=torch.float64) * (W - bw)
        y1 = torch.rand(k, generator=g, dtype=torch.float64) * (H - bh)
        boxes = clip_boxes(torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1), W, H)
        objectness = crop_objectness(boxes, object_mask(scene, H, W))
        closeness = -(objectness.double() - p["target"]).abs()  # higher is closer to the target
        keep = torchvision.ops.nms(boxes, closeness.float(), 0.5)[: self.n]
        return boxes[keep], objectness[keep]


def _check_int(strategy: str, key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"strategy {strategy!r}: {key} must be an integer, got {value!r}")


# --------------------------------------------------------------------------------------------- anchors


def phi_input_size(height: int, width: int, input_size: int | None) -> tuple[int, int]:
    """Size phi sees: the image itself, or resized so that its shorter side is ``input_size``."""
    if not input_size:
        return height, width
    scale = input_size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _check_anchor_params(strategy: str, params: dict) -> None:
    _check_numbers(strategy, "sizes", params["sizes"])
    _check_numbers(strategy, "ratios", params["ratios"])
    if params["input_size"] is not None:
        _positive_int(strategy, "input_size", params["input_size"])


class RandomCrop(Strategy):
    """Random crops (the paper's s4): n distinct boxes drawn uniformly from the same anchor set as
    ``ours`` (same sizes, ratios, feature stride 32 and input_size), with no objectness filtering.
    Comparing it with ``ours`` therefore isolates the filtering stage. Seeded per image."""

    name = "random"
    defaults = {"n": 5, "seed": 0, "sizes": list(SIZES), "ratios": list(RATIOS), "input_size": None}

    def check_params(self, params):
        _check_anchor_params(self.name, params)
        _check_int(self.name, "seed", params["seed"])

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        h, w = feature_size(*phi_input_size(H, W, self.params["input_size"]), FEATURE_STRIDE)
        anchors, _ = make_anchors(H, W, h, w, self.params["sizes"], self.params["ratios"])
        pick = torch.randperm(len(anchors), generator=_generator(self.params["seed"], scene.id))[: self.n]
        return anchors[pick], _ones(len(pick))


# --------------------------------------------------------------------------------------------- OpenCV


def _bgr(image: torch.Tensor) -> np.ndarray:
    """uint8 [3, H, W] RGB tensor -> contiguous uint8 [H, W, 3] BGR array for OpenCV."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy()[:, :, ::-1])


def _whole_image(H: int, W: int):
    return torch.tensor([[0.0, 0.0, W, H]]), _ones(1)


_LIBC = None


def _seed_libc_rand(seed: int) -> None:
    """OpenCV's selective search ranks regions with C ``rand()``; seed it so results are reproducible."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c") or ctypes.util.find_library("msvcrt")
        _LIBC = ctypes.CDLL(name) if name else False
    if _LIBC:
        _LIBC.srand(ctypes.c_uint(seed))


class SelectiveSearch(Strategy):
    """Selective search (Uijlings et al.) in OpenCV contrib's fast mode; the top n proposals (Sec. 5.2).

    "Top" is OpenCV's own output order, which is what ``rects[:n]`` gives every OpenCV user: OpenCV
    ranks each region by ``rand() * hierarchy level`` (level 1 = an initial graph segment; it notes
    this inverts the paper's order), sorts ascending and drops duplicate rectangles, so the first
    proposals are mostly small, low-level regions with a random mix of merged ones. The C ``rand()``
    is seeded per image (``seed`` and the scene id), so the order is reproducible (single-threaded
    use per process). Proposals with a side under ``min_side`` x the shorter image side (tiny
    superpixel fragments) go behind the others, used only when fewer than n larger ones exist; an
    image with no proposal at all gets the whole image. Fewer than n boxes only when OpenCV proposes
    fewer distinct rectangles. Scores are 1 - rank / K in OpenCV's order (K proposals)."""

    name = "selective_search"
    defaults = {"n": 5, "seed": 0, "min_side": 0.05, "base_k": 150, "inc_k": 150, "sigma": 0.8}

    def check_params(self, params):
        _check_int(self.name, "seed", params["seed"])
        _check_range(self.name, "min_side", params["min_side"], 0.0, 1.0)
        _positive_int(self.name, "base_k", params["base_k"])
        _positive_int(self.name, "inc_k", params["inc_k"])
        _check_range(self.name, "sigma", params["sigma"], 0.0, 100.0)

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        p = self.params
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(_bgr(image))
        ss.switchToSelectiveSearchFast(p["base_k"], p["inc_k"], float(p["sigma"]))
        _seed_libc_rand(image_seed(p["seed"], scene.id))
        rects = np.asarray(ss.process(), dtype=np.float64).reshape(-1, 4)  # [K, 4] x y w h, OpenCV order
        if len(rects) == 0:
            return _whole_image(H, W)
        scores = 1.0 - np.arange(len(rects)) / len(rects)
        big = np.minimum(rects[:, 2], rects[:, 3]) >= max(1.0, p["min_side"] * min(H, W))
        order = np.concatenate([np.flatnonzero(big), np.flatnonzero(~big)])  # small ones only to fill up n
        rects, scores = rects[order], scores[order]
        boxes = torch.from_numpy(rects[: self.n]).clone()
        boxes[:, 2:] += boxes[:, :2]
        return boxes, torch.from_numpy(scores[: self.n])


class EdgeBox(Strategy):
    """EdgeBoxes (Zitnick & Dollar) from OpenCV contrib; the n best-scored boxes (Sec. 5.2).

    EdgeBoxes normally runs on the structured-forest edge map (``model.yml.gz``), which cannot be
    downloaded here. Instead ``edge_maps`` computes the edges in code: Gaussian smoothing (sigma
    ``blur``) of the image in Lab, Sobel gradients per channel, the strongest channel per pixel,
    magnitude divided by its 99th percentile and clipped to [0, 1] (float32), orientation =
    atan2(gy, gx) mod pi (the edge normal, the convention EdgeBoxes expects), thinned by non-maximum
    suppression along the gradient. Difference from structured edges: these respond to every
    intensity / colour step -- texture and background clutter included -- where the learned edges
    fire mostly on object boundaries, so boxes enclosing textured stuff score higher than they would
    with the real model. OpenCV's defaults otherwise (alpha 0.65, beta 0.75, min_score 0.01); the
    minimum box area (``min_box_area`` px, OpenCV's 1000) is capped at 10 % of the image. Fewer than
    n boxes when EdgeBoxes finds fewer (few edges, e.g. flat or noise-only images); an image with no
    proposal, or under 8 px on a side, gets the whole image."""

    name = "edgebox"
    defaults = {"n": 5, "alpha": 0.65, "beta": 0.75, "min_score": 0.01, "min_box_area": 1000, "blur": 1.0}

    def check_params(self, params):
        _check_range(self.name, "alpha", params["alpha"], 0.0, 1.0)
        _check_range(self.name, "beta", params["beta"], 0.0, 1.0)
        _check_range(self.name, "min_score", params["min_score"], 0.0, 1e9)
        _check_range(self.name, "min_box_area", params["min_box_area"], 0.0, 1e12)
        _check_range(self.name, "blur", params["blur"], 0.0, 100.0)

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        p = self.params
        if min(H, W) < 8:  # EdgeBoxes ignores a 1-px border and needs room for a box
            return _whole_image(H, W)
        edges, orientation = edge_maps(image, p["blur"])
        eb = cv2.ximgproc.createEdgeBoxes(
            alpha=float(p["alpha"]), beta=float(p["beta"]), minScore=float(p["min_score"]),
            maxBoxes=self.n, minBoxArea=float(min(p["min_box_area"], 0.1 * H * W)),
        )
        out = eb.getBoundingBoxes(edges, orientation)
        rects, scores = (out if isinstance(out, tuple) else (out, None))
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        if len(rects) == 0:
            return _whole_image(H, W)
        if scores is None:  # older OpenCV returns boxes only, best first
            scores = 1.0 - np.arange(len(rects)) / len(rects)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")[: self.n]
        boxes = torch.from_numpy(rects[order]).clone()
        boxes[:, 2:] += boxes[:, :2]
        return boxes, torch.from_numpy(scores[order])


def edge_maps(image: torch.Tensor, blur: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Edge magnitude in [0, 1] and orientation in [0, pi), both float32 [H, W], thinned by NMS."""
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab) / np.array([100.0, 128.0, 128.0], np.float32)  # comparable ranges
    if blur > 0:
        lab = cv2.GaussianBlur(lab, (0, 0), blur)
    gx = np.stack([cv2.Sobel(lab[:, :, c], cv2.CV_32F, 1, 0, ksize=3) for c in range(3)])  # [3, H, W]
    gy = np.stack([cv2.Sobel(lab[:, :, c], cv2.CV_32F, 0, 1, ksize=3) for c in range(3)])
    mag = np.hypot(gx, gy)
    best = mag.argmax(axis=0)[None]  # strongest channel per pixel
    gx = np.take_along_axis(gx, best, 0)[0]
    gy = np.take_along_axis(gy, best, 0)[0]
    mag = np.take_along_axis(mag, best, 0)[0]
    scale = np.percentile(mag, 99) if mag.any() else 1.0
    mag = np.clip(mag / max(scale, 1e-12), 0, 1).astype(np.float32)
    orientation = np.mod(np.arctan2(gy, gx), np.pi).astype(np.float32)
    return thin_edges(mag, orientation), orientation


def thin_edges(mag: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: keep a pixel only if it is >= both neighbours along its gradient
    direction (quantised to 0 / 45 / 90 / 135 degrees)."""
    padded = np.pad(mag, 1)
    H, W = mag.shape
    sector = (np.round(orientation / (np.pi / 4)).astype(int)) % 4  # 0: x, 1: diagonal, 2: y, 3: anti-diagonal
    steps = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}  # (dy, dx) along the gradient
    keep = np.zeros_like(mag, dtype=bool)
    for s, (dy, dx) in steps.items():
        fwd = padded[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
        bwd = padded[1 - dy : 1 - dy + H, 1 - dx : 1 - dx + W]
        keep |= (sector == s) & (mag >= fwd) & (mag >= bwd)
    return np.where(keep, mag, 0).astype(np.float32)


# --------------------------------------------------------------------------------------------- ours


class OurCrop(Strategy):
    """Our-Crop, Sec. 3.3 literally: phi -> SCDA objectness map -> 12 anchors per feature location ->
    mean objectness per anchor (summed-area table) -> torchvision NMS -> the top n.

    phi: a torchvision ResNet trunk (``backbone``; None: the checkpoint's architecture, else
    resnet50), random init from ``seed`` (the paper's s5) or ``checkpoint``; ImageNet mean / std input
    normalisation; eval mode (BatchNorm uses its running statistics, so every image is processed
    independently of its batch). ``input_size`` resizes the
    shorter side before phi; the map is still upsampled to, and the anchors laid out on, the original
    image (stride = H / h in original pixels). Images of equal size share one forward pass.
    channels_last on every device (on CPU oneDNN runs it ~1.5x faster, same results alone or in a
    batch); bf16 autocast on CUDA, float32 elsewhere.

    NMS IoU default 0.5 (the paper gives none). Anchors one stride apart overlap with IoU
    (s - 32) / (s + 32) for size s: 0.33 at 64 px, 0.6 at 128, 0.78 at 256. At 0.7 (the RPN value)
    shifted copies of the large anchors survive NMS as near-duplicates; at 0.3 every anchor of 64 px
    and up suppresses its neighbours and the 5 crops must come from far-apart places. 0.5 keeps
    near-duplicates out while allowing crops of different sizes around one region, the middle of the
    range detection code uses. With the mean score, the chosen crops are nevertheless mostly the
    smallest anchors (see the variants below, and the size summary in the book).

    ``objectness_maps(images)`` returns the maps for plotting."""

    name = "ours"
    defaults = {
        "n": 5, "backbone": "resnet50", "checkpoint": None, "seed": 0,
        "sizes": list(SIZES), "ratios": list(RATIOS), "nms_iou": 0.5, "input_size": None,
    }

    def __init__(self, device="cpu", **params):
        super().__init__(device, **params)
        self._phi = None

    def check_params(self, params):
        if params["checkpoint"] is not None:
            params["checkpoint"] = str(params["checkpoint"])
            if not Path(params["checkpoint"]).is_file():
                raise ValueError(f"strategy {self.name!r}: checkpoint {params['checkpoint']} does not exist")
        if params["backbone"] is None:  # the architecture of the checkpoint, else the paper's ResNet-50
            params["backbone"] = checkpoint_architecture(params["checkpoint"]) if params["checkpoint"] else "resnet50"
        if not is_backbone_name(params["backbone"]):
            raise ValueError(
                f"strategy {self.name!r}: unknown backbone {params['backbone']!r}; valid: {', '.join(ARCHS)} "
                "or a narrow ResNet such as resnet10_w16"
            )
        _check_int(self.name, "seed", params["seed"])
        _check_anchor_params(self.name, params)
        _check_range(self.name, "nms_iou", params["nms_iou"], 0.0, 1.0)

    # phi ------------------------------------------------------------------------------------------
    @property
    def phi(self) -> torch.nn.Module:
        """The feature extractor, built on first use (tests may assign any module [B,3,H,W] -> [B,d,h,w])."""
        if self._phi is None:
            p = self.params
            model = build_backbone(p["backbone"], p["checkpoint"], p["seed"]).to(self.device)
            self._phi = model.to(memory_format=torch.channels_last)
        return self._phi

    @phi.setter
    def phi(self, module: torch.nn.Module) -> None:
        self._phi = module

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> phi's last feature map [B, d, h, w] (float)."""
        x = batch.to(self.device, non_blocking=True).float().div_(255)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        size = phi_input_size(x.shape[-2], x.shape[-1], self.params["input_size"])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.phi(x).float()
        return self.phi(x)

    def maps(self, batch: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 [B, 3, H, W] -> (objectness maps float32 [B, H, W], feature size (h, w))."""
        feats = self.features(batch)
        return objectness_maps(feats, batch.shape[-2], batch.shape[-1]), tuple(feats.shape[-2:])

    def objectness_maps(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The objectness map of each image: list of float32 [H, W] CPU tensors in [0, 1]."""
        out = [None] * len(images)
        for idx in _same_size_groups(images):
            maps, _ = self.maps(torch.stack([images[i] for i in idx]))
            for b, i in enumerate(idx):
                out[i] = maps[b].cpu()
        return out

    # crops ----------------------------------------------------------------------------------------
    def crop_batch(self, images, scenes):
        results = [None] * len(images)
        for idx in _same_size_groups(images):
            batch = torch.stack([images[i] for i in idx])  # [B, 3, H, W]
            H, W = batch.shape[-2:]
            maps, (h, w) = self.maps(batch)  # [B, H, W]
            table = summed_area_table(maps)  # [B, H + 1, W + 1] float64 (on the CPU for MPS)
            anchors, shape_index = make_anchors(H, W, h, w, self.params["sizes"], self.params["ratios"], table.device)
            scores = box_means(table, anchors)  # [B, N]
            picks = self.select_batch(anchors, shape_index, scores, table)
            for b, i in enumerate(idx):
                keep, kept_scores = picks[b] if picks is not None else \
                    self.select(anchors, shape_index, scores[b], table[b])
                results[i] = (anchors[keep].cpu(), kept_scores.cpu())
        return results

    def select_batch(self, anchors, shape_index, scores, table):
        """``select`` for every image of a batch at once, or None where a variant has no batched rule.

        One stable sort, one NMS over the PRE_NMS_TOP best anchors of all images (each image's boxes
        offset by image index x (image side + 1) in float64, so boxes of different images never overlap
        and IoUs within an image are unchanged), one copy to the host: on a GPU the per-image rule's
        kernel launches and host syncs cost more than phi's forward. An image with fewer than n
        survivors falls back to ``select`` (full NMS), as ``select`` itself does."""
        if type(self).select is not OurCrop.select:
            return None
        b, n_anchors = scores.shape
        k = min(PRE_NMS_TOP, n_anchors)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]  # [B, k]
        boxes = anchors[order].double()  # [B, k, 4]
        side = float(anchors.max()) + 1.0
        offset = (torch.arange(b, device=boxes.device, dtype=torch.float64) * side).view(b, 1, 1)
        top_scores = torch.gather(scores, 1, order)  # [B, k]
        kept = torchvision.ops.nms((boxes + offset).reshape(-1, 4), top_scores.reshape(-1).double(),
                                   self.params["nms_iou"])  # indices into [B * k], by descending score
        image_of = (kept // k).cpu()
        kept, order_cpu = kept.cpu(), order.cpu()
        picks = []
        for i in range(b):
            mine = kept[image_of == i][: self.n]
            if len(mine) < self.n and k < n_anchors:
                picks.append(self.select(anchors, shape_index, scores[i], table[i]))
                continue
            keep = order_cpu[i, mine % k].to(anchors.device)
            picks.append((keep, scores[i, keep]))
        return picks

    def select(self, anchors, shape_index, scores, table):
        """The paper's rule: NMS on the mean scores, then the top n. Returns (indices, scores).

        Greedy NMS decides each box from the higher-scored boxes alone, so running it on the
        ``PRE_NMS_TOP`` best anchors gives the same first n survivors as running it on all of them
        whenever at least n survive; only otherwise is the full set used. This cuts NMS from ~66 ms
        to ~1 ms per 640x480 image (3,600 anchors) on a CPU core."""
        order = torch.argsort(scores, descending=True, stable=True)
        for top in (order[:PRE_NMS_TOP], order):
            keep = top[torchvision.ops.nms(anchors[top], scores[top], self.params["nms_iou"])[: self.n]]
            if len(keep) >= self.n or len(top) == len(order):
                return keep, scores[keep]


PRE_NMS_TOP = 256  # anchors kept before NMS in ``ours`` (exact: see OurCrop.select)


class _SpreadSelection(OurCrop):
    """Shared by the coarse variants: same phi, map, anchors and box means as ``ours``; each variant
    ranks the anchors by its own ``box_scores``, then picks greedily with suppression by IoU >
    ``nms_iou`` (0.5, as ``ours``) *and* by containment: a box is also dropped when more than
    ``containment`` (0.8) of the smaller of it and a chosen box lies inside the other. Without the
    containment rule the 5 crops nest around one peak (a box of every size on it); with it they
    spread over different regions of the map."""

    defaults = {**OurCrop.defaults, "containment": 0.8}

    def check_params(self, params):
        super().check_params(params)
        _check_range(self.name, "containment", params["containment"], 0.0, 1.0)

    def box_scores(self, anchors, shape_index, scores, table):
        """Ranking score of every anchor: [N]."""
        raise NotImplementedError

    def select(self, anchors, shape_index, scores, table):
        rank = self.box_scores(anchors, shape_index, scores, table)
        keep = suppress(anchors, rank, self.n, self.params["nms_iou"], self.params["containment"])
        return keep, rank[keep].float()


class OurCoarseCrop(_SpreadSelection):
    """Coarse variant of Our-Crop: rank each anchor by centre-surround contrast, its mean objectness
    minus the mean of the ring around it, then IoU + containment suppression (see ``_SpreadSelection``).

    The ring is the box grown by ``ring`` (1.0) x its width / height on each side, clipped to the
    image, minus the box; a box with no ring left (it fills the image) scores 0. Why: with the plain
    mean (``ours``) a small box on the map's peak always beats any larger box, whose mean is diluted
    by its surroundings -- the trap: on the 256-px built-in scenes ~all chosen crops are the smallest
    anchors. The contrast is highest for the box that fits a blob of the map, so the crop size follows
    the blob: small boxes inside a blob lose (their ring is as bright as they are), boxes much larger
    than the blob lose (diluted inside).

    Measured on 100 built-in 256-px scenes with random-init phi and anchors 32 .. 256, ResNet-18 /
    ResNet-50: crop sides 53/112/128/189 and 59/112/128/186 px at the 10/50/75/90th percentiles
    (ours: 32/32/32/64), mean objectness 0.34 / 0.36, Poor/Coarse/Precise 30/67/3 and 28/67/5 %,
    3-6 % of crop pairs nested (> 80 % of the smaller inside the other). It stays coarse on peakier
    maps (the map cubed, like a trained phi's: 0.46-0.50 objectness, 64-128 px crops) and on toy
    Gaussian blobs (64-217 px), where ``ours_zscore`` falls back to the smallest anchors. Ring 0.5
    gave more Poor crops (43 %), 1.5 smaller crops; suppression at IoU 0.4 / containment 0.7 more
    Poor crops, at 0.6 / 0.9 nested crops (22-26 % of pairs)."""

    name = "ours_coarse"
    defaults = {**_SpreadSelection.defaults, "ring": 1.0}

    def check_params(self, params):
        super().check_params(params)
        _check_range(self.name, "ring", params["ring"], 0.0, 100.0)

    def box_scores(self, anchors, shape_index, scores, table):
        H, W = table.shape[-2] - 1, table.shape[-1] - 1
        return ring_contrast(table, anchors, self.params["ring"], H, W)


class OurZScoreCrop(_SpreadSelection):
    """Size-fair variant of Our-Crop: an anchor's score is its mean objectness standardised among
    the anchors of the same size and ratio in this image (z-score, std floored at 1e-3), so that a
    256-px box exceptional among 256-px boxes ranks with a 32-px box exceptional among 32-px boxes;
    then IoU + containment suppression (see ``_SpreadSelection``).

    Measured as ``ours_coarse`` (100 scenes, random-init phi, anchors 32 .. 256, ResNet-18 / -50):
    the widest spread of sizes, 32/128/156/189 and 32/128/145/183 px, mean objectness 0.35 / 0.41,
    Poor/Coarse/Precise 27/67/5 and 20/72/8 %, <= 1 % nested pairs, and 65-69 % of GT objects at
    least half inside some crop (ours: 8-11 %). Its weakness: on a peaky map (few bright blobs on a
    flat background, as a trained phi gives) the small anchors' score distribution has the longest
    tail, so their z-scores win and it returns the smallest anchors again -- hence ``ours_coarse``
    is the recommended variant. Also tried and dropped: the best box per anchor size (nested around
    one peak), mixing z-score and raw mean (small boxes), local maxima of the map (small boxes)."""

    name = "ours_zscore"

    def box_scores(self, anchors, shape_index, scores, table):
        return standardise_per_shape(scores, shape_index)


def standardise_per_shape(scores: torch.Tensor, shape_index: torch.Tensor, min_std: float = 1e-3) -> torch.Tensor:
    """z-score of each box among the boxes of the same anchor shape: [N] -> float64 [N].

    Relies on the anchor layout (location-major, shape-minor), i.e. shape_index = arange(A) repeated."""
    A = int(shape_index.max()) + 1 if shape_index.numel() else 1
    s = scores.to(torch.float64).reshape(-1, A)  # [h * w, A]
    z = (s - s.mean(0, keepdim=True)) / s.std(0, unbiased=False, keepdim=True).clamp_min(min_std)
    return z.reshape(-1)


def ring_contrast(table: torch.Tensor, boxes: torch.Tensor, ring: float, height: int, width: int) -> torch.Tensor:
    """Mean inside each box minus the mean of its surrounding ring (the box grown by ``ring`` x its
    size on each side, clipped, minus the box); 0 where no ring is left. table [H+1, W+1], boxes
    [N, 4] -> float64 [N]."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    outer = clip_boxes(boxes + ring * torch.stack([-w, -h, w, h], dim=1), width, height).to(boxes.device)
    sums, counts = box_sums(table[None], torch.cat([boxes, outer]))  # [1, 2N]
    sums, counts = sums.view(2, -1), counts.view(2, -1)  # row 0: inside, row 1: grown box
    inside = sums[0] / counts[0]
    ring_count = counts[1] - counts[0]
    ring_mean = torch.where(ring_count > 0, (sums[1] - sums[0]) / ring_count.clamp_min(1), inside)
    return inside - ring_mean


def suppress(boxes: torch.Tensor, scores: torch.Tensor, n: int, iou: float, containment: float) -> torch.Tensor:
    """Greedy selection of up to n boxes by score; after each pick, drop the boxes whose IoU with it
    exceeds ``iou`` or whose intersection covers more than ``containment`` of the smaller box.
    When that leaves fewer than n boxes (small images: few anchors, all overlapping), the remaining
    places are filled by the IoU rule alone, so a variant returns n boxes whenever ``ours`` (NMS)
    does. Ties go to the lower index. Returns int64 indices in pick order."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    floor = torch.finfo(scores.dtype).min
    keep: list[int] = []

    def overlaps(i: int, use_containment: bool) -> torch.Tensor:
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        out = inter / (area[i] + area - inter) > iou
        if use_containment:
            out |= inter / torch.minimum(area, area[i]).clamp_min(1e-12) > containment
        return out

    for use_containment in (True, False):
        alive = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
        for i in keep:
            alive &= ~overlaps(i, use_containment)
            alive[i] = False
        while len(keep) < n and alive.any():
            i = int(torch.where(alive, scores, torch.full_like(scores, floor)).argmax())
            keep.append(i)
            alive &= ~overlaps(i, use_containment)
            alive[i] = False
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _same_size_groups(images: list[torch.Tensor]) -> list[list[int]]:
    """Indices of images grouped by (H, W), groups in order of first appearance."""
    groups = defaultdict(list)
    for i, image in enumerate(images):
        groups[tuple(image.shape[-2:])].append(i)
    return list(groups.values())


# --------------------------------------------------------------------------------------------- registry


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        ImageCrop, GTCrop, GTPadCrop, GridCrop, PoorCrop, RandomCrop, SelectiveSearch, EdgeBox,
        OurCrop, OurCoarseCrop, OurZScoreCrop,
    )
}


def make_strategy(name: str, device: str | torch.device = "cpu", **params) -> Strategy:
    """Build a strategy by name; unknown names or parameters raise ValueError listing the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown crop strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](device=device, **params)


def strategy_parameters(name: str) -> dict:
    """The parameters a strategy accepts and their defaults (for CLIs and presets)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown crop strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return {k: _jsonable(v) for k, v in STRATEGIES[name].defaults.items()}
