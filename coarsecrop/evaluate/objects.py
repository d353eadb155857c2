"""Object probe: a linear classifier on frozen features of ground-truth object crops (top-1, percent).

The sensitive measure at toy scale (issue 4): scene-level pooled features barely separate random from
trained trunks on the synthetic scenes, object crops do. Each GT box is cut from the full-resolution
image (exact box, no context) and resized to ``crop_size`` square.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from coarsecrop.data.images import load_image
from coarsecrop.evaluate.data import class_index
from coarsecrop.evaluate.features import pooled_features
from coarsecrop.evaluate.metrics import top1
from coarsecrop.evaluate.probe import fit_linear


@dataclass
class ObjectData:
    """GT crops of both splits: uint8 [M, 3, s, s] and class indices int64 [M]."""

    names: list[str]
    train_crops: torch.Tensor
    train_labels: torch.Tensor
    val_crops: torch.Tensor
    val_labels: torch.Tensor


class _Crops(Dataset):
    """All GT crops of one scene, resized: (uint8 [K, 3, s, s], int64 [K])."""

    def __init__(self, scenes: Sequence, index: dict[int, int], size: int):
        self.scenes, self.index, self.size = list(scenes), index, size

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene = self.scenes[i]
        if len(scene.boxes) == 0:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        image, _ = load_image(scene.file)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()  # [3, H, W]
        h, w = x.shape[1:]
        crops = []
        for x1, y1, x2, y2 in scene.boxes.tolist():
            c0, r0 = min(int(x1), w - 1), min(int(y1), h - 1)
            c1, r1 = max(c0 + 1, min(w, int(np.ceil(x2)))), max(r0 + 1, min(h, int(np.ceil(y2))))
            crop = F.interpolate(x[None, :, r0:r1, c0:c1], size=(self.size, self.size), mode="bilinear",
                                 antialias=True, align_corners=False)
            crops.append(crop[0].round().clamp(0, 255).to(torch.uint8))
        labels = torch.tensor([self.index[int(c)] for c in scene.labels.tolist()], dtype=torch.long)
        return torch.stack(crops), labels


def _collect(scenes: Sequence, index: dict[int, int], size: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(_Crops(scenes, index, size), batch_size=None, num_workers=workers)
    crops, labels = zip(*loader) if len(scenes) else ((), ())
    if not crops:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    return torch.cat(crops), torch.cat(labels)


def prepare_data(train, val, crop_size: int = 64, workers: int = 0) -> ObjectData:
    """Cut and resize every GT object of both splits."""
    index = class_index(train.categories)
    train_crops, train_labels = _collect(train.scenes, index, crop_size, workers)
    val_crops, val_labels = _collect(val.scenes, index, crop_size, workers)
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
