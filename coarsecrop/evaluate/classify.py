"""Single-label transfer (Table 7): a linear probe on any torchvision ImageFolder, top-1 in percent.

Layout: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (``test`` is accepted for val).
Images are decoded with ``coarsecrop.data.images.load_image`` (any format, EXIF, 16-bit ...) and resized
to ``image_size`` square; features are the frozen trunk's pooled res5, as the other probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.datasets import ImageFolder

from coarsecrop.evaluate.data import decode_images
from coarsecrop.evaluate.features import pooled_features
from coarsecrop.evaluate.metrics import top1
from coarsecrop.models.probe import fit_linear


@dataclass
class FolderData:
    names: list[str]
    train_images: torch.Tensor  # uint8 [N, 3, S, S]
    train_labels: torch.Tensor  # int64 [N]
    val_images: torch.Tensor
    val_labels: torch.Tensor


def _split(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise ValueError(f"{root}: task 'classify' expects an ImageFolder layout {root}/{names[0]}/<class>/<image> "
                     f"(found no {' or '.join(names)} folder)")


def prepare_data(root: str | Path, image_size: int = 96, workers: int = 0) -> FolderData:
    """Read ROOT/train and ROOT/val (or test) as ImageFolders; both must have the same classes."""
    root = Path(root)
    try:
        train = ImageFolder(str(_split(root, ("train",))))
        val = ImageFolder(str(_split(root, ("val", "test"))))
    except FileNotFoundError as err:  # ImageFolder: a class folder without images
        raise ValueError(f"{root}: {err}") from err
    if train.classes != val.classes:
        raise ValueError(f"{root}: train and val have different classes: {train.classes} vs {val.classes}")
    return FolderData(
        train.classes,
        decode_images([p for p, _ in train.samples], image_size, workers), torch.tensor(train.targets),
        decode_images([p for p, _ in val.samples], image_size, workers), torch.tensor(val.targets),
    )


def run_probe(trunk: nn.Module, data: FolderData, seed: int = 0, device: str | torch.device = "cpu",
              epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4) -> dict:
    """Top-1 (percent) of a linear classifier on frozen pooled features."""
    device = torch.device(device)
    head = fit_linear(pooled_features(trunk, data.train_images, device), data.train_labels, len(data.names),
                      multilabel=False, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed)
    with torch.no_grad():
        logits = head(pooled_features(trunk, data.val_images, device))
    return {"top1": 100 * top1(logits, data.val_labels), "classes": len(data.names),
            "train_images": len(data.train_labels), "val_images": len(data.val_labels)}
