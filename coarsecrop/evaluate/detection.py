"""Faster R-CNN and Mask R-CNN on our trunk, from torchvision's detection models (Tables 3, 4, 6, 12).

Two layouts, as the paper's detectron2 models:

- ``c4`` (R50-C4): the RPN and RoIAlign (14 x 14) on res4 (stride 16); the box head is res5 (its first
  block strides to 7 x 7) followed by an extra BatchNorm, as MoCo's ``Res5ROIHeadsExtraNorm``, then
  average pooling. With masks, the mask branch runs the same res5 (shared weights) on its RoIs and a
  2x deconvolution predicts 14 x 14 masks, like detectron2's C4 mask head.
- ``fpn`` (R50-FPN): FPN on res2..res5 plus a max-pooled P6; 4conv1fc box head and 4-conv mask head
  (detectron2's SyncBN FPN configs), 256 channels (``fpn_channels``).

Normalisation as MoCo's detection configs: BatchNorm everywhere (trunk, FPN, heads), trainable, no frozen
stages. On CUDA under torch.distributed it is converted to SyncBatchNorm; on one process it is plain
BatchNorm over the batch (the same thing with one replica). torchvision pixel mean/std on RGB.

Training: SGD momentum 0.9, weight decay 1e-4, linear warm-up, lr x0.1 at 75% and 92% of the
iterations (detectron2's 18k/22k of 24k), horizontal flips. Evaluation: COCOeval on the val split
(``coco.coco_evaluate``), AP/AP50/AP75 in percent, boxes and (with masks) segments. On a VOC root the box
AP, AP50 and AP75 are PASCAL VOC's instead (``metrics.voc_detection_scores``: the 11-point AP when the
root's name holds 2007, as detectron2's ``PascalVOCDetectionEvaluator`` and so the paper's VOC tables),
COCOeval's kept beside them as ``*_bbox_cocoeval``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from coarsecrop.data.images import load_image
from coarsecrop.data.scenes import voc_year
from coarsecrop.evaluate.coco import coco_evaluate, encode_masks, scenes_to_coco
from coarsecrop.data.images import IMAGENET_MEAN, IMAGENET_STD
from coarsecrop.evaluate.data import class_index
from coarsecrop.device import autocast
from coarsecrop.evaluate.features import NAMES, TrunkStages, stage_channels, stem
from coarsecrop.evaluate.metrics import voc_detection_scores

HEADS = ("c4", "fpn")


class C4Backbone(nn.Module):
    """Stem + res2..res4 of the trunk: [B, 3, H, W] -> {"0": [B, C4, H/16, W/16]}."""

    def __init__(self, trunk: nn.Module, out_channels: int):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"0": self.layer3(self.layer2(self.layer1(stem(self, x))))}


class Res5Head(nn.Module):
    """res5 then an extra BatchNorm (MoCo's Res5ROIHeadsExtraNorm): [N, C4, 14, 14] -> [N, C5, 7, 7]."""

    def __init__(self, layer4: nn.Module, out_channels: int):
        super().__init__()
        self.res5 = layer4
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.res5(x))


class FPNBackbone(nn.Module):
    """res2..res5 -> FPN (BatchNorm) with P6 by max-pooling: {"0".."3", "pool"}, 256 channels each."""

    def __init__(self, trunk: nn.Module, channels: dict[str, int], out_channels: int = 256):
        super().__init__()
        self.body = TrunkStages(trunk, NAMES)
        self.fpn = FeaturePyramidNetwork([channels[n] for n in NAMES], out_channels,
                                         extra_blocks=LastLevelMaxPool(), norm_layer=nn.BatchNorm2d)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def build_detector(trunk: nn.Module, num_classes: int, head: str = "c4", masks: bool = False,
                   min_size: int = 800, max_size: int = 1333,
                   anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512), rois_per_image: int = 512,
                   proposals_train: int = 2000, proposals_test: int = 1000, fpn_channels: int = 256,
                   seed: int = 0) -> nn.Module:
    """Faster R-CNN (``masks=False``) or Mask R-CNN on a copy of ``trunk``.

    num_classes: object classes, without background (torchvision's count is num_classes + 1).
    anchor_sizes: one per FPN level (P2..P6) or all on res4 for C4; the paper's (800-px images) are
    32..512, scale them with the image size at toy scale. rois_per_image (sampled for the box loss),
    proposals_train / proposals_test (RPN proposals kept per image after NMS): detectron2's defaults;
    lower them at toy scale (a few objects per image), where the res5 box head on every RoI dominates
    the CPU time. fpn_channels: FPN and head width (256 as detectron2; narrower for narrow trunks).
    New layers are seeded by ``seed``."""
    if head not in HEADS:
        raise ValueError(f"unknown detection head {head!r}; valid: {', '.join(HEADS)}")
    trunk = copy.deepcopy(trunk).train()
    channels = stage_channels(trunk)
    ratios = (0.5, 1.0, 2.0)
    common = dict(min_size=min_size, max_size=max_size, image_mean=list(IMAGENET_MEAN),
                  image_std=list(IMAGENET_STD), box_batch_size_per_image=rois_per_image,
                  rpn_post_nms_top_n_train=proposals_train, rpn_post_nms_top_n_test=proposals_test)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if head == "c4":
            c4, c5 = channels["res4"], channels["res5"]
            res5 = Res5Head(trunk.layer4, c5)
            parts = dict(
                rpn_anchor_generator=AnchorGenerator((tuple(anchor_sizes),), (ratios,)),
                rpn_pre_nms_top_n_test=6000,  # detectron2's C4 test setting
                box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
                box_head=nn.Sequential(res5, nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                box_predictor=FastRCNNPredictor(c5, num_classes + 1),
            )
            backbone = C4Backbone(trunk, c4)
            if masks:
                parts.update(mask_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
                             mask_head=res5, mask_predictor=MaskRCNNPredictor(c5, 256, num_classes + 1))
        else:
            if len(anchor_sizes) != 5:
                raise ValueError(f"fpn needs 5 anchor sizes (P2..P6), got {list(anchor_sizes)}")
            backbone = FPNBackbone(trunk, channels, fpn_channels)
            f = fpn_channels
            levels = ["0", "1", "2", "3"]
            parts = dict(
                rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in anchor_sizes), (ratios,) * 5),
                rpn_pre_nms_top_n_train=2000,  # per level, as detectron2
                box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
                box_head=FastRCNNConvFCHead((f, 7, 7), [f] * 4, [1024], norm_layer=nn.BatchNorm2d),
                box_predictor=FastRCNNPredictor(1024, num_classes + 1),
            )
            if masks:
                parts.update(mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
                             mask_head=MaskRCNNHeads(f, [f] * 4, 1, norm_layer=nn.BatchNorm2d),
                             mask_predictor=MaskRCNNPredictor(f, f, num_classes + 1))
        model = (MaskRCNN if masks else FasterRCNN)(backbone, **common, **parts)
    return model


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """SyncBatchNorm on CUDA when several processes train together (MoCo's detection setting)."""
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


class DetectionScenes(Dataset):
    """(float [3, H, W] in 0..1, target) per scene; target boxes xyxy, labels 1..C, masks uint8 [K, H, W].

    ``flip_seed`` (training): a horizontal flip with probability 0.5, drawn from (seed, epoch, index)."""

    def __init__(self, scenes: Sequence, index: dict[int, int], masks: bool, flip_seed: int | None = None):
        self.scenes, self.index, self.masks, self.flip_seed = list(scenes), index, masks, flip_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        scene = self.scenes[i]
        image, _ = load_image(scene.file)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255  # [3, H, W]
        boxes = scene.boxes.clone().reshape(-1, 4)
        labels = torch.tensor([self.index[int(c)] + 1 for c in scene.labels.tolist()], dtype=torch.int64)
        target = {"boxes": boxes, "labels": labels}
        if self.masks:
            target["masks"] = torch.from_numpy(scene.instance_masks().astype(np.uint8))
        if self.flip_seed is not None:
            rng = np.random.default_rng([self.flip_seed, self.epoch, i])
            if rng.random() < 0.5:
                w = x.shape[-1]
                x = x.flip(-1)
                target["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
                if self.masks:
                    target["masks"] = target["masks"].flip(-1)
        return x, target


def _collate(batch):
    return tuple(zip(*batch))


@dataclass
class DetectionData:
    """Both splits, the class mapping and the COCO ground truth of the val split."""

    train: list
    val: list
    index: dict[int, int]
    categories: dict[int, str]
    gt: dict
    masks: bool
    voc_year: int | None = None  # the val split is a VOC root of this year: its box AP is VOC's


def prepare_data(train, val, masks: bool = False) -> DetectionData:
    """Index the classes (by category id) and build the val ground truth."""
    index = class_index(train.categories)
    return DetectionData(list(train.scenes), list(val.scenes), index, dict(train.categories),
                         scenes_to_coco(val.scenes, train.categories, masks=masks), masks,
                         voc_year(val.source) if val.format == "voc" else None)


def lr_at(step: int, iterations: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up from base_lr / 1000, then x0.1 at 75% and at 92% of ``iterations``."""
    factor = 0.1 ** sum(step >= int(iterations * m) for m in (0.75, 0.92))
    if step < warmup:
        factor *= 0.001 + (1 - 0.001) * step / warmup
    return base_lr * factor


def train_detector(model: nn.Module, data: DetectionData, iterations: int, batch_size: int = 4,
                   base_lr: float = 0.02, warmup: int = 100, seed: int = 0, device: str | torch.device = "cpu",
                   workers: int = 0) -> list[float]:
    """Train in place for ``iterations`` steps; returns the total loss per step.

    base_lr is per 16 images (the paper's 0.02 at batch 16) and scaled linearly with ``batch_size``."""
    device = torch.device(device)
    model = sync_batchnorm(model, device).to(device).train()
    dataset = DetectionScenes(data.train, data.index, data.masks, flip_seed=seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, num_workers=workers,
                        collate_fn=_collate, drop_last=len(dataset) >= batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=base_lr, momentum=0.9, weight_decay=1e-4)
    lr = base_lr * batch_size / 16
    losses: list[float] = []
    step = 0
    while step < iterations:
        for images, targets in loader:
            if step >= iterations:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, iterations, lr, min(warmup, iterations // 4))
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with autocast(device):
                loss_dict = model(images, targets)
            loss = sum(v.float() for v in loss_dict.values())
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"detection loss is {float(loss.detach())} at step {step}; lower base_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        dataset.epoch += 1
    return losses


@torch.no_grad()
def predict(model: nn.Module, scenes: Sequence, index: dict[int, int], masks: bool,
            device: str | torch.device = "cpu", batch_size: int = 8, workers: int = 0) -> list[dict]:
    """COCO result dicts for ``scenes`` (image_id = position, category ids of the data set)."""
    device = torch.device(device)
    model = model.to(device).eval()
    cat_of = {i + 1: c for c, i in index.items()}
    loader = DataLoader(DetectionScenes(scenes, index, masks=False), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    results, image_id = [], 0
    for images, _ in loader:
        with autocast(device):
            outputs = model([im.to(device) for im in images])
        for out in outputs:
            boxes = out["boxes"].float().cpu()
            scores = out["scores"].float().cpu().tolist()
            labels = out["labels"].cpu().tolist()
            rles = encode_masks((out["masks"][:, 0] > 0.5).cpu().numpy()) if masks else [None] * len(labels)
            for (x1, y1, x2, y2), s, lab, rle in zip(boxes.tolist(), scores, labels, rles):
                r = {"image_id": image_id, "category_id": cat_of[lab], "score": s,
                     "bbox": [x1, y1, x2 - x1, y2 - y1]}
                if rle is not None:
                    r["segmentation"] = rle
                results.append(r)
            image_id += 1
    return results


def run_detection(trunk: nn.Module, data: DetectionData, seed: int = 0, device: str | torch.device = "cpu",
                  head: str = "c4", iterations: int = 300, batch_size: int = 4, base_lr: float = 0.02,
                  warmup: int = 100, min_size: int = 800, max_size: int = 1333,
                  anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512), rois_per_image: int = 512,
                  proposals_train: int = 2000, proposals_test: int = 1000, fpn_channels: int = 256,
                  workers: int = 0,
                  backend: str = "pycocotools") -> dict:
    """Train a detector (Mask R-CNN when ``data.masks``) from ``trunk`` and score the val split.

    Returns AP, AP50, AP75 ... of boxes (VOC's on a VOC root, module docstring) and ``*_seg`` of masks in
    percent, plus the loss curve ends."""
    model = build_detector(trunk, len(data.index), head=head, masks=data.masks, min_size=min_size,
                           max_size=max_size, anchor_sizes=anchor_sizes, rois_per_image=rois_per_image,
                           proposals_train=proposals_train, proposals_test=proposals_test,
                           fpn_channels=fpn_channels, seed=seed)
    losses = train_detector(model, data, iterations, batch_size=batch_size, base_lr=base_lr, warmup=warmup,
                            seed=seed, device=device, workers=workers)
    results = predict(model, data.val, data.index, data.masks, device=device, workers=workers)
    out = {f"{k}_bbox": v for k, v in coco_evaluate(data.gt, results, "bbox", backend).items()}
    if data.voc_year is not None:
        out.update({f"{k}_bbox_cocoeval": out[f"{k}_bbox"] for k in ("AP", "AP50", "AP75")})
        voc = voc_detection_scores(data.gt, results, use_07=data.voc_year == 2007)
        out.update({f"{k}_bbox": v for k, v in voc.items()})
    if data.masks:
        segm = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        out.update({f"{k}_seg": v for k, v in coco_evaluate(data.gt, segm, "segm", backend).items()})
    k = max(1, len(losses) // 10)
    out["loss_first"] = sum(losses[:k]) / k
    out["loss_last"] = sum(losses[-k:]) / k
    out["detections"] = len(results)
    out["train_images"], out["val_images"] = len(data.train), len(data.val)  # after with_masks (instance)
    return out
