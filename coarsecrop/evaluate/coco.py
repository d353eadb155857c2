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
import math
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from coarsecrop.data.masks import coco_rle, filled_boxes

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

    area (which decides APs / APm / APl) = the source's annotated area where it has one (COCO's ``area``),
    else the mask area when ``masks`` or the scene has masks, else the box area. Ignored by COCOeval, as it
    ignores COCO's crowd regions (``iscrowd: 1``: a detection on one counts neither way): the crowd regions
    themselves (``Scene.crowd``) and VOC's difficult objects (``Scene.difficult``)."""
    images, anns = [], []

    def add(image: int, label: int, box, area: float, crowd: bool, rle: dict | None) -> None:
        x1, y1, x2, y2 = box
        ann = {"id": len(anns) + 1, "image_id": image, "category_id": int(label), "iscrowd": int(crowd),
               "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area}
        if rle is not None:
            ann["segmentation"] = rle
        anns.append(ann)

    for i, scene in enumerate(scenes):
        images.append({"id": i, "width": int(scene.width), "height": int(scene.height), "file_name": scene.file})
        if len(scene.boxes):
            areas = scene.areas.tolist() if scene.areas is not None else [math.nan] * len(scene.boxes)
            need = masks or (not scene.masks_are_boxes and not all(map(math.isfinite, areas)))
            rles = encode_masks(scene.instance_masks()) if need else [None] * len(scene.boxes)
            difficult = scene.difficult.tolist() if scene.difficult is not None else [False] * len(scene.boxes)
            for box, label, rle, area, hard in zip(scene.boxes.tolist(), scene.labels.tolist(), rles, areas, difficult):
                if not math.isfinite(area):
                    area = float(mask_util.area(rle)) if rle is not None else (box[2] - box[0]) * (box[3] - box[1])
                add(i, label, box, area, hard, rle if masks else None)
        for label, box, area, segmentation in scene.crowd:
            if box is None or int(label) not in categories:
                continue
            rle = None
            if masks:
                rle = coco_rle(segmentation, scene.height, scene.width) if segmentation is not None else None
                if rle is None:
                    rle = encode_masks(filled_boxes(torch.tensor([box]), scene.height, scene.width))[0]
                elif isinstance(rle["counts"], bytes):
                    rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            if not math.isfinite(area):
                area = (box[2] - box[0]) * (box[3] - box[1])
            add(i, label, box, area, True, rle)
    cats = [{"id": int(c), "name": n} for c, n in sorted(categories.items())]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_evaluate(gt: dict, results: list[dict], iou_type: str = "bbox", backend: str = "pycocotools") -> dict:
    """COCOeval summary (percent) of ``results`` (COCO result dicts: image_id, category_id, score, and
    bbox [x, y, w, h] or segmentation RLE) against ground truth dict ``gt``. No detections (or no ground
    truth) -> zeros, and None for a size range without ground truth, as COCOeval would."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; valid: pycocotools, faster_coco_eval")
    if not results or not gt["annotations"]:
        areas = [a["area"] for a in gt["annotations"] if not a["iscrowd"]]
        sized = {"APs": any(a < 32 ** 2 for a in areas), "APm": any(32 ** 2 <= a < 96 ** 2 for a in areas),
                 "APl": any(a >= 96 ** 2 for a in areas)}  # COCOeval's area ranges
        return {k: 0.0 if sized.get(k, True) else None for k in STATS}
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
