"""Metrics, written out from their definitions so that tests can check them against independent code.

- ``average_precision``: non-interpolated AP (area under the step precision-recall curve, ties grouped),
  the definition of scikit-learn's ``average_precision_score``. The VOC devkit interpolates precision
  (11 points in VOC2007, the all-point monotone envelope from VOC2010), which gives slightly higher
  values. ``mean_ap`` = the paper's multi-label mAP: mean over classes of AP, classes without a positive
  in the evaluation set left out (their AP is undefined).
- ``voc_ap`` / ``voc_detection_scores``: PASCAL VOC's detection AP (the devkit's ``VOCevaldet`` as
  detectron2's ``voc_eval``: greedy matching by score at IoU > t, "difficult" objects neither found nor
  missed, a second detection of one object a false positive; the 11-point AP for VOC2007, else the area
  under the precision envelope).
- ``confusion`` / ``segmentation_scores``: mIoU, mAcc, aAcc as in mmsegmentation (Table 6).
- ``summarise``: mean and spread (sample std) of a metric over seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
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


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07: bool) -> float:
    """AP of one class from its cumulative recall and precision: VOC2007's mean of the highest precision at
    recall >= 0, 0.1, ..., 1 (``use_07``), else the area under the monotone precision envelope (VOC2010+)."""
    if use_07:
        return float(sum(precision[recall >= t].max() if (recall >= t).any() else 0.0
                         for t in np.linspace(0, 1, 11)) / 11)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_detection_scores(gt: Mapping, results: Sequence[Mapping], use_07: bool) -> dict[str, float]:
    """PASCAL VOC detection scores in percent: AP (mean over IoU 0.50:0.95), AP50, AP75, each the mean over
    the classes with a ground-truth object that is not difficult (the others have no AP).

    gt: a COCO-style dict (``coco.scenes_to_coco``: ``iscrowd`` 1 marks a difficult object); results: COCO
    result dicts (image_id, category_id, score, bbox xywh). Boxes are continuous pixel corners, so the IoU
    is the plain one (VOC's "+1" widths belong to its 1-based inclusive pixel indices)."""
    classes = sorted({a["category_id"] for a in gt["annotations"] if not a["iscrowd"]})
    anns, dets = defaultdict(list), defaultdict(list)  # by class, one pass each
    for a in gt["annotations"]:
        anns[a["category_id"]].append(a)
    for r in results:
        dets[r["category_id"]].append(r)
    matches = {c: _voc_best_matches(anns[c], dets[c]) for c in classes}  # the same at every threshold
    per_threshold = {}
    for t in np.arange(50, 100, 5):
        aps = [_voc_class_ap(*matches[c], t / 100, use_07) for c in classes]
        per_threshold[int(t)] = 100 * float(np.mean(aps)) if aps else math.nan
    return {"AP": float(np.mean(list(per_threshold.values()))), "AP50": per_threshold[50], "AP75": per_threshold[75]}


def _xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def _voc_best_matches(anns: Sequence[Mapping], dets: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's detections by descending score: the object each overlaps most (its index in ``anns``, -1
    where its image has none) and that IoU; and which objects are difficult."""
    by_image: dict = {}
    for k, a in enumerate(anns):
        by_image.setdefault(a["image_id"], []).append(k)
    boxes = np.stack([_xyxy(a["bbox"]) for a in anns]) if anns else np.zeros((0, 4))
    difficult = np.array([bool(a["iscrowd"]) for a in anns], dtype=bool)
    dets = sorted(dets, key=lambda r: -r["score"])
    best, best_iou = np.full(len(dets), -1), np.zeros(len(dets))
    for d, det in enumerate(dets):
        own = by_image.get(det["image_id"])
        if not own:
            continue
        b, boxes_here = _xyxy(det["bbox"]), boxes[own]
        inter = (np.clip(np.minimum(boxes_here[:, 2], b[2]) - np.maximum(boxes_here[:, 0], b[0]), 0, None)
                 * np.clip(np.minimum(boxes_here[:, 3], b[3]) - np.maximum(boxes_here[:, 1], b[1]), 0, None))
        union = ((b[2] - b[0]) * (b[3] - b[1]) + (boxes_here[:, 2] - boxes_here[:, 0])
                 * (boxes_here[:, 3] - boxes_here[:, 1]) - inter)
        iou = inter / np.maximum(union, np.finfo(np.float64).eps)
        k = int(iou.argmax())
        best[d], best_iou[d] = own[k], iou[k]
    return best, best_iou, difficult


def _voc_class_ap(best: np.ndarray, best_iou: np.ndarray, difficult: np.ndarray, threshold: float,
                  use_07: bool) -> float:
    """The devkit's greedy matching at IoU > ``threshold``: a hit finds its object once (again: a false
    positive), a detection on a difficult object counts neither way."""
    found = np.zeros(len(difficult), dtype=bool)
    tp, fp = np.zeros(len(best)), np.zeros(len(best))
    for d, (k, iou) in enumerate(zip(best.tolist(), best_iou.tolist())):
        if k < 0 or iou <= threshold:
            fp[d] = 1
        elif not difficult[k]:
            if found[k]:
                fp[d] = 1
            else:
                tp[d], found[k] = 1, True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    positives = int((~difficult).sum())
    return voc_ap(tp / positives, tp / np.maximum(tp + fp, np.finfo(np.float64).eps), use_07)


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
