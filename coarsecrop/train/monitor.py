"""A cheap quality monitor: the object probe.

Frozen trunk features of the GT object crops of the scenes' train split train a kNN classifier (or a
logistic-regression linear probe); top-1 accuracy on the val split's object crops is the score. It
runs in seconds at epoch ends, and its value is only meaningful beside the same probe on a randomly
initialised trunk of the same architecture, which is computed once at the start and stored.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.data.images import IMAGENET_MEAN, IMAGENET_STD, BadImage, load_image
from coarsecrop.data.pseudo import cut_crop
from coarsecrop.data.scenes import open_scenes

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def object_crops(scenes, size: int, max_crops: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """GT object crops of annotated scenes, resized to ``size``: (uint8 [M, 3, size, size], int64 labels [M]).

    At most ``max_crops``, a seeded subset of the (scene, object) pairs when there are more."""
    pairs = [(i, k) for i, scene in enumerate(scenes) for k in range(len(scene.boxes))]
    if len(pairs) > max_crops:
        keep = np.random.default_rng(seed).choice(len(pairs), size=max_crops, replace=False)
        pairs = [pairs[j] for j in sorted(keep)]
    crops, labels, loaded = [], [], {}
    for i, k in pairs:
        scene = scenes[i]
        if i not in loaded:
            loaded.clear()  # pairs are in scene order: keep one decoded image at a time
            try:
                loaded[i] = load_image(scene.file)
            except BadImage:
                loaded[i] = None
        if loaded[i] is None:
            continue
        image, scale = loaded[i]
        crop = cut_crop(image, scene.boxes[k].tolist(), scale).unsqueeze(0).float()  # [1, 3, h, w]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crops.append(crop.round().clamp(0, 255).to(torch.uint8))
        labels.append(int(scene.labels[k]))
    if not crops:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros((0,), dtype=torch.int64)
    return torch.cat(crops), torch.tensor(labels, dtype=torch.int64)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _pool(output) -> torch.Tensor:
    """[B, C, h, w] -> GAP; [B, N, C] tokens -> mean; [B, C] as is."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if output.ndim == 4:
        return output.float().mean(dim=(2, 3))
    if output.ndim == 3:
        return output.float().mean(dim=1)
    return output.float().flatten(1)


@torch.no_grad()
def extract_features(backbone: nn.Module, crops: torch.Tensor, device: torch.device, layer: str = "",
                     batch_size: int = 256) -> torch.Tensor:
    """Frozen features [M, C] (float32, CPU) of uint8 crops [M, 3, S, S]; ``layer`` names a submodule to pool."""
    captured = {}
    hook = None
    if layer:
        modules = dict(backbone.named_modules())
        if layer not in modules:
            raise ValueError(f"monitor_layer {layer!r} is not a submodule of the backbone; "
                             f"top-level ones: {', '.join(n for n, _ in backbone.named_children())}")
        hook = modules[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    features = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with _eval_mode(backbone), autocast:
            for start in range(0, len(crops), batch_size):
                x = crops[start:start + batch_size].to(device).float().div_(255)
                x = (x - MEAN.to(device)) / STD.to(device)
                out = backbone(x)
                features.append(_pool(captured["x"] if layer else out).cpu())
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(features) if features else torch.zeros((0, 0))


def knn_top1(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted kNN on cosine similarity (InstDisc / DINO protocol): top-1 accuracy on the test set."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = 0
    for start in range(0, len(test_x), 1024):
        sim = test_x[start:start + 1024] @ train_x.T                     # [b, Ntrain]
        top_sim, top_idx = sim.topk(k, dim=1)                             # [b, k]
        votes = torch.zeros(len(sim), num_classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += int((votes.argmax(1) == test_y[start:start + 1024]).sum())
    return correct / max(1, len(test_x))


def linear_top1(train_x, train_y, test_x, test_y, weight_decay: float = 1e-3, steps: int = 100) -> float:
    """Multinomial logistic regression (L-BFGS, L2) on standardised features: top-1 on the test set."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    linear = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train_x), train_y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float((linear(test_x).argmax(1) == test_y).float().mean())


@torch.no_grad()
def recalibrate_bn(backbone: nn.Module, crops: torch.Tensor, device: torch.device, batch_size: int = 256) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm statistics are re-estimated on ``crops`` (train-mode
    forwards, cumulative average, no gradients); the weights stay as they are.

    A random init keeps BN's initial running statistics (mean 0, var 1), a trained trunk has statistics
    of the data; recalibrating the random init separates what training learned from what BN merely
    measured. (At toy scale the latter alone moved the probe by several points.)"""
    model = copy.deepcopy(backbone)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(crops), batch_size):
        x = crops[start:start + batch_size].to(device).float().div_(255)
        model((x - MEAN.to(device)) / STD.to(device))
    return model.eval()


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
    """Object crops of the train and val splits, decoded once; ``score(backbone)`` -> {probe: top-1}."""

    def __init__(self, scenes: str, probes: tuple[str, ...], size: int, max_crops: int = 2000,
                 layer: str = "", device: torch.device | str = "cpu", seed: int = 0, images: str | None = None):
        self.probes, self.layer, self.device = probes, layer, torch.device(device)
        train, val = probe_splits(open_scenes, scenes, images)
        if not any(len(s.boxes) for s in train) or not any(len(s.boxes) for s in val):
            raise ValueError(f"monitor: {scenes} needs annotated train and val splits (GT boxes with labels); "
                             f"set monitor_scenes to a data set that has them, or monitor=none")
        self.train_x, self.train_y = object_crops(train, size, max_crops, seed)
        self.val_x, self.val_y = object_crops(val, size, max_crops, seed + 1)

    def __len__(self) -> int:
        return len(self.train_x) + len(self.val_x)

    def score_recalibrated(self, backbone: nn.Module) -> dict[str, float]:
        """``score`` of the trunk with BN statistics re-estimated on the train split's object crops."""
        return self.score(recalibrate_bn(backbone, self.train_x, self.device))

    def score(self, backbone: nn.Module) -> dict[str, float]:
        train_f = extract_features(backbone, self.train_x, self.device, self.layer)
        val_f = extract_features(backbone, self.val_x, self.device, self.layer)
        result = {}
        if "knn" in self.probes:
            result["knn_top1"] = knn_top1(train_f, self.train_y, val_f, self.val_y)
        if "linear" in self.probes:
            result["linear_top1"] = linear_top1(train_f, self.train_y, val_f, self.val_y)
        return result
