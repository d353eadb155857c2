"""Validity gates of a scenes data set: can an object's class be read from its colour alone, or from its
shape alone?

Why: a benchmark for learning object representations must not let colour name the class (then a random
network already "knows" it, and SSL's colour jitter is trained to throw the cue away), and it must let
the shape name it (else nothing can be learned). Issue 13's gates, on the built-in scenes:

- ``colour_features``: per object, the mean and standard deviation of its own pixels' RGB and a 4x4x4
  colour histogram (70 numbers, no shape, no context);
- ``shape_features``: from the instance mask alone, 83 numbers that do not change when the object turns
  (its rotation is random within a class, and a linear probe on raw mask pixels would have to learn
  every angle): the Fourier magnitudes over the angle of the mask in polar coordinates (outline, parts
  and k-fold symmetry per radial band), log Hu moments, solidity, circularity, elongation, holes;
- ``probe_accuracy``: standardised features, a logistic regression, 5-fold stratified cross-validated
  accuracy; ``chance`` is the majority class's share;
- ``measure_gates(scenes)``: both probes and chance for a scenes folder (or COCO json / VOC root), and
  whether the gates pass (colour-only at most ``COLOUR_MARGIN`` above chance, shape-only at least
  ``SHAPE_FLOOR``).

Measured on 300 scenes of 128 px, seed 3 (``coarsecrop scenes --num-images 300 --size 128 --seed 3
--version V``, then ``measure_gates``): v1: colour-only 0.994, shape-only 0.843, chance 0.098 (1,080
objects: the colour gate fails); v2: colour-only 0.091, shape-only 0.879, chance 0.092 (2,047 objects:
both gates pass); v3: colour-only 0.095, shape-only 0.861, chance 0.096 (2,089 objects: both pass). Measured
again when the polar resampling stopped reading unset memory (WARP_FILL_OUTLIERS): the same to 3 decimals.

scikit-learn is a dev dependency, not a runtime one: it (and threadpoolctl, which it brings) is imported
inside ``probe_accuracy`` only.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from coarsecrop.data.images import load_image
from coarsecrop.data.scenes import open_scenes

COLOUR_MARGIN = 0.10  # the colour-only probe may beat chance by at most this much
SHAPE_FLOOR = 0.80  # the shape-only probe must reach at least this accuracy
POLAR_RINGS, POLAR_HARMONICS = 8, 9
FOLDS = 5


def colour_features(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """70 numbers of the object's own pixels (``image`` uint8 [H, W, 3], ``mask`` bool [H, W]): RGB mean
    and std (in [0, 1]) and the 4x4x4 colour histogram (shares summing to 1)."""
    px = image[mask].astype(np.float64) / 255.0  # [N, 3]
    bins = np.minimum((px * 4).astype(int), 3)
    hist = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64) / len(px)
    return np.concatenate([px.mean(0), px.std(0), hist])


def _box_crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _polar_spectrum(mask: np.ndarray, rings: int = POLAR_RINGS, harmonics: int = POLAR_HARMONICS) -> np.ndarray:
    """Rotation-invariant outline and symmetry numbers [harmonics * rings]: the mask (box-cropped, its
    longer side resized to 64 px) in polar coordinates about its centroid, radius up to its farthest
    pixel, averaged into ``rings`` radial bands; per band the magnitudes of the first ``harmonics``
    Fourier coefficients over the angle (0: how full the band is; k: k-fold symmetry)."""
    m = _box_crop(mask).astype(np.float32)
    h, w = m.shape
    f = 64 / max(h, w)
    m = cv2.resize(m, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_LINEAR)
    m = cv2.copyMakeBorder(m, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=0)
    mom = cv2.moments(m)
    cx, cy = mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]
    ys, xs = np.nonzero(m > 0.5) if (m > 0.5).any() else np.nonzero(m)
    radius = float(np.hypot(xs - cx, ys - cy).max()) + 1.0
    angles = 64
    polar = cv2.warpPolar(m, (rings * 4, angles), (cx, cy), radius,  # outside the image: 0, not unset memory
                          cv2.INTER_LINEAR + cv2.WARP_POLAR_LINEAR + cv2.WARP_FILL_OUTLIERS)
    polar = polar.reshape(angles, rings, 4).mean(2)  # [angle, ring]
    return (np.abs(np.fft.rfft(polar, axis=0))[:harmonics] / angles).ravel()


def shape_features(mask: np.ndarray) -> np.ndarray:
    """Numbers from an instance mask alone (bool [H, W], at least one pixel), none of which changes when
    the object turns: the polar spectrum (``_polar_spectrum``), 7 log Hu moments, solidity, circularity,
    elongation and the number of holes."""
    m = mask.astype(np.uint8)
    mom = cv2.moments(m, binaryImage=True)
    hu = cv2.HuMoments(mom).ravel()
    log_hu = -np.sign(hu) * np.log10(np.abs(hu) + 1e-30)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    outer = [c for c, h in zip(contours, hierarchy[0]) if h[3] < 0]
    holes = sum(1 for h in hierarchy[0] if h[3] >= 0)
    area = float(m.sum())
    hull = cv2.convexHull(np.concatenate(outer))
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    cov = np.array([[mom["mu20"], mom["mu11"]], [mom["mu11"], mom["mu02"]]]) / max(area, 1.0)
    ev = np.linalg.eigvalsh(cov)
    scalars = [area / max(cv2.contourArea(hull), 1.0), 4 * np.pi * area / max(perimeter, 1.0) ** 2,
               float(np.sqrt(max(ev[0], 0) / max(ev[1], 1e-9))), float(holes)]
    return np.concatenate([_polar_spectrum(mask), log_hu, scalars])


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = FOLDS, seed: int = 0) -> float:
    """Mean accuracy of a logistic regression on standardised ``features`` [N, D], ``folds``-fold
    stratified cross-validation (shuffled with ``seed``); fewer folds (at least 2) when the rarest class has
    fewer than ``folds`` objects, as in a handful of scenes, so every fold holds every class."""
    from sklearn.linear_model import LogisticRegression  # dev dependency: imported here only
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.5))
    counts = np.bincount(np.asarray(labels))
    folds = max(2, min(folds, int(counts[counts > 0].min())))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):  # a small problem: BLAS threads only contend (100x slower on a busy machine)
        return float(cross_val_score(model, features, labels, cv=cv).mean())


def chance(labels: np.ndarray) -> float:
    """The majority class's share: the accuracy of always guessing the most frequent class."""
    return float(np.bincount(np.asarray(labels)).max() / len(labels))


def object_features(scenes: str | Path, split: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour features [N, 70], shape features [N, D] and category ids [N] of every annotated object."""
    colour, shape, labels = [], [], []
    for scene in open_scenes(scenes, split=split).scenes:
        masks = scene.instance_masks()
        if not len(masks) or scene.masks_are_boxes:
            continue
        image, _ = load_image(scene.file)
        for mask, label in zip(masks, scene.labels.tolist()):
            if mask.any():
                colour.append(colour_features(image, mask))
                shape.append(shape_features(mask))
                labels.append(int(label))
    if not labels:
        raise ValueError(f"{scenes}: no object with an instance mask to probe")
    return np.array(colour), np.array(shape), np.array(labels)


def measure_gates(scenes: str | Path, split: str | None = None, folds: int = FOLDS, seed: int = 0) -> dict:
    """The colour-only and shape-only probes' cross-validated accuracy on the objects of ``scenes``, chance,
    and whether each gate passes."""
    colour, shape, labels = object_features(scenes, split)
    base = chance(labels)
    result = {"objects": int(len(labels)), "classes": int(len(np.unique(labels))), "chance": base,
              "colour_only": probe_accuracy(colour, labels, folds, seed),
              "shape_only": probe_accuracy(shape, labels, folds, seed)}
    result["colour_gate"] = result["colour_only"] <= base + COLOUR_MARGIN
    result["shape_gate"] = result["shape_only"] >= SHAPE_FLOOR
    return result
