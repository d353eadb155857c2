"""Object proposals as crop strategies: OpenCV's selective search (seeded through libc's rand, which it
draws from) and EdgeBox (on Sobel magnitudes thinned along the gradient, or on structured edges when the
user has the model file)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import cv2
import numpy as np
import torch

from coarsecrop.crops.strategies.base import (Strategy, _check_int, _check_range, _ones, _positive_int, image_seed,
                                              register)
from coarsecrop.io import file_sha256

SED_MIN_SIDE = 16  # structured edges: OpenCV fails on a side under the model's inner patch (16 px in Dollar's)
# What OpenCV's structured edge reader (opencv_contrib ximgproc structured_edge_detection.cpp) takes from
# model.yml.gz without checking: the ``options`` it divides by or sizes arrays with, and the forest's sequences,
# one entry per tree each. A file lacking one of them crashes the process inside OpenCV (numberOfTrees 0 is a
# division by zero), so ``check_edge_model`` reads them first.
SED_POSITIVE_OPTIONS = ("numberOfTrees", "numberOfTreesToEvaluate", "stride", "shrinkNumber", "patchSize",
                        "patchInnerSize", "selfsimilarityGridSize", "numberOfGradientOrientations")
SED_OPTIONS = SED_POSITIVE_OPTIONS + ("gradientSmoothingRadius", "regFeatureSmoothingRadius",
                                      "ssFeatureSmoothingRadius", "gradientNormalizationRadius")
SED_FOREST = ("childs", "featureIds", "thresholds", "edgeBoundaries", "edgeBins")


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


@register
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


@register
class EdgeBox(Strategy):
    """EdgeBoxes (Zitnick & Dollar) from OpenCV contrib; the n best-scored boxes (Sec. 5.2).

    Two edge sources. EdgeBoxes normally runs on the structured-forest edge map of Dollar & Zitnick
    (``model.yml.gz``), which cannot be downloaded here. By default (``edge_model`` None) ``edge_maps``
    computes the edges in code: Gaussian smoothing (sigma ``blur``) of the image in Lab, Sobel gradients
    per channel, the strongest channel per pixel, magnitude divided by its 99th percentile and clipped
    to [0, 1] (float32), orientation = atan2(gy, gx) mod pi (the edge normal, the convention EdgeBoxes
    expects), thinned by non-maximum suppression along the gradient. Difference from structured edges:
    these respond to every intensity / colour step -- texture and background clutter included -- where
    the learned edges fire mostly on object boundaries, so boxes enclosing textured stuff score higher
    than they would with the real model. With ``edge_model`` the path of that file (opencv_extra's
    testdata/cv/ximgproc/model.yml.gz, placed by the user), ``structured_edge_maps`` runs the real
    detector as OpenCV's EdgeBoxes sample does (``blur`` is then unused); the file is checked when the
    strategy is built (``check_edge_model``), the detector is loaded once, on the first image, and the
    recorded parameter is {"path", "sha256"} of the file, so another model is another crop job. Without
    it the parameter is left out of ``params``, so configurations written before it existed stay the same.

    OpenCV's defaults otherwise (alpha 0.65, beta 0.75, min_score 0.01); the minimum box area
    (``min_box_area`` px, OpenCV's 1000) is capped at 10 % of the image. Fewer than n boxes when
    EdgeBoxes finds fewer (few edges, e.g. flat or noise-only images); an image with no proposal, or
    under 8 px on a side (``SED_MIN_SIDE`` = 16 px with structured edges), gets the whole image."""

    name = "edgebox"
    defaults = {"n": 5, "alpha": 0.65, "beta": 0.75, "min_score": 0.01, "min_box_area": 1000, "blur": 1.0,
                "edge_model": None}

    def __init__(self, device="cpu", **params):
        super().__init__(device, **params)
        self._detector = None  # OpenCV's structured edge detector, loaded on first use

    def __getstate__(self):  # the OpenCV detector does not pickle; a copy loads its own
        return {**self.__dict__, "_detector": None}

    def check_params(self, params):
        _check_range(self.name, "alpha", params["alpha"], 0.0, 1.0)
        _check_range(self.name, "beta", params["beta"], 0.0, 1.0)
        _check_range(self.name, "min_score", params["min_score"], 0.0, 1e9)
        _check_range(self.name, "min_box_area", params["min_box_area"], 0.0, 1e12)
        _check_range(self.name, "blur", params["blur"], 0.0, 100.0)
        path = params["edge_model"]
        if path is None:  # left out, as before the parameter existed
            del params["edge_model"]
            return
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ValueError(f"strategy {self.name!r}: edge_model {path!r} is not a file; {SED_MODEL_IS}")
        check_edge_model(path)
        params["edge_model"] = {"path": os.path.abspath(path), "sha256": file_sha256(path)}

    @property
    def detector(self):
        """cv2.ximgproc.StructuredEdgeDetection of ``edge_model``, loaded on first use; None without one."""
        if self._detector is None and "edge_model" in self.params:
            self._detector = cv2.ximgproc.createStructuredEdgeDetection(self.params["edge_model"]["path"])
        return self._detector

    def crop(self, image, scene):
        H, W = image.shape[-2:]
        p = self.params
        structured = "edge_model" in p
        if min(H, W) < (SED_MIN_SIDE if structured else 8):  # EdgeBoxes ignores a 1-px border, needs room for a box
            return _whole_image(H, W)
        edges, orientation = structured_edge_maps(image, self.detector) if structured else edge_maps(image, p["blur"])
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


SED_MODEL_IS = ("it is the model of Dollar & Zitnick's structured edge detector, model.yml.gz from opencv_extra "
                "(testdata/cv/ximgproc/model.yml.gz), which you download and place yourself (or leave edge_model "
                "out for the Sobel edges)")


def check_edge_model(path: str) -> None:
    """ValueError naming the file and what is wrong when ``path`` is not a structured edge forest OpenCV can
    run (not an OpenCV YAML / XML file, an option of SED_OPTIONS missing or not positive where it must be,
    patchInnerSize above patchSize, a sequence of SED_FOREST missing or not one entry per tree), rather than
    a crash inside OpenCV later (measured: numberOfTrees 0 kills the process with SIGFPE, a missing edgeBins
    with SIGSEGV). Reads the options and the sequences' lengths only, not the trees."""
    def bad(what: str) -> ValueError:
        return ValueError(f"edgebox: edge_model {path}: {what}; {SED_MODEL_IS}")

    try:
        fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
        opened = fs.isOpened()
    except (cv2.error, SystemError) as err:  # a malformed file: cv2.error, or a SystemError raised from one
        cause = err.__cause__ if isinstance(err.__cause__, cv2.error) else err
        raise bad(f"OpenCV cannot read it ({str(cause).strip().splitlines()[-1]})") from None
    if not opened:
        raise bad("OpenCV cannot open it")
    try:
        options = fs.getNode("options")
        if not options.isMap():
            raise bad("no 'options' mapping")
        values = {}
        for key in SED_OPTIONS:
            node, least = options.getNode(key), int(key in SED_POSITIVE_OPTIONS)
            if not node.isInt():
                raise bad(f"options/{key} is missing or not an integer")
            values[key] = int(node.real())
            if values[key] < least:
                raise bad(f"options/{key} is {values[key]}, must be at least {least}")
        if values["patchInnerSize"] > values["patchSize"]:
            raise bad(f"options/patchInnerSize {values['patchInnerSize']} exceeds patchSize {values['patchSize']}")
        for key in SED_FOREST:
            node = fs.getNode(key)
            if not node.isSeq() or node.size() != values["numberOfTrees"]:
                raise bad(f"{key!r} is not a sequence of numberOfTrees ({values['numberOfTrees']}) trees")
    finally:
        fs.release()


def structured_edge_maps(image: torch.Tensor, detector) -> tuple[np.ndarray, np.ndarray]:
    """Structured-forest edges and their orientation, both float32 [H, W], as OpenCV's EdgeBoxes sample
    computes them: ``detector.detectEdges`` on the RGB image as float32 in [0, 1], ``computeOrientation``
    of that map (in [0, pi]), ``edgesNms`` (radius 2, no border suppression, multiplier 1)."""
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy(), dtype=np.float32) / 255.0
    edges = detector.detectEdges(rgb)
    orientation = detector.computeOrientation(edges)
    return detector.edgesNms(edges, orientation, r=2, s=0, m=1, isParallel=True), orientation


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

