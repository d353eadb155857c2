"""Semantic segmentation: an FCN head on a dilated trunk; mIoU, mAcc, aAcc (Table 6 style, percent).

The paper finetunes PSANet on Cityscapes (40k iterations, 3 runs). Here: the trunk's res4 and res5 are
dilated instead of strided (output stride 8 by default, as PSANet/FCN baselines), then FCN's head
(3x3 conv 256 + BN + ReLU + dropout 0.1 + 1x1 classifier), logits upsampled bilinearly to the input.
Targets from the scenes' instance masks: background 0, an object pixel takes its category's index + 1
(a later instance wins where masks overlap, as painting order); COCO crowd regions and VOC's void border
are ignored (255). A Cityscapes root gives its own labels instead: its 19 evaluation classes, the other
labels ignored, as its benchmark (and mmsegmentation) scores it.
Training: SGD momentum 0.9, poly learning rate (power 0.9), weight decay 5e-4, horizontal flips.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.evaluate.data import class_index, decode_images, normalise
from coarsecrop.device import autocast, prepare
from coarsecrop.evaluate.features import stage_channels, stage_outputs
from coarsecrop.evaluate.metrics import confusion, segmentation_scores

IGNORE = 255


def dilate(trunk: nn.Module, output_stride: int = 8) -> nn.Module:
    """Dilate res4 / res5 instead of striding until res5 has ``output_stride``, in place.

    As torchvision's ``replace_stride_with_dilation``: in a dilated stage the first block keeps the
    previous dilation in its 3x3 conv, the later blocks use the new one; shortcuts lose their stride.
    A trunk that already has a smaller stride (a small "cifar" stem: res5 at stride 8) is left alone."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    stride = stage_strides(trunk)["res3"]
    dilation = 1
    for name in ("layer3", "layer4"):
        if stride * 2 <= output_stride:  # this stage may keep its stride
            stride *= 2
            continue
        previous, dilation = dilation, dilation * 2
        for b, block in enumerate(getattr(trunk, name)):
            for conv in block.modules():
                if not isinstance(conv, nn.Conv2d):
                    continue
                conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    d = previous if b == 0 else dilation
                    conv.dilation, conv.padding = (d, d), (d, d)
    return trunk


def stage_strides(trunk: nn.Module, size: int = 64) -> dict[str, int]:
    """Stride of each stage's output, from one eval-mode forward of a ``size``-px dummy."""
    was_training = trunk.training
    trunk.eval()
    try:
        p = next(trunk.parameters())
        with torch.no_grad():
            outs = stage_outputs(trunk, torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        trunk.train(was_training)
    return {k: max(1, round(size / v.shape[-1])) for k, v in outs.items()}


class FCN(nn.Module):
    """Dilated trunk + FCN head: [B, 3, H, W] -> logits [B, num_classes + 1, H, W] (+ 1: background, or the
    first of a source's own classes)."""

    def __init__(self, trunk: nn.Module, num_classes: int, output_stride: int = 8, channels: int = 256):
        super().__init__()
        width = stage_channels(trunk)["res5"]
        self.trunk = dilate(trunk, output_stride)
        self.head = nn.Sequential(
            nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes + 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(stage_outputs(self.trunk, x)["res5"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def semantic_map(scene, index: dict[int, int]) -> np.ndarray:
    """uint8 [H, W]: 0 background, index + 1 for object pixels, 255 (ignored) for COCO's crowd regions and
    VOC's void pixels (object borders, unlabelled regions)."""
    h, w = scene.height, scene.width
    out = np.zeros((h, w), dtype=np.uint8)
    masks = scene.instance_masks()
    for mask, label in zip(masks, scene.labels.tolist()):
        out[mask] = index[int(label)] + 1
    for ignored in (scene.crowd_decoder, scene.void_decoder):
        if ignored is not None:
            out[ignored()] = IGNORE
    return out


def _resize_labels(label: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(label)[None, None].float()
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)


@dataclass
class SegmentationData:
    """images uint8 [N, 3, S, S]; labels uint8 [N, S, S] (0 background, 1..C classes, 255 ignore)."""

    names: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor


def prepare_data(train, val, image_size: int = 128, workers: int = 0) -> SegmentationData:
    """Decode both splits and their class maps at ``image_size``: a source's own pixel labels where it has
    them (Cityscapes: its 19 classes, no background), else background + the categories of the instance masks."""
    index = class_index(train.categories)
    if train.semantic_classes != val.semantic_classes:
        raise ValueError(f"{train.source} and {val.source} label pixels with other classes; give splits of one "
                         "data set")

    def labels(scenes: Sequence) -> torch.Tensor:
        maps = [_resize_labels(s.semantic_decoder() if s.semantic_decoder else semantic_map(s, index), image_size)
                for s in scenes]
        return torch.stack(maps) if maps else torch.zeros(0, image_size, image_size, dtype=torch.uint8)

    return SegmentationData(
        list(train.semantic_classes) or ["background"] + [train.categories[c] for c in sorted(index)],
        decode_images([s.file for s in train.scenes], image_size, workers), labels(train.scenes),
        decode_images([s.file for s in val.scenes], image_size, workers), labels(val.scenes),
    )


def run_semantic(trunk: nn.Module, data: SegmentationData, seed: int = 0, device: str | torch.device = "cpu",
                 epochs: int = 20, lr: float = 0.01, batch_size: int = 8, weight_decay: float = 5e-4,
                 output_stride: int = 8) -> dict:
    """Finetune FCN from a copy of ``trunk``; mIoU, mAcc, aAcc (percent) and per-class IoU on val."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FCN(copy.deepcopy(trunk), len(data.names) - 1, output_stride)
    model = prepare(model, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    n = len(data.train_images)
    total = max(1, epochs * math.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, total - 1) / total) ** 0.9)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        epoch_loss = []
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            x, y = data.train_images[idx].float(), data.train_labels[idx].long()
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            x, y = normalise(x.to(device)), y.to(device)
            with autocast(device):
                loss = F.cross_entropy(model(x).float(), y, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            epoch_loss.append(float(loss.detach()))
        losses.append(sum(epoch_loss) / max(1, len(epoch_loss)))
    model.eval()
    conf = torch.zeros(len(data.names), len(data.names), dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(data.val_images), 16):
            x = normalise(data.val_images[start : start + 16].to(device))
            with autocast(device):
                pred = model(x).argmax(1).cpu()
            conf += confusion(pred, data.val_labels[start : start + 16].long(), len(data.names), IGNORE)
    scores = segmentation_scores(conf)
    return {"mIoU": 100 * scores["mIoU"], "mAcc": 100 * scores["mAcc"], "aAcc": 100 * scores["aAcc"],
            "IoU_per_class": {n: (None if v is None else 100 * v) for n, v in zip(data.names, scores["IoU"])},
            "train_loss_first_epoch": losses[0] if losses else None,
            "train_loss_last_epoch": losses[-1] if losses else None,
            "train_images": len(data.train_images), "val_images": len(data.val_images)}  # after with_masks
