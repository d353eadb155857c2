"""The one object probe (issue 12): ``data.objects`` (one cutter), ``models.probe`` (one feature pass, the
classifiers, the MONITOR and TRANSFER protocols) give bit-for-bit what the two probes before it gave.

The ``_old_*`` functions below are frozen copies of the code before the merge (train/monitor.py's
object_crops / extract_features, evaluate/objects.py's _Crops, evaluate/features.py's pooled_features):
the reference the new code must match exactly, with no hard-coded numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coarsecrop.data.images import IMAGENET_MEAN, IMAGENET_STD, BadImage, load_image
from coarsecrop.data.objects import box_side, object_crops, resize_crop
from coarsecrop.data.pseudo import cut_crop
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.evaluate import objects
from coarsecrop.evaluate.checkpoints import make_trunk
from coarsecrop.evaluate.data import class_index, open_split
from coarsecrop.evaluate.features import pooled_features, stage_outputs
from coarsecrop.models.probe import MONITOR, fit_linear, frozen_features, knn_top1, linear_top1
from coarsecrop.train.monitor import ObjectProbe

TINY = "resnet10_w8"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ frozen copies of the old code

def _old_objects_cut(image: np.ndarray, box, size: int) -> torch.Tensor:
    """evaluate/objects.py's _Crops rule before issue 12 (int / ceil, no decode scale): uint8 [3, s, s]."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()  # [3, H, W]
    h, w = x.shape[1:]
    x1, y1, x2, y2 = box
    c0, r0 = min(int(x1), w - 1), min(int(y1), h - 1)
    c1, r1 = max(c0 + 1, min(w, int(np.ceil(x2)))), max(r0 + 1, min(h, int(np.ceil(y2))))
    crop = F.interpolate(x[None, :, r0:r1, c0:c1], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
    return crop[0].round().clamp(0, 255).to(torch.uint8)


def _old_monitor_crops(scenes, size: int, max_crops: int, seed: int = 0):
    """train/monitor.py's object_crops before issue 12."""
    pairs = [(i, k) for i, scene in enumerate(scenes) for k in range(len(scene.boxes))]
    if len(pairs) > max_crops:
        keep = np.random.default_rng(seed).choice(len(pairs), size=max_crops, replace=False)
        pairs = [pairs[j] for j in sorted(keep)]
    crops, labels = [], []
    for i, k in pairs:
        image, scale = load_image(scenes[i].file)
        crop = cut_crop(image, scenes[i].boxes[k].tolist(), scale).unsqueeze(0).float()
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crops.append(crop.round().clamp(0, 255).to(torch.uint8))
        labels.append(int(scenes[i].labels[k]))
    return torch.cat(crops), torch.tensor(labels, dtype=torch.int64)


@torch.no_grad()
def _old_monitor_features(backbone, crops, layer: str = "", batch_size: int = 256) -> torch.Tensor:
    """train/monitor.py's extract_features before issue 12 (CPU path)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    captured = {}
    hook = dict(backbone.named_modules())[layer].register_forward_hook(
        lambda m, i, o: captured.__setitem__("x", o)) if layer else None
    was_training = backbone.training
    backbone.eval()
    features = []
    for start in range(0, len(crops), batch_size):
        x = crops[start:start + batch_size].float().div_(255)
        out = backbone((x - mean) / std)
        out = captured["x"] if layer else out
        features.append(out.float().mean(dim=(2, 3)))
    backbone.train(was_training)
    if hook is not None:
        hook.remove()
    return torch.cat(features)


@torch.no_grad()
def _old_pooled_features(trunk, images, batch_size: int = 64) -> torch.Tensor:
    """evaluate/features.py's pooled_features before issue 12 (CPU path)."""
    trunk.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    feats = []
    for start in range(0, len(images), batch_size):
        x = (images[start:start + batch_size].float() - mean) / std
        feats.append(stage_outputs(trunk, x)["res5"].float().mean((2, 3)))
    return torch.cat(feats)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """30 built-in scenes of 80 px, a quarter of them val."""
    root = tmp_path_factory.mktemp("probe_scenes")
    write_scenes(root, num_images=30, seed=3, size=80, val_fraction=0.25, progress=False)
    return root


@pytest.fixture(scope="module")
def splits(scenes):
    return open_split(scenes, "train"), open_split(scenes, "val")


# ------------------------------------------------------------------ one cutter

# fractional, out-of-frame (right / bottom / both), 1-px, sub-pixel, left / top edge in (-1, 0),
# a corner at or past the far edge, the whole frame
BOXES = [(3.2, 4.7, 20.5, 17.01), (0, 0, 40, 30), (30.5, 20.5, 55, 44), (39, 29, 40, 30), (12, 9, 13, 10),
         (11.9, 9.9, 12, 10), (-0.5, -0.9, 8.2, 6), (38.2, 5, 80, 12), (40, 30, 41, 31), (41.5, 31.5, 45, 40),
         (0.0, 0.0, 0.4, 0.4), (5, 5, 5, 5), (17.999, 3.001, 18.001, 29.999)]


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("size", [1, 7, 32])
def test_shared_cutter_gives_the_old_objects_pixels_at_scale_1(box, size):
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    new = resize_crop(cut_crop(image, list(box), 1.0), size)
    assert torch.equal(new, _old_objects_cut(image, box, size))


def test_cutter_honours_the_decode_scale_and_clamps_negative_corners():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # an image decoded at half size (scale 2)
    box = [8.0, 6.0, 50.0, 34.0]  # original pixels
    assert torch.equal(cut_crop(small, box, 2.0), cut_crop(small, [v / 2 for v in box], 1.0))
    assert cut_crop(small, box, 2.0).shape == (3, 17 - 3, 25 - 4)
    # a corner a pixel or more outside the frame starts at 0 (the old int() rule sliced from the far edge)
    assert torch.equal(cut_crop(small, [-3, -2, 5, 4]), cut_crop(small, [0, 0, 5, 4]))


# ------------------------------------------------------------------ crops, features, scores: bit-for-bit

def test_monitor_and_objects_crops_are_the_old_ones(splits):
    train, val = splits
    index = class_index(train.categories)
    data = objects.prepare_data(train, val, crop_size=24)
    old = [torch.stack([_old_objects_cut(load_image(s.file)[0], b, 24) for b in s.boxes.tolist()])
           for s in train.scenes if len(s.boxes)]
    assert torch.equal(data.train_crops, torch.cat(old))
    assert data.train_labels.tolist() == [index[int(c)] for s in train.scenes for c in s.labels.tolist()]
    for max_crops in (10_000, 25):  # everything, and a seeded subset
        crops, labels = object_crops(train.scenes, 24, max_crops, seed=4, skip_bad=True)
        old_crops, old_labels = _old_monitor_crops(train.scenes, 24, max_crops, seed=4)
        assert torch.equal(crops, old_crops) and torch.equal(labels, old_labels)
    assert len(object_crops(train.scenes, 24, 25, seed=4)[0]) == 25


def test_min_side_drops_the_objects_below_it_and_0_keeps_all(scenes, splits):
    train, _ = splits
    sides = [box_side(b) for s in train.scenes for b in s.boxes.tolist()]
    threshold = float(np.median(sides))
    all_crops, all_labels = object_crops(train.scenes, 24)
    zero_crops, zero_labels = object_crops(train.scenes, 24, min_side=0)
    assert torch.equal(zero_crops, all_crops) and torch.equal(zero_labels, all_labels)
    crops, labels = object_crops(train.scenes, 24, min_side=threshold)
    keep = [side >= threshold for side in sides]
    assert 0 < len(crops) == sum(keep) < len(sides)
    assert torch.equal(crops, all_crops[torch.tensor(keep)]) and torch.equal(labels, all_labels[torch.tensor(keep)])
    assert len(object_crops(train.scenes, 24, max_crops=3, seed=4, min_side=threshold)[0]) == 3
    assert box_side([2, 3, 6, 12]) == 6.0
    probe = ObjectProbe(str(scenes), ("knn",), size=24, min_side=threshold)
    assert len(probe.train_x) == sum(keep)
    with pytest.raises(ValueError, match="monitor_min_side"):
        ObjectProbe(str(scenes), ("knn",), size=24, min_side=10 * max(sides))


def test_protocol_features_and_scores_are_the_old_ones(scenes, splits):
    trunk = make_trunk(TINY, seed=0).train()  # the trainer's trunk is in train mode
    probe = ObjectProbe(str(scenes), ("knn", "linear"), size=24, max_crops=60)
    for layer in ("", "layer3"):
        probe.layer = layer
        train_f = frozen_features(trunk, probe.train_x, torch.device("cpu"), MONITOR, layer)
        old_train = _old_monitor_features(trunk, probe.train_x, layer)
        old_val = _old_monitor_features(trunk, probe.val_x, layer)
        assert torch.equal(train_f, old_train)
        assert probe.score(trunk) == {"knn_top1": knn_top1(old_train, probe.train_y, old_val, probe.val_y),
                                      "linear_top1": linear_top1(old_train, probe.train_y, old_val, probe.val_y)}
    assert trunk.training  # the monitor hands the trunk back in the mode it had

    data = objects.prepare_data(*splits, crop_size=24)
    run = objects.run_probe(make_trunk(TINY, seed=0), data, epochs=20)
    old_train, old_val = (_old_pooled_features(make_trunk(TINY, seed=0), x) for x in (data.train_crops, data.val_crops))
    assert torch.equal(pooled_features(make_trunk(TINY, seed=0), data.train_crops, torch.device("cpu")), old_train)
    head = fit_linear(old_train, data.train_labels, len(data.names), multilabel=False, epochs=20)
    with torch.no_grad():
        expected = 100 * float((head(old_val).argmax(1) == data.val_labels).float().mean())
    assert run["top1"] == expected


def test_monitor_skips_an_undecodable_image_and_the_task_names_it(tmp_path, splits):
    train, _ = splits
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    scenes = list(train.scenes[:3])
    scenes[1] = dataclasses.replace(scenes[1], file=str(broken))
    crops, labels = object_crops(scenes, 16, skip_bad=True)
    assert len(crops) == len(labels) == len(scenes[0].boxes) + len(scenes[2].boxes)
    with pytest.raises(BadImage, match="broken.png"):
        object_crops(scenes, 16)

