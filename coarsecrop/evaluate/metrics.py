"""Metrics, written out from their definitions so that tests can check them against independent code.

- ``average_precision``: non-interpolated AP (area under the step precision-recall curve, ties grouped),
  the definition of scikit-learn's ``average_precision_score``. The VOC devkit interpolates precision
  (11 points in VOC2007, the all-point monotone envelope from VOC2010), which gives slightly higher
  values. ``mean_ap`` = the paper's multi-label mAP: mean over classes of AP, classes without a positive
  in the evaluation set left out (their AP is undefined).
- ``confusion`` / ``segmentation_scores``: mIoU, mAcc, aAcc as in mmsegmentation (Table 6).
- ``summarise``: mean and spread (sample std) of a metric over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: sum over distinct score thresholds of (recall gain) x precision. NaN without positives.

    scores: float [N]; targets: {0, 1} [N], or -1 for an entry left out (a class present only as VOC
    "difficult" objects: neither a positive nor a negative, as in the VOC devkit)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel()
    scores, targets = scores[targets >= 0], targets[targets >= 0].astype(bool)
    positives = targets.sum()
    if positives == 0:
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    scores, targets = scores[order], targets[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end index of each score group
    tp = np.cumsum(targets)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / positives
    gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(gain * precision))


def per_class_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP per column of [N, C] scores and {0, 1} targets, -1 left out (NaN for a class with no positive)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    return np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])


def mean_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """Multi-label mAP: mean of per-class AP over the classes that have a positive."""
    ap = per_class_ap(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan


def top1(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Share of rows whose arg-max equals the label."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else math.nan


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int = 255) -> torch.Tensor:
    """int64 [C, C] counts, rows = true class, columns = predicted; ``ignore`` pixels left out."""
    keep = target != ignore
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def segmentation_scores(conf: torch.Tensor) -> dict[str, float]:
    """mIoU, mAcc (mean per-class pixel accuracy) and aAcc (all-pixel accuracy), in [0, 1].

    Classes absent from both ground truth and prediction are left out of the means, as mmsegmentation's
    nan-mean does."""
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    pred = conf.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    return {
        "mIoU": float(iou.nanmean()),
        "mAcc": float(acc.nanmean()),
        "aAcc": float(tp.sum() / conf.sum().clamp(min=1)),
        "IoU": [None if math.isnan(v) else float(v) for v in iou.tolist()],
    }


def summarise(runs: Sequence[Mapping[str, object]]) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n, values}} over the scalar metrics every run has: mean and std (sample, 0 for one
    run) over the finite values, n their count; ``values`` keeps every run's, NaN included."""
    if not runs:
        return {}
    keys = [k for k, v in runs[0].items() if _scalar(v) and all(_scalar(r.get(k)) for r in runs)]
    out = {}
    for k in keys:
        values = [float(r[k]) for r in runs]
        finite = [v for v in values if math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        std = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
               if len(finite) > 1 else 0.0)
        out[k] = {"mean": mean, "std": std, "n": len(finite), "values": values}
    return out


def _scalar(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
