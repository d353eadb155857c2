"""A cheap quality monitor: the object probe's MONITOR protocol (``coarsecrop.models.probe``).

Frozen trunk features of the GT object crops (``coarsecrop.data.objects``) of the scenes' train split
train a kNN classifier (or a logistic-regression linear probe); top-1 accuracy on the val split's object
crops is the score. It runs in seconds at epoch ends, and its value is only meaningful beside the same
probe on a randomly initialised trunk of the same architecture, which is computed once at the start and
stored.
"""

from __future__ import annotations

import torch
from torch import nn

from coarsecrop.data.objects import object_crops
from coarsecrop.data.scenes import open_scenes
from coarsecrop.models.probe import MONITOR, frozen_features, monitor_scores, recalibrate_bn


def probe_splits(open_scenes, scenes: str, images: str | None, val_every: int = 5):
    """(train scenes, val scenes): the source's own train / val splits when it has them (our synthetic
    scenes, VOC ImageSets), else every ``val_every``-th annotated scene is val (e.g. one COCO json)."""
    try:
        return open_scenes(scenes, images=images, split="train"), open_scenes(scenes, images=images, split="val")
    except ValueError:
        everything = [s for s in open_scenes(scenes, images=images) if len(s.boxes)]
        return ([s for i, s in enumerate(everything) if i % val_every],
                [s for i, s in enumerate(everything) if i % val_every == 0])


class ObjectProbe:
    """Object crops of the train and val splits, decoded once; ``score(backbone)`` -> {probe: top-1}.
    min_side: only objects at least this many pixels (sqrt of the GT box area, ``data.objects.box_side``);
    0 = every object."""

    def __init__(self, scenes: str, probes: tuple[str, ...], size: int, max_crops: int = 2000,
                 layer: str = "", device: torch.device | str = "cpu", seed: int = 0, images: str | None = None,
                 min_side: float = 0):
        self.probes, self.layer, self.device = probes, layer, torch.device(device)
        train, val = probe_splits(open_scenes, scenes, images)
        if not any(len(s.boxes) for s in train) or not any(len(s.boxes) for s in val):
            raise ValueError(f"monitor: {scenes} needs annotated train and val splits (GT boxes with labels); "
                             f"set monitor_scenes to a data set that has them, or monitor=none")
        self.train_x, self.train_y = object_crops(train, size, max_crops, seed, skip_bad=True, min_side=min_side)
        self.val_x, self.val_y = object_crops(val, size, max_crops, seed + 1, skip_bad=True, min_side=min_side)
        if min_side > 0 and (not len(self.train_x) or not len(self.val_x)):
            raise ValueError(f"monitor: no object of {scenes} is at least {min_side} px (sqrt of its box area) "
                             f"in one of the splits; lower monitor_min_side")

    def __len__(self) -> int:
        return len(self.train_x) + len(self.val_x)

    def score_recalibrated(self, backbone: nn.Module) -> dict[str, float]:
        """``score`` of the trunk with BN statistics re-estimated on the train split's object crops."""
        return self.score(recalibrate_bn(backbone, self.train_x, self.device, MONITOR))

    def score(self, backbone: nn.Module) -> dict[str, float]:
        train_f = frozen_features(backbone, self.train_x, self.device, MONITOR, self.layer)
        val_f = frozen_features(backbone, self.val_x, self.device, MONITOR, self.layer)
        return monitor_scores(train_f, self.train_y, val_f, self.val_y, self.probes)
