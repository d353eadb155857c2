"""Instance masks of the annotation formats, decoded on demand: COCO segmentations (polygons, RLE; crowd
regions), VOC SegmentationObject pngs (palette or VOC-colour RGB), and a box's pixels where an instance has
no mask. ``coarsecrop.data.scenes`` binds these decoders to each scene (picklable ``functools.partial``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image


def filled_boxes(boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Bool [K, H, W]: the pixels whose centres lie inside each box (>= 1 px for a valid box)."""
    b = boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
    masks = np.zeros((len(b), height, width), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(b):
        c0, c1 = int(np.ceil(x1 - 0.5)), int(np.floor(x2 - 0.5)) + 1
        r0, r1 = int(np.ceil(y1 - 0.5)), int(np.floor(y2 - 0.5)) + 1
        masks[k, max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] = True
    return masks


def coco_rle(seg, height: int, width: int) -> dict | None:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> one compressed RLE, or None."""
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, (list, tuple)) and len(p) >= 6]
        if not polys:
            return None
        return mask_util.merge(mask_util.frPyObjects(polys, height, width))
    if isinstance(seg, dict) and "counts" in seg:
        if isinstance(seg["counts"], list):  # uncompressed RLE
            return mask_util.frPyObjects(seg, *seg["size"])
        counts = seg["counts"]
        return {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str)
                else counts}
    return None


def decode_rle(rle: dict) -> np.ndarray:
    """pycocotools decode -> bool [H, W], without its numpy-2 DeprecationWarning (harmless noise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def decode_coco_masks(segs: tuple, boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Bool [K, H, W]; an instance without a segmentation gets its filled box."""
    masks = np.zeros((len(segs), height, width), dtype=bool)
    for k, seg in enumerate(segs):
        rle = coco_rle(seg, height, width) if seg is not None else None
        if rle is None:
            masks[k] = filled_boxes(boxes[k:k + 1], height, width)[0]
            continue
        m = decode_rle(rle)
        if m.shape != (height, width):
            raise ValueError(f"segmentation of size {m.shape} does not match the image ({height}, {width})")
        masks[k] = m
    return masks


def decode_coco_crowd(segs: tuple, boxes: tuple, height: int, width: int) -> np.ndarray:
    """Bool [H, W]: union of crowd regions (their box when a region has no segmentation)."""
    union = np.zeros((height, width), dtype=bool)
    for seg, box in zip(segs, boxes):
        rle = coco_rle(seg, height, width) if seg is not None else None
        if rle is None:
            if box is not None:
                union |= filled_boxes(torch.tensor([box]), height, width)[0]
            continue
        union |= decode_rle(rle)
    return union


def voc_colormap() -> np.ndarray:
    """The standard VOC palette [256, 3] (index -> colour), for colour-coded SegmentationObject pngs."""
    cmap = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def voc_index_map(png: Path) -> np.ndarray:
    """uint8 [H, W] instance indices of a SegmentationObject png (palette or VOC-colour RGB)."""
    with Image.open(png) as im:
        if im.mode in ("P", "L"):
            return np.array(im, dtype=np.uint8)
        rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    cmap = voc_colormap().astype(np.int32)
    keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    lut = {int(k): i for i, k in enumerate(keys)}
    out = np.zeros(code.shape, np.uint8)
    for value in np.unique(code):
        out[code == value] = lut.get(int(value), 255)  # unknown colours count as void
    return out


# Cityscapes: its 19 evaluation classes (trainIds 0..18) and the labelId -> trainId map of cityscapesscripts'
# labels.py (the 15 other labelIds, e.g. unlabeled, ego vehicle, parking, caravan, are ignored: 255).
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def decode_cityscapes_labels(png: str) -> np.ndarray:
    """uint8 [H, W] trainIds (0..18, 255 ignored) of a gtFine ``*_labelIds.png``."""
    lut = np.full(256, 255, np.uint8)
    lut[list(CITYSCAPES_TRAIN_IDS)] = list(CITYSCAPES_TRAIN_IDS.values())
    with Image.open(png) as im:
        ids = np.asarray(im)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(f"{png}: not an 8-bit single-channel labelIds image (mode {im.mode}); gtFine's "
                         "*_gtFine_labelIds.png is one")
    return lut[ids]


def _sized_index_map(png: str, height: int, width: int) -> np.ndarray:
    """``voc_index_map`` of ``png``, which must have its annotation's size."""
    index = voc_index_map(Path(png))
    if index.shape != (height, width):
        raise ValueError(f"{png}: size {index.shape[::-1]} does not match its annotation ({width}x{height})")
    return index


def decode_voc_void(png: str, height: int, width: int) -> np.ndarray:
    """Bool [H, W]: the void pixels (index 255) of a SegmentationObject png, object borders and regions VOC
    leaves unlabelled; its semantic segmentation benchmark ignores them."""
    return _sized_index_map(png, height, width) == 255


def decode_voc_masks(png: str, object_index: tuple[int, ...], height: int, width: int) -> np.ndarray:
    """Bool [K, H, W]: instance k is the pixels labelled object_index[k] + 1; 0 and 255 are not object."""
    index = _sized_index_map(png, height, width)
    return np.stack([index == k + 1 for k in object_index]) if object_index else \
        np.zeros((0, height, width), dtype=bool)
