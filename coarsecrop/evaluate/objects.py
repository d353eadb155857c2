"""The ``objects`` transfer task: the object probe's TRANSFER protocol (``coarsecrop.models.probe``), top-1 in percent.

A linear classifier on frozen pooled res5 features of ground-truth object crops. The sensitive measure at
toy scale (issue 4): scene-level pooled features barely separate random from trained trunks on the
synthetic scenes, object crops do. Each GT box is cut from the full-resolution image (exact box, no
context) and resized to ``crop_size`` square by ``coarsecrop.data.objects.object_crops``, the cutter the
trainer's monitor uses too. Its decode-scale fix (this task used to ignore ``load_image``'s scale) changes
nothing here: the images are decoded at full size (scale 1), and on such images the old cutter and
``cut_crop`` give the same pixels (tests/test_probe.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from coarsecrop.data.objects import object_crops
from coarsecrop.evaluate.data import class_index
from coarsecrop.evaluate.features import pooled_features
from coarsecrop.evaluate.metrics import top1
from coarsecrop.models.probe import fit_linear


@dataclass
class ObjectData:
    """GT crops of both splits: uint8 [M, 3, s, s] and class indices int64 [M]."""

    names: list[str]
    train_crops: torch.Tensor
    train_labels: torch.Tensor
    val_crops: torch.Tensor
    val_labels: torch.Tensor


def prepare_data(train, val, crop_size: int = 64, workers: int = 0) -> ObjectData:
    """Cut and resize every GT object of both splits (an undecodable image raises its BadImage)."""
    index = class_index(train.categories)
    train_crops, train_labels = object_crops(train.scenes, crop_size, index=index, workers=workers)
    val_crops, val_labels = object_crops(val.scenes, crop_size, index=index, workers=workers)
    return ObjectData([train.categories[c] for c in sorted(index)], train_crops, train_labels, val_crops, val_labels)


def run_probe(trunk: nn.Module, data: ObjectData, seed: int = 0, device: str | torch.device = "cpu",
              epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4) -> dict:
    """Top-1 (percent) of a linear classifier on frozen pooled res5 features of the crops."""
    device = torch.device(device)
    train_f = pooled_features(trunk, data.train_crops, device)
    val_f = pooled_features(trunk, data.val_crops, device)
    head = fit_linear(train_f, data.train_labels, len(data.names), multilabel=False, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, seed=seed)
    with torch.no_grad():
        logits = head(val_f)
    chance = 100 * float(torch.bincount(data.val_labels).max()) / max(1, len(data.val_labels))
    return {"top1": 100 * top1(logits, data.val_labels), "majority_class": chance,
            "train_objects": len(data.train_labels), "val_objects": len(data.val_labels)}
