"""COCO-style box and mask AP for any scene set: ground truth built from Scene records, pycocotools COCOeval.

``scenes_to_coco`` turns scenes (COCO, VOC or synthetic) into an in-memory COCO ground truth, so the
same evaluation serves every source. ``coco_evaluate`` returns AP, AP50, AP75, APs, APm, APl in percent
(None for a size range without ground truth).
``backend="faster_coco_eval"`` runs the same protocol through the faster-coco-eval package (optional;
``benchmarks/eval_speed.py`` compares the two on the same predictions).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def encode_masks(masks: np.ndarray) -> list[dict]:
    """bool/uint8 [K, H, W] -> K compressed RLEs with str counts (JSON-able)."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def scenes_to_coco(scenes: Sequence, categories: dict[int, str], masks: bool = False) -> dict:
    """COCO ground-truth dict for ``scenes`` (image ids = position in ``scenes``, category ids kept).

    area = mask area when ``masks`` (as COCO), else box area; iscrowd 0 for every instance."""
    images, anns = [], []
    for i, scene in enumerate(scenes):
        images.append({"id": i, "width": int(scene.width), "height": int(scene.height), "file_name": scene.file})
        if len(scene.boxes) == 0:
            continue
        rles = encode_masks(scene.instance_masks()) if masks else [None] * len(scene.boxes)
        for box, label, rle in zip(scene.boxes.tolist(), scene.labels.tolist(), rles):
            x1, y1, x2, y2 = box
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": int(label), "iscrowd": 0,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            if rle is not None:
                ann["segmentation"] = rle
                ann["area"] = float(mask_util.area(rle))
            anns.append(ann)
    cats = [{"id": int(c), "name": n} for c, n in sorted(categories.items())]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_evaluate(gt: dict, results: list[dict], iou_type: str = "bbox", backend: str = "pycocotools") -> dict:
    """COCOeval summary (percent) of ``results`` (COCO result dicts: image_id, category_id, score, and
    bbox [x, y, w, h] or segmentation RLE) against ground truth dict ``gt``. No detections -> zeros."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; valid: pycocotools, faster_coco_eval")
    if not results or not gt["annotations"]:
        return {k: 0.0 for k in STATS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval writes -1 where a size range has no ground truth: None, not a score
    return {k: (None if s < 0 else float(s) * 100) for k, s in zip(STATS, ev.stats)}
