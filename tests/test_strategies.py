"""Every crop strategy behind one signature, on hand-made scenes."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision

from coarsecrop.boxes import is_valid
from coarsecrop.crops.quality import crop_objectness, crop_sides
from coarsecrop.crops.strategies import (
    STRATEGIES,
    grid_boxes,
    make_strategy,
    standardise_per_shape,
    strategy_parameters,
    suppress,
)
from coarsecrop.data.scenes import Scene

ALL = list(STRATEGIES)
OURS = ["ours", "ours_coarse", "ours_zscore"]
FAST = {name: {} for name in ALL}  # light settings for the tests: ResNet-18 phi
for name in OURS:
    FAST[name] = {"backbone": "resnet18", "sizes": [16, 32, 64, 128]}
FAST["random"] = {"sizes": [16, 32, 64, 128]}


def make_scene(scene_id, height, width, rects, annotated=True):
    """A scene whose objects are filled ellipses inside the given [x1, y1, x2, y2] rectangles."""
    masks = np.zeros((len(rects), height, width), bool)
    yy, xx = np.mgrid[0:height, 0:width]
    for k, (x1, y1, x2, y2) in enumerate(rects):
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks[k] = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1
    boxes = torch.tensor(rects, dtype=torch.float32).reshape(-1, 4)
    return Scene(id=scene_id, file=f"/nowhere/{scene_id}.png", width=width, height=height, boxes=boxes,
                 labels=torch.ones(len(rects), dtype=torch.int64), mask_decoder=lambda: masks,
                 annotated=annotated)


def make_image(scene, seed=0):
    """Textured background with bright objects painted on the scene's masks: uint8 [3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(3, scene.height, scene.width, generator=g) * 60 + 40).to(torch.uint8)
    if len(scene.boxes):
        mask = torch.from_numpy(scene.object_mask())
        colour = torch.tensor([230, 60, 30], dtype=torch.uint8)[:, None]
        img[:, mask] = colour.expand(3, int(mask.sum()))
    return img


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes():
    s = [
        make_scene(1, 96, 128, [[10, 10, 50, 40], [70, 30, 120, 90], [20, 60, 40, 80]]),
        make_scene(2, 96, 128, [[40, 20, 100, 80]]),
        make_scene("c", 80, 64, [[5, 5, 30, 70], [35, 40, 60, 75]]),
        make_scene(4, 96, 128, []),
    ]
    return s, [make_image(sc, i) for i, sc in enumerate(s)]


@pytest.fixture(scope="module")
def built():
    """One instance of every strategy (phi built once per module)."""
    return {name: make_strategy(name, **FAST[name]) for name in ALL}


# ------------------------------------------------------------------------------------------- registry


def test_registry_names_and_contract_attributes():
    assert {"image", "gt", "gtpad", "grid", "poor", "random", "selective_search", "edgebox", "ours"} <= set(ALL)
    assert {"ours_coarse", "ours_zscore"} <= set(ALL)
    for name in ALL:
        s = make_strategy(name)
        assert s.name == name
        assert s.needs_annotations == (name in {"gt", "gtpad", "poor"})
        assert json.loads(json.dumps(s.params)) == s.params
        assert s.params["n"] == 5
        left_out = {"edge_model"} if name == "edgebox" else set()  # None is not recorded (EdgeBox docstring)
        assert set(strategy_parameters(name)) - left_out == set(s.params)


def test_unknown_strategy_and_parameter_list_valid_choices():
    with pytest.raises(ValueError, match="valid: image, gt, gtpad, grid, poor, random"):
        make_strategy("sliding_window")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) nms.*valid: .*nms_iou"):
        make_strategy("ours", nms=0.5)
    with pytest.raises(ValueError, match="valid: n, pad"):
        make_strategy("gtpad", padding=0.3)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        make_strategy("grid", n=0)
    with pytest.raises(ValueError, match="unknown backbone 'vit'"):
        make_strategy("ours", backbone="vit")
    with pytest.raises(ValueError, match="does not exist"):
        make_strategy("ours_coarse", checkpoint="/nowhere/phi.pth")
    with pytest.raises(ValueError, match="sizes must be a non-empty list"):
        make_strategy("random", sizes=[])


def test_annotated_strategies_refuse_plain_images(scenes):
    s, imgs = scenes
    plain = make_scene(9, 96, 128, [], annotated=False)
    with pytest.raises(ValueError, match="needs annotations"):
        make_strategy("gt")([imgs[0]], [plain])
    boxes, _ = make_strategy("grid")([imgs[0]], [plain])[0]
    assert len(boxes) == 5


# ------------------------------------------------------------------------------------------- every strategy


@pytest.mark.parametrize("name", ALL)
def test_valid_boxes_count_and_batch_independence(name, built, scenes):
    s, imgs = scenes
    strategy = built[name]
    together = strategy(imgs, s)
    assert len(together) == len(imgs)
    for (boxes, scores), img in zip(together, imgs):
        H, W = img.shape[-2:]
        assert is_valid(boxes, W, H)
        assert scores.dtype == torch.float32 and scores.shape == (len(boxes),)
        assert len(boxes) <= 5
    expected_counts = {"image": [1] * 4, "gt": [3, 1, 2, 0], "gtpad": [3, 1, 2, 0]}
    counts = [len(b) for b, _ in together]
    if name in {"edgebox", "selective_search"}:  # propose fewer boxes on the object-less noise scene
        assert counts[:3] == [5] * 3 and 1 <= counts[3] <= 5
    else:
        assert counts == expected_counts.get(name, [5] * 4)
    # the same scene alone, or in another batch order, gives identical boxes
    alone = strategy([imgs[2]], [s[2]])[0]
    reordered = strategy([imgs[3], imgs[2], imgs[0]], [s[3], s[2], s[0]])
    for other in (alone, reordered[1]):
        assert torch.equal(other[0], together[2][0]) and torch.equal(other[1], together[2][1])
    assert torch.equal(reordered[2][0], together[0][0])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("H, W", [(1, 1), (5, 7), (3, 300), (300, 3), (20, 17)])
def test_tiny_and_thin_images_get_valid_boxes(name, built, H, W):
    scene = make_scene("tiny", H, W, [[0, 0, W, H]] if min(H, W) >= 2 else [])
    img = make_image(scene)
    (boxes, scores), = built[name]([img], [scene])
    assert is_valid(boxes, W, H), (name, boxes)
    assert len(boxes) >= (0 if name in {"gt", "gtpad"} else 1)
    assert len(boxes) <= 5 and len(scores) == len(boxes)


def test_n_caps_every_strategy(scenes):
    s, imgs = scenes
    for name in ALL:
        out = make_strategy(name, n=2, **FAST[name])(imgs[:2], s[:2])
        assert all(len(b) <= 2 for b, _ in out), name


# ------------------------------------------------------------------------------------------- geometry


def test_gt_keeps_the_largest_boxes(scenes):
    s, imgs = scenes
    (boxes, scores), = make_strategy("gt", n=2)([imgs[0]], [s[0]])
    assert boxes.tolist() == [[70, 30, 120, 90], [10, 10, 50, 40]]
    assert scores.tolist() == [1.0, 1.0]


def test_gtpad_geometry(scenes):
    s, imgs = scenes
    (boxes, _), = make_strategy("gtpad", pad=0.25)([imgs[1]], [s[1]])
    assert boxes.tolist() == [[25, 5, 115, 95]]  # 60 x 60 box grown by 15 px per side
    (boxes, _), = make_strategy("gtpad", pad=0.5)([imgs[0]], [s[0]])
    assert boxes[0].tolist() == [45, 0, 128, 96]  # clipped


def test_grid_geometry():
    expected = torch.tensor([[0, 0, 30, 50], [30, 0, 60, 50], [60, 0, 90, 50], [0, 50, 45, 100], [45, 50, 90, 100]])
    assert torch.allclose(grid_boxes(100, 90), expected.float())


def test_gt_boxes_follow_an_image_decoded_smaller(scenes):
    s, imgs = scenes
    half = imgs[1][:, ::2, ::2].contiguous()  # 48 x 64 decode of the 96 x 128 scene
    (boxes, _), = make_strategy("gt")([half], [s[1]])
    assert boxes.tolist() == [[20, 10, 50, 40]]
    (boxes, scores), = make_strategy("poor")([half], [s[1]])
    assert is_valid(boxes, 64, 48)


def test_poor_crops_reach_the_target_objectness():
    scene = make_scene(5, 128, 160, [[10, 10, 70, 60], [90, 40, 150, 120], [30, 80, 60, 120]])
    strategy = make_strategy("poor", seed=3)
    (boxes, scores), = strategy([make_image(scene)], [scene])
    obj = crop_objectness(boxes, scene.object_mask())
    assert len(boxes) == 5
    assert torch.allclose(obj, scores)
    assert abs(obj.mean().item() - 0.2) < 0.03
    (again, _), = make_strategy("poor", seed=3)([make_image(scene)], [scene])
    assert torch.equal(boxes, again)
    (other, _), = make_strategy("poor", seed=4)([make_image(scene)], [scene])
    assert not torch.equal(boxes, other)


def test_poor_crops_leave_unlabelled_pixels_out_of_their_objectness():
    """VOC's void band is neither object nor background, also on a half-size decode of the scene."""
    scene = make_scene(6, 128, 160, [[10, 10, 70, 60], [90, 40, 150, 120], [30, 80, 60, 120]])
    objects = scene.object_mask()
    void = np.zeros_like(objects)
    void[:, :80] = ~objects[:, :80]  # the left half's background is unlabelled
    scene = replace(scene, void_decoder=lambda: void)
    for image in (make_image(scene), make_image(scene)[:, ::2, ::2].contiguous()):
        (boxes, scores), = make_strategy("poor", seed=3)([image], [scene])
        scale = 160 / image.shape[-1]
        obj = crop_objectness(boxes * scale, objects, void)
        assert torch.allclose(obj, scores, atol=0.05) and not torch.allclose(obj, crop_objectness(boxes * scale, objects))


def test_random_draws_from_the_anchor_set(scenes):
    from coarsecrop.crops.anchors import make_anchors

    s, imgs = scenes
    (boxes, _), = make_strategy("random", sizes=[16, 32, 64, 128], seed=1)([imgs[0]], [s[0]])
    anchors, _ = make_anchors(96, 128, 3, 4, sizes=[16, 32, 64, 128])
    assert all((anchors == b).all(1).any() for b in boxes)
    assert len({tuple(b.tolist()) for b in boxes}) == 5


def test_random_never_repeats_a_clipped_anchor():
    """Large anchors clipped to a small image coincide (a 96 px image: every 128 and 256 px square is the
    whole image); the crops are still distinct, the same for the same seed, and fewer when the image has
    fewer distinct anchors than n."""
    from coarsecrop.crops.strategies.baselines import distinct_boxes

    scene = make_scene(9, 96, 96, [])
    image = make_image(scene)
    for seed in range(20):
        (boxes, _), = make_strategy("random", n=8, seed=seed, sizes=[32, 128, 256], ratios=[1.0])([image], [scene])
        assert len({tuple(b) for b in boxes.tolist()}) == len(boxes) == 8, seed
        (again, _), = make_strategy("random", n=8, seed=seed, sizes=[32, 128, 256], ratios=[1.0])([image], [scene])
        assert torch.equal(boxes, again)
    (boxes, _), = make_strategy("random", n=5, seed=0, sizes=[256], ratios=[1.0])([image], [scene])
    assert boxes.tolist() == [[0, 0, 96, 96]]  # 9 anchors, all the whole image once clipped: one crop
    dup = torch.tensor([[1.0, 1, 2, 2], [0, 0, 1, 1], [1, 1, 2, 2], [0, 0, 1, 1], [3, 3, 4, 4]])
    assert distinct_boxes(dup).tolist() == [0, 1, 4]


@pytest.mark.parametrize("name", ["gt", "gtpad", "poor"])
def test_annotated_size_that_is_no_rescale_of_the_image_is_refused(scenes, name):
    """GT boxes follow an image decoded smaller (same scale on both axes, 1 px of rounding), but an image
    whose shape disagrees with the annotated size (width and height swapped) would stretch them."""
    s, imgs = scenes
    strategy = make_strategy(name)
    odd = torch.zeros(3, 63, 85, dtype=torch.uint8)  # 96 x 128 decoded at max side 85: 63.75 -> 63
    assert len(strategy([odd], [s[1]])) == 1
    swapped = imgs[1].transpose(1, 2).contiguous()  # 128 x 96 pixels, annotated 96 x 128
    with pytest.raises(ValueError, match=r"the image is 96x128 px \(width x height\) but annotated as 128x96"):
        strategy([swapped], [s[1]])


# ------------------------------------------------------------------------------------------- ours


class PeakPhi(torch.nn.Module):
    """A fake phi: a fixed map of stride 32 (its values replace the channel sum), whatever the image."""

    def __init__(self, feature_map):
        super().__init__()
        self.register_buffer("map", torch.as_tensor(feature_map, dtype=torch.float32))

    def forward(self, x):
        return self.map.expand(x.shape[0], 1, *self.map.shape)


def blob(h, w, cy, cx, radius):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))


def test_ours_picks_the_high_objectness_region():
    feature = torch.zeros(8, 8)
    feature[2, 5] = 1.0  # one hot cell: image point ((5 + .5) * 32, (2 + .5) * 32) = (176, 80)
    scene = make_scene(7, 256, 256, [])
    for name in OURS:
        strategy = make_strategy(name, sizes=[32, 64, 128, 256])
        strategy.phi = PeakPhi(feature)
        (boxes, scores), = strategy([make_image(scene)], [scene])
        x1, y1, x2, y2 = boxes[0].tolist()
        assert x1 <= 176 <= x2 and y1 <= 80 <= y2, name
        assert (scores[:-1] >= scores[1:]).all()
        if name == "ours":  # the paper's rule: the mean is highest for the smallest box on the peak
            assert boxes[0].tolist() == [160, 64, 192, 96]
            assert scores[0] > 0.5


def test_the_trap_and_the_coarse_variant():
    """On smooth blobs the paper's rule returns (almost) only the smallest anchors; ``ours_coarse``
    returns larger crops fitted to the blob; neither variant nests one crop inside another."""
    feature = blob(16, 16, 6.0, 9.0, 2.5) + 0.6 * blob(16, 16, 12.0, 3.0, 1.5)  # 512 x 512 image
    scene = make_scene(8, 512, 512, [])
    sides = {}
    for name in OURS:
        strategy = make_strategy(name)
        strategy.phi = PeakPhi(feature)
        (boxes, _), = strategy([make_image(scene)], [scene])
        assert len(boxes) == 5
        sides[name] = crop_sides(boxes)
        if name != "ours":
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    a, b = boxes[i], boxes[j]
                    inter = (torch.minimum(a[2:], b[2:]) - torch.maximum(a[:2], b[:2])).clamp(min=0).prod()
                    smaller = min((a[2:] - a[:2]).prod(), (b[2:] - b[:2]).prod())
                    assert inter / smaller <= 0.8 + 1e-6, name
    assert (sides["ours"] <= 32 + 1e-3).sum() >= 4  # the trap
    assert sides["ours_coarse"].min() >= 64 and sides["ours_coarse"].max() >= 128


def test_objectness_maps_and_input_size(scenes):
    s, imgs = scenes
    strategy = make_strategy("ours", backbone="resnet18", input_size=48, sizes=[16, 32])
    maps = strategy.objectness_maps(imgs)
    assert [tuple(m.shape) for m in maps] == [tuple(i.shape[-2:]) for i in imgs]
    assert all(m.dtype == torch.float32 and 0 <= m.min() and m.max() <= 1 for m in maps)
    out = strategy(imgs, s)
    for (boxes, _), img in zip(out, imgs):
        assert is_valid(boxes, img.shape[-1], img.shape[-2]) and len(boxes) == 5


def test_constant_image_gives_valid_boxes():
    scene = make_scene(0, 64, 64, [])
    black = torch.zeros(3, 64, 64, dtype=torch.uint8)
    for name in OURS:
        strategy = make_strategy(name, sizes=[16, 32])
        strategy.phi = PeakPhi(torch.ones(2, 2))
        (boxes, scores), = strategy([black], [scene])
        assert is_valid(boxes, 64, 64) and 1 <= len(boxes) <= 5
        assert torch.isfinite(scores).all()


def test_suppress_by_iou_and_containment():
    boxes = torch.tensor([[0, 0, 100, 100], [10, 10, 40, 40], [5, 0, 105, 100], [200, 200, 260, 260]]).float()
    scores = torch.tensor([3.0, 2.0, 2.5, 1.0])
    # 2 overlaps 0 (IoU), 1 lies inside 0 (containment): only 0 and 3 pass both rules ...
    assert suppress(boxes, scores, 2, iou=0.5, containment=0.8).tolist() == [0, 3]
    # ... and a third place is filled by the IoU rule alone
    assert suppress(boxes, scores, 5, iou=0.5, containment=0.8).tolist() == [0, 3, 1]
    assert suppress(boxes, scores, 5, iou=0.5, containment=1.0).tolist() == [0, 1, 3]
    assert suppress(boxes, scores, 1, iou=0.5, containment=1.0).tolist() == [0]


def test_standardise_per_shape():
    scores = torch.tensor([[0.1, 10.0], [0.3, 10.0], [0.2, 10.0]]).reshape(-1)  # 3 locations x 2 shapes
    z = standardise_per_shape(scores, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert z.view(3, 2)[:, 0].tolist() == pytest.approx([-1.2247, 1.2247, 0.0], abs=1e-4)
    assert z.view(3, 2)[:, 1].tolist() == [0.0, 0.0, 0.0]  # constant shape: no NaN


def test_pre_nms_top_k_keeps_the_same_crops_as_full_nms():
    """OurCrop.select runs NMS on the best PRE_NMS_TOP anchors only; the picks equal full NMS."""
    import torchvision

    from coarsecrop.crops.anchors import make_anchors

    strategy = make_strategy("ours", n=5, backbone="resnet18")
    anchors, shape_index = make_anchors(480, 640, 15, 20, (32, 64, 128, 256), (0.5, 1.0, 2.0), "cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.rand(len(anchors), generator=g)
        keep, kept = strategy.select(anchors, shape_index, scores, None)
        full = torchvision.ops.nms(anchors, scores, strategy.params["nms_iou"])[:5]
        assert torch.equal(keep, full) and torch.equal(kept, scores[full])


def _per_image(picks, redo, rule):
    """Device picks [B, n] (-1 padded) and redo [B] -> one index tensor per image, ``rule(b)`` where redo."""
    return [rule(b) if redo[b] else p[p >= 0] for b, p in enumerate(picks)]


def test_batched_selection_equals_the_per_image_rule():
    """OurCrop.select_batch (nms_batch: the whole batch on the device) picks what select picks image by image."""
    from coarsecrop.crops.anchors import make_anchors

    strategy = make_strategy("ours", n=5, backbone="resnet18")
    anchors, shape_index = make_anchors(480, 640, 15, 20, (32, 64, 128, 256), (0.5, 1.0, 2.0), "cpu")
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(6, len(anchors), generator=g)
    scores[3] = torch.rand(len(anchors), generator=g).round(decimals=1)  # many ties
    picks, kept, redo = strategy.select_batch(anchors, shape_index, scores, None)
    assert picks.shape == kept.shape == (6, 5) and kept.dtype == torch.float32 and not redo.any()
    for b in range(6):
        keep, kept_b = strategy.select(anchors, shape_index, scores[b], None)
        assert torch.equal(picks[b], keep) and torch.equal(kept[b], kept_b)
    # the coarse variants have their own batched rule: test_batched_spread_selection_equals_the_per_image_rule


def test_torchvision_nms_orders_ties_by_index_and_suppresses_at_the_threshold_in_double():
    """What nms_batch reproduces, pinned: torchvision's CPU NMS takes equal scores lower index first, and
    compares the float32 IoU with the threshold as a double (3/5 as float32 is 0.6000000238 > 0.6)."""
    from coarsecrop.crops.strategies.ours import nms_batch

    apart = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5], [6, 6, 7, 7]]).float()
    tied = torch.tensor([1.0, 2.0, 1.0, 2.0])
    assert torchvision.ops.nms(apart, tied, 0.5).tolist() == [1, 3, 0, 2]
    assert nms_batch(apart, tied[None], 4, 0.5)[0].tolist() == [[1, 3, 0, 2]]
    # IoU 3/5 at 0.6, 3/10 at 0.3, 2/6 at 1/3 (float32 rounds up): suppressed; 7/10 at 0.7 (rounds down), 3/5 at
    # 0.7, 3/10 at 0.31: kept
    for boxes, iou, suppressed in [([[0, 0, 4, 1], [1, 0, 5, 1]], 0.6, True), ([[0, 0, 3, 1], [0, 0, 10, 1]], 0.3, True),
                                   ([[0, 0, 4, 1], [1, 0, 5, 1]], 0.7, False), ([[0, 0, 3, 1], [0, 0, 10, 1]], 0.31, False),
                                   ([[0, 0, 7, 1], [0, 0, 10, 1]], 0.7, False), ([[0, 0, 4, 1], [2, 0, 6, 1]], 1 / 3, True)]:
        boxes, scores = torch.tensor(boxes).float(), torch.tensor([2.0, 1.0])
        expected = [0] if suppressed else [0, 1]
        assert torchvision.ops.nms(boxes, scores, iou).tolist() == expected, (boxes, iou)
        assert nms_batch(boxes, scores[None], 2, iou)[0].tolist() == [expected + [-1] * (2 - len(expected))]
    # a chain of equal scores: 0 suppresses 1, so 2 (overlapping 1 only) survives
    chain = torch.tensor([[0, 0, 4, 4], [1, 0, 5, 4], [3, 0, 7, 4]]).float()
    assert torchvision.ops.nms(chain, torch.ones(3), 0.5).tolist() == [0, 2]
    assert nms_batch(chain, torch.ones(1, 3), 3, 0.5)[0].tolist() == [[0, 2, -1]]


@pytest.mark.parametrize("top", [4, 256])
def test_nms_batch_equals_full_torchvision_nms(top):
    """nms_batch over random batches (many seeds, score ties, IoU thresholds whose float32 rounds up or
    down, images with fewer anchors than the window, n above what survives): every image not marked redo
    gets exactly torchvision's NMS on ALL its anchors, first n; an image is marked redo only where full
    NMS finds more than the window did (a box outside it survives)."""
    from coarsecrop.crops.anchors import make_anchors
    from coarsecrop.crops.strategies.ours import nms_batch

    g = torch.Generator().manual_seed(top)
    layouts = [(16, 16, 1, 1, (8, 16)), (16, 16, 2, 2, (8, 16)), (64, 48, 4, 3, (16, 32, 64)),
               (96, 128, 3, 4, (16, 32, 64, 128)), (480, 640, 15, 20, (32, 64, 128, 256))]
    redone = 0
    for seed in range(40):
        H, W, h, w, sizes = layouts[seed % len(layouts)]
        anchors, _ = make_anchors(H, W, h, w, sizes, (0.5, 1.0, 2.0), "cpu")
        levels = [0, 2, 5, 50][seed % 4]
        iou = [0.5, 0.3, 0.6, 0.7, 0.45][seed % 5]
        n = [5, 1, 7, 40][seed % 4]
        scores = torch.rand(4, len(anchors), generator=g)
        scores = (scores * levels).floor() / levels if levels else scores
        picks, redo = nms_batch(anchors, scores, n, iou, top=top)
        assert picks.shape == (4, n)
        for b in range(4):
            full = torchvision.ops.nms(anchors, scores[b], iou)[:n]
            mine = picks[b][picks[b] >= 0]
            assert (picks[b][len(mine):] == -1).all()
            if redo[b]:
                redone += 1
                assert top < len(anchors) and len(full) > len(mine), (seed, b)
            else:
                assert torch.equal(mine, full), (seed, b, H, levels, iou, n)
    assert redone > 0 if top == 4 else redone == 0


@pytest.mark.parametrize("top", [4, 256])
def test_batched_spread_selection_equals_the_per_image_rule(top):
    """suppress_batch (ours_coarse / ours_zscore on a whole batch, on the device) picks exactly what
    suppress picks image by image: with many ties (ranks on a few levels), with both passes (containment,
    then IoU alone where fewer than n survive), and when the window of the best boxes runs out (top=4)."""
    from coarsecrop.crops.anchors import make_anchors
    from coarsecrop.crops.strategies.ours import suppress, suppress_batch

    g = torch.Generator().manual_seed(0)
    for H, W, h, w, sizes in [(16, 16, 2, 2, (8, 16)), (64, 48, 4, 3, (16, 32, 64))]:
        anchors, _ = make_anchors(H, W, h, w, sizes, (0.5, 1.0, 2.0), torch.device("cpu"))
        for levels, n in [(3, 5), (0, 5), (50, 7), (3, 1)]:
            ranks = torch.rand(6, len(anchors), generator=g, dtype=torch.float64)
            ranks = (ranks * levels).floor() if levels else ranks
            picks, redo = suppress_batch(anchors, ranks, n, 0.5, 0.8, top=top)
            batched = _per_image(picks, redo, lambda b: suppress(anchors, ranks[b], n, 0.5, 0.8))
            for b in range(len(ranks)):
                assert torch.equal(batched[b], suppress(anchors, ranks[b], n, 0.5, 0.8)), (H, levels, n, b)


class CoarsePhi(torch.nn.Module):
    """A fake phi whose stride-32 map is the image's own pixels, quantised to a few levels: each image's
    map depends on that image alone (element-wise), and equal levels give tied box scores."""

    def __init__(self, levels=2.0):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        return (x[:, :, ::32, ::32] * self.levels).round()


def _random_images(seed, sizes):
    g = torch.Generator().manual_seed(seed)
    images = []
    for H, W in sizes:
        img = torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)
        if seed % 2:  # flat patches: equal map values over whole anchors
            img[:, : H // 2] = 128
        images.append(img)
    return images


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("params, window", [({}, None), ({"nms_iou": 0.6, "n": 7}, None), ({}, 12), ({"n": 7}, 40)])
def test_crop_batch_equals_image_by_image_crop(name, params, window, monkeypatch):
    """crop_batch (several image sizes in one call, one host copy, select_batch on the device) returns for
    every image exactly what crop (one image, the per-image select) returns: boxes and scores, over many
    random images with tied scores, images smaller than the window, and a window small enough
    (PRE_NMS_TOP 12 / 40) that some images run out of candidates and are redone by the per-image rule."""
    from coarsecrop.crops.strategies import ours

    if window:
        monkeypatch.setattr(ours, "PRE_NMS_TOP", window)
    strategy = make_strategy(name, sizes=[16, 32, 64, 128], **params)
    strategy.phi = CoarsePhi()
    sizes = [(96, 128), (40, 40), (96, 128), (33, 70), (160, 224), (96, 128), (20, 17)]
    for seed in range(6):
        images = _random_images(seed, sizes)
        scenes = [make_scene(i, H, W, []) for i, (H, W) in enumerate(sizes)]
        together = strategy.crop_batch(images, scenes)
        for (b1, s1), image, scene in zip(together, images, scenes):
            b2, s2 = strategy.crop(image, scene)
            assert b1.dtype == b2.dtype == s1.dtype == s2.dtype == torch.float32
            assert torch.equal(b1, b2) and torch.equal(s1, s2), (name, params, window, seed, image.shape)


SYNCS = {"nonzero", "_local_scalar_dense", "masked_select", "is_nonzero", "equal", "_unique2", "unique_dim",
         "unique_consecutive", "repeat_interleave", "item"}


@pytest.mark.parametrize("name", OURS)
def test_batch_selection_never_reads_the_device(name):
    """From the uint8 batch to the packed picks, Our-Crop's batch path runs no operator that makes a GPU
    wait for the host (item / bool / nonzero / masked indexing ...): recorded on the CPU at the operator
    level, the same operators run on CUDA."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from coarsecrop.crops.strategies.ours import _pack

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bad = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            op = func._schema.name.split("::")[-1]
            indices = args[1] if op.startswith("index") and len(args) > 1 else []
            masks = [i for i in indices or [] if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)]
            if op in SYNCS or masks:
                self.bad.append(op)
            return func(*args, **(kwargs or {}))

    strategy = make_strategy(name, sizes=[16, 32, 64, 128])
    strategy.phi = CoarsePhi()
    batch = torch.stack(_random_images(1, [(96, 128)] * 3))
    with Record() as record:
        anchors, shape_index, scores, table = strategy.scored_anchors(batch)
        picks, kept, redo = strategy.select_batch(anchors, shape_index, scores, table)
        packed = _pack(anchors, picks, kept, redo)
    assert packed.shape == (3, 5, 7)
    assert record.bad == [], record.bad


def test_random_crops_a_batch_as_image_by_image_with_the_same_anchors(scenes):
    """random: the cached anchors, the same boxes in a batch as one image at a time, and the boxes of the
    rule itself (the per-image generator's permutation of make_anchors' distinct boxes)."""
    from coarsecrop.crops.anchors import cached_anchors, make_anchors
    from coarsecrop.crops.strategies.base import _generator
    from coarsecrop.crops.strategies.baselines import distinct_boxes

    s, imgs = scenes
    strategy = make_strategy("random", sizes=[16, 32, 64, 128], seed=3)
    together = strategy(imgs, s)
    for (boxes, scores), img, scene in zip(together, imgs, s):
        alone, _ = strategy([img], [scene])[0]
        H, W = img.shape[-2:]
        anchors, _ = make_anchors(H, W, -(-H // 32), -(-W // 32), [16, 32, 64, 128])
        anchors = anchors[distinct_boxes(anchors)]
        expected = anchors[torch.randperm(len(anchors), generator=_generator(3, scene.id))[:5]]
        assert torch.equal(boxes, alone) and torch.equal(boxes, expected) and scores.tolist() == [1.0] * 5
    first = cached_anchors(96, 128, 3, 4, [16, 32], [1.0])
    assert cached_anchors(96, 128, 3, 4, (16, 32), (1.0,))[0] is first[0]  # built once
    assert all(torch.equal(a, b) for a, b in zip(first, make_anchors(96, 128, 3, 4, (16, 32), (1.0,))))


def test_narrow_backbone_is_accepted_as_phi():
    strategy = make_strategy("ours", n=3, backbone="resnet10_w16", sizes=[16, 32], seed=1)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    from coarsecrop.data.scenes import Scene

    (boxes, scores), = strategy([image], [Scene(id=1, file="x.jpg", width=96, height=64, annotated=False)])
    assert 1 <= len(boxes) <= 3 and is_valid(boxes, 96, 64)


@pytest.mark.parametrize("name", ["selective_search", "edgebox"])
def test_proposals_find_a_lone_object_and_are_seeded(name, built):
    """A proposal method that works finds one bright object on a textured background: its best box
    overlaps the object's with IoU >= 0.5, and rerunning the same image gives the same boxes."""
    scene = make_scene("lone", 96, 128, [[40, 20, 100, 80]])
    img = make_image(scene, seed=5)
    boxes, _ = built[name]([img], [scene])[0]
    best = float(torchvision.ops.box_iou(boxes, scene.boxes).max())
    assert best >= 0.5, (name, boxes.tolist())
    again, _ = built[name]([img], [scene])[0]
    assert torch.equal(again, boxes)


@pytest.mark.parametrize("name", ["ours_coarse", "ours_zscore"])
def test_spread_variants_crop_a_batch_as_image_by_image(name, built, scenes):
    s, imgs = scenes
    strategy = built[name]
    together = strategy(imgs, s)
    original = type(strategy).select_batch
    try:
        type(strategy).select_batch = lambda self, *args: None  # the per-image rule
        alone = strategy(imgs, s)
    finally:
        type(strategy).select_batch = original
    for (b1, s1), (b2, s2) in zip(together, alone):
        assert torch.equal(b1, b2) and torch.equal(s1, s2)


def test_ring_contrast_of_a_batch_equals_each_images_own():
    """ours_coarse ranks a batch with one ring_contrast call on [B, H + 1, W + 1] tables: every row is
    bit for bit the call on that image's table alone (what select and the per-image redo compute)."""
    from coarsecrop.crops.anchors import make_anchors
    from coarsecrop.crops.scoring import summed_area_table
    from coarsecrop.crops.strategies.ours import ring_contrast

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 40, 56, generator=g)
    maps[1] = 0.5  # flat: ring and inside equal
    table = summed_area_table(maps)
    boxes, _ = make_anchors(40, 56, 2, 2, sizes=[8, 16, 64])
    together = ring_contrast(table, boxes, 1.0, 40, 56)
    assert together.shape == (3, len(boxes)) and together.dtype == torch.float64
    for b in range(3):
        assert torch.equal(together[b], ring_contrast(table[b], boxes, 1.0, 40, 56))
