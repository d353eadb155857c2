"""Scenes as evaluation data: which split, which labels a task needs, decoded and resized pixels.

Scene records come from ``coarsecrop.data.scenes.open_scenes`` (no pixels); pixels from
``coarsecrop.data.images.load_image``. Images are decoded once into a uint8 tensor (toy scale: a few MB)
so that finetuning epochs do not re-decode; ``workers`` parallelise the decoding.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from coarsecrop.data.images import load_image, normalise  # noqa: F401  (the tasks import normalise from here)
from coarsecrop.data.scenes import open_scenes

# What each scene task needs from the annotations, and how to say it when it is missing.
NEEDS = {
    "multilabel": "boxes with category labels (image-level targets = categories present)",
    "linear": "boxes with category labels (image-level targets = categories present)",
    "objects": "boxes with category labels (the probe classifies ground-truth object crops)",
    "detection": "boxes with category labels",
    "instance": "instance masks (COCO polygons / RLE or VOC SegmentationObject)",
    "semantic": "instance masks (COCO polygons / RLE or VOC SegmentationObject) with category labels, or a "
                "Cityscapes root's pixel labels",
    "detectron2": "labelled boxes",
}


def open_split(path: str | Path, split: str | None, images: str | Path | None = None):
    """``open_scenes(path, images, split)`` (None: every image) with an error when the split is empty."""
    sceneset = open_scenes(path, images=images, split=split or None)
    if len(sceneset) == 0:
        raise ValueError(f"{path}: no images in split {split!r}; pass the split names the data set has "
                         "(built-in scenes: train / val; VOC: an ImageSets name such as trainval / test)")
    return sceneset


def require_labels(sceneset, task: str, source: str | Path) -> None:
    """Fail with what ``task`` expected when the data set lacks it (no annotations, no boxes, no masks)."""
    scenes = sceneset.scenes
    need = NEEDS[task]
    if sceneset.semantic_classes:  # Cityscapes: pixel labels, no boxes
        if task != "semantic":
            raise ValueError(f"{source}: task {task!r} needs {need}; this data set labels pixels only (a Cityscapes "
                             "root: task semantic)")
        return
    if not any(getattr(s, "annotated", True) for s in scenes):
        raise ValueError(f"{source}: task {task!r} needs {need}, but this data set has no annotations "
                         "(a plain image folder); give a COCO json, a VOC root or a `coarsecrop scenes` folder")
    if not any(len(s.labels) for s in scenes):
        raise ValueError(f"{source}: task {task!r} needs {need}, but no image has a labelled box")
    if task in ("instance", "semantic") and all(s.masks_are_boxes for s in scenes if len(s.labels)):
        raise ValueError(f"{source}: task {task!r} needs {need}, but this data set has boxes only")


def with_masks(sceneset, task: str, source: str | Path):
    """For ``instance`` and ``semantic``: the data set without the images whose objects have no instance
    masks, with a warning that says how many (a VOC root has masks only for the images of its Segmentation
    sets, SegmentationObject/<id>.png; a filled box is not a mask, and scoring boxes as masks would mix two
    tasks). Images without objects stay (all background). Other tasks: the data set as it is."""
    if task not in ("instance", "semantic"):
        return sceneset
    keep = [s for s in sceneset.scenes if not (s.masks_are_boxes and len(s.labels))]
    if len(keep) < len(sceneset.scenes):
        warnings.warn(f"{source}: task {task!r} leaves out {len(sceneset.scenes) - len(keep)} of "
                      f"{len(sceneset.scenes)} images{f' (split {sceneset.split})' if sceneset.split else ''} whose "
                      "objects have no instance masks (VOC: no SegmentationObject/<id>.png; its Segmentation image "
                      "sets list the images that have them)")
    return dataclasses.replace(sceneset, scenes=keep)


def require_same_classes(train, val, train_source: str | Path, val_source: str | Path) -> None:
    """The val data must number its classes as train does (the class index is train's): a category id whose
    name differs, or a val label that train's data set does not know, is a ValueError naming both sources."""
    renamed = [f"{c}: {train.categories[c]!r} in train, {name!r} in val" for c, name in sorted(val.categories.items())
               if c in train.categories and train.categories[c] != name]
    unknown = sorted({int(label) for s in val.scenes for label in s.labels.tolist()} - set(train.categories))
    if unknown:
        renamed.append(f"val labels {unknown[:8]} are no category of train's data set")
    if renamed:
        what = "; ".join(renamed)
        raise ValueError(f"{val_source} does not number its classes as {train_source} does ({what}): train and val "
                         "must share one category list (e.g. COCO's instances_train2017 and instances_val2017)")


def require_disjoint(train, val, train_source: str | Path, val_source: str | Path) -> None:
    """Train and val must not share an image file: a probe or a detector scored on its own training images
    (``--train-split all --val-split all`` of one data set) measures memory, not transfer. ValueError naming
    the count, an example and both sources."""
    shared = {s.file for s in train.scenes} & {s.file for s in val.scenes}
    if shared:
        raise ValueError(f"{train_source} (split {train.split}) and {val_source} (split {val.split}) share "
                         f"{len(shared)} image(s), e.g. {min(shared)}: the scores would be measured on training "
                         "images; give a val split (or --val-scenes) disjoint from the train split")


def class_index(categories: dict[int, str]) -> dict[int, int]:
    """Category id -> contiguous index 0..C-1, in id order (the same for every split of a data set)."""
    return {cat: i for i, cat in enumerate(sorted(categories))}


def multilabel_targets(scenes: Sequence, index: dict[int, int]) -> torch.Tensor:
    """float [N, C]: 1 where the category is present in the scene, -1 where it is present only as VOC
    "difficult" objects (left out of the loss and of the AP, as the VOC devkit does), else 0."""
    targets = torch.zeros(len(scenes), len(index))
    for i, scene in enumerate(scenes):
        difficult = scene.difficult.tolist() if scene.difficult is not None else [False] * len(scene.labels)
        for label, hard in sorted(zip(scene.labels.tolist(), difficult), key=lambda pair: not pair[1]):
            targets[i, index[int(label)]] = -1.0 if hard else 1.0  # difficult first: a plain instance wins
    return targets


class _Resized(Dataset):
    """Decode one scene image and resize it to ``size x size`` (the aspect ratio is not kept)."""

    def __init__(self, files: Sequence[str], size: int):
        self.files, self.size = list(files), size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        image, _ = load_image(self.files[i], max_side=2 * self.size)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return x[0].round().clamp(0, 255).to(torch.uint8)  # [3, S, S]


def decode_images(files: Sequence[str], size: int, workers: int = 0) -> torch.Tensor:
    """uint8 [N, 3, size, size]: every file decoded and resized."""
    loader = DataLoader(_Resized(files, size), batch_size=32, num_workers=workers)
    return torch.cat([batch for batch in loader]) if len(files) else torch.zeros(0, 3, size, size, dtype=torch.uint8)



def augment(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.3, 1.0)) -> torch.Tensor:
    """Random resized crop (square, area share in ``scale``) + horizontal flip, per sample, same size out.

    x: uint8 [B, 3, S, S] -> float [B, 3, S, S] in 0..255. Seeded by ``generator`` only."""
    b, _, s, _ = x.shape
    out = torch.empty(b, 3, s, s, device=x.device)
    area = torch.empty(b).uniform_(*scale, generator=generator)
    pos = torch.rand(b, 2, generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    for i in range(b):
        side = max(8, int(round(s * float(area[i]) ** 0.5)))
        y0, x0 = (pos[i] * (s - side)).long().tolist()
        crop = x[i : i + 1, :, y0 : y0 + side, x0 : x0 + side].float()
        crop = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if flip[i] else crop[0]
    return out
