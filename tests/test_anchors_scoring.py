"""Anchors, the SCDA objectness map and summed-area box scoring (Sec. 3.3)."""

import math

import pytest
import torch

from coarsecrop.boxes import is_valid
from coarsecrop.crops.anchors import (
    anchor_shapes,
    feature_size,
    make_anchors,
    scaled_anchor_sizes,
    shape_size_index,
)
from coarsecrop.crops.objectness import minmax_normalise, objectness_maps
from coarsecrop.crops.scoring import box_means, pixel_bounds, score_boxes, summed_area_table


# ------------------------------------------------------------------------------------------- anchors


def test_anchor_count_is_12_per_location():
    boxes, shape_index = make_anchors(480, 640, 15, 20)
    assert boxes.shape == (12 * 15 * 20, 4)
    assert boxes.dtype == torch.float32
    assert shape_index.shape == (12 * 15 * 20,)
    assert shape_index[:12].tolist() == list(range(12))


def test_anchor_shapes_follow_torchvision_ratio_convention():
    shapes = anchor_shapes((32, 64, 128, 256), (0.5, 1.0, 2.0))  # [12, 2] (w, h), ratio-major
    w, h = shapes[:, 0], shapes[:, 1]
    assert torch.allclose(w * h, torch.tensor([32.0, 64, 128, 256]).repeat(3) ** 2, rtol=1e-5)
    assert torch.allclose(h / w, torch.tensor([0.5] * 4 + [1.0] * 4 + [2.0] * 4), rtol=1e-5)
    assert shape_size_index().tolist() == [0, 1, 2, 3] * 3


def test_anchor_centres_use_the_downsampling_ratio():
    H, W, h, w = 480, 640, 15, 20
    boxes, shape_index = make_anchors(H, W, h, w, sizes=(16,), ratios=(1.0,))  # small: no clipping inside
    centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)
    i, j = 7, 11
    k = i * w + j
    assert centres[k].tolist() == pytest.approx([(j + 0.5) * W / w, (i + 0.5) * H / h])
    inner = boxes[k]
    assert (inner[2] - inner[0]).item() == pytest.approx(16)
    assert (inner[3] - inner[1]).item() == pytest.approx(16)


def test_anchors_are_clipped_to_the_image():
    boxes, _ = make_anchors(100, 60, 4, 2)
    assert is_valid(boxes, 60, 100)
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 60 and boxes[:, 3].max() == 100
    # the 256-px anchor at the first location covers the whole (smaller) image after clipping
    assert boxes[3].tolist() == [0, 0, 60, 100]


def test_clip_boxes_widens_short_boxes_inside_the_image():
    """clip_boxes (element-wise, no masked assignment): clamp, then a side under 1 px becomes [lo, lo + 1],
    or [limit - 1, limit] at the far edge; the same values as the masked-assignment rule it replaced."""
    from coarsecrop.boxes import clip_boxes

    boxes = torch.tensor([[-5, -5, 200, 200], [3.25, 4, 3.75, 4.5], [59.5, 99.9, 70, 120], [10, 10, 9, 9],
                          [0, 0, 0.2, 50]], dtype=torch.float64)
    assert clip_boxes(boxes, 60, 100).tolist() == [[0, 0, 60, 100], [3.25, 4, 4.25, 5], [59, 99, 60, 100],
                                                   [10, 10, 11, 11], [0, 0, 1, 50]]
    g = torch.Generator().manual_seed(0)
    boxes = (torch.rand(5000, 4, generator=g) * 1.4 - 0.2) * torch.tensor([60, 100, 60, 100])
    boxes[::3, 2] = boxes[::3, 0] + torch.rand(len(boxes[::3]), generator=g)
    masked = boxes.clone()
    masked[:, 0::2], masked[:, 1::2] = masked[:, 0::2].clamp(0, 60), masked[:, 1::2].clamp(0, 100)
    for lo, hi, limit in ((0, 2, 60), (1, 3, 100)):
        short = masked[:, hi] - masked[:, lo] < 1
        masked[short, hi] = torch.clamp(masked[short, lo] + 1, max=limit)
        masked[short, lo] = masked[short, hi] - 1
    assert torch.equal(clip_boxes(boxes, 60, 100), masked)


@pytest.mark.parametrize("H, W", [(1, 1), (3, 300), (300, 3), (20, 17)])
def test_anchors_valid_for_tiny_and_thin_images(H, W):
    h, w = feature_size(H, W)
    boxes, _ = make_anchors(H, W, h, w)
    assert len(boxes) == 12 * h * w
    assert is_valid(boxes, W, H)


def test_feature_size_matches_a_resnet():
    from coarsecrop.models.backbones import build_backbone

    net = build_backbone("resnet18")
    for H, W in [(480, 640), (257, 31), (3, 300)]:
        with torch.no_grad():
            out = net(torch.zeros(1, 3, H, W))
        assert tuple(out.shape[-2:]) == feature_size(H, W)


def test_scaled_anchor_sizes():
    assert scaled_anchor_sizes(640) == (32, 64, 128, 256)
    assert scaled_anchor_sizes(256, reference_side=512) == (16, 32, 64, 128)
    assert scaled_anchor_sizes(256) == pytest.approx((12.8, 25.6, 51.2, 102.4))
    assert min(scaled_anchor_sizes(4)) == 1.0


# ------------------------------------------------------------------------------------------- objectness


def test_objectness_is_minmax_normalised_then_upsampled():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(2, 8, 4, 5, generator=g) * 10 + 3  # [B, d, h, w]
    feats[0, :, 1, 3] += 5  # a clear peak
    maps = objectness_maps(feats, 64, 80)
    assert maps.shape == (2, 64, 80) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    for b in range(2):  # bilinear upsampling keeps the extremes of the normalised map near 0 and 1
        assert maps[b].min() < 0.1 and maps[b].max() > 0.9
    norm = minmax_normalise(feats.sum(1))
    assert torch.allclose(norm.amin((1, 2)), torch.zeros(2)) and torch.allclose(norm.amax((1, 2)), torch.ones(2))
    # the peak of the channel sum stays the peak of the map
    a = feats.sum(1)[0]
    i, j = divmod(int(a.argmax()), a.shape[1])
    pi, pj = divmod(int(maps[0].argmax()), 80)
    assert (pi // 16, pj // 16) == (i, j)


def test_constant_map_gives_zeros_not_nan():
    feats = torch.ones(3, 4, 2, 2)
    feats[1] = 0
    maps = objectness_maps(feats, 10, 7)
    assert not torch.isnan(maps).any()
    assert (maps == 0).all()


# ------------------------------------------------------------------------------------------- scoring


def naive_mean(m, box):
    """Reference: the documented pixel convention, columns floor(x1) .. ceil(x2) - 1."""
    x1, y1, x2, y2 = box.tolist()
    return m[math.floor(y1) : math.ceil(y2), math.floor(x1) : math.ceil(x2)].double().mean().item()


def random_boxes(n, H, W, g):
    x1 = torch.rand(n, generator=g) * (W - 1)
    y1 = torch.rand(n, generator=g) * (H - 1)
    x2 = x1 + 1 + torch.rand(n, generator=g) * (W - 1 - x1)
    y2 = y1 + 1 + torch.rand(n, generator=g) * (H - 1 - y1)
    return torch.stack([x1, y1, x2, y2], dim=1)


def test_sat_scoring_equals_naive_mean_on_640x480_maps():
    g = torch.Generator().manual_seed(0)
    H, W = 480, 640
    maps = torch.rand(2, H, W, generator=g)  # float32, like objectness maps
    boxes = random_boxes(300, H, W, g)
    edge = torch.tensor([[0, 0, W, H], [W - 1, H - 1, W, H], [0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5],
                         [W - 1.2, 0, W, 3.7], [10.0, 20.0, 11.0, 21.0], [0, H - 0.4, 2.2, H]])
    boxes = torch.cat([boxes, edge])
    means = score_boxes(maps, boxes)  # [2, N], boxes shared by the batch
    assert means.shape == (2, len(boxes)) and means.dtype == torch.float32
    for b in range(2):
        ref = torch.tensor([naive_mean(maps[b], box) for box in boxes], dtype=torch.float64)
        assert (means[b].double() - ref).abs().max() < 1e-5


def test_sat_scoring_batched_per_image_boxes():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 37, 53, generator=g)
    boxes = torch.stack([random_boxes(40, 37, 53, g) for _ in range(3)])  # [B, N, 4]
    table = summed_area_table(maps)
    assert table.dtype == torch.float64 and table.shape == (3, 38, 54)
    means = box_means(table, boxes)
    for b in range(3):
        ref = torch.tensor([naive_mean(maps[b], box) for box in boxes[b]])
        assert torch.allclose(means[b].double(), ref.double(), atol=1e-6)


def test_pixel_bounds_convention():
    bounds = pixel_bounds(torch.tensor([[0.0, 0.0, 2.0, 3.0], [0.5, 1.2, 2.1, 3.0], [9.5, 0, 10, 1]]), 10, 10)
    assert bounds.tolist() == [[0, 0, 2, 3], [0, 1, 3, 3], [9, 0, 10, 1]]


def test_scores_of_anchors_equal_naive_means():
    g = torch.Generator().manual_seed(2)
    maps = objectness_maps(torch.rand(1, 16, 3, 4, generator=g), 96, 128)
    boxes, _ = make_anchors(96, 128, 3, 4, sizes=(16, 32, 64, 128))
    means = score_boxes(maps, boxes)[0]
    ref = torch.tensor([naive_mean(maps[0], box) for box in boxes])
    assert (means.double() - ref.double()).abs().max() < 1e-5


def test_ours_selection_is_nms_then_the_top_n():
    """Our rule (OurCrop.select): NMS on the mean scores, then the n best survivors; ties kept in anchor
    order (a stable sort), a box that overlaps a better one above nms_iou dropped, fewer than n survivors
    of the pre-NMS window filled from the full set."""
    from coarsecrop.crops.strategies import make_strategy

    strategy = make_strategy("ours", n=3, nms_iou=0.5)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5], [40, 40, 50, 50],
                          [60, 60, 70, 70]]).float()
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8, 0.7, 0.7])  # 4 and 5 tie: anchor order decides
    keep, kept = strategy.select(boxes, None, scores, None)
    assert keep.tolist() == [1, 4, 5] and kept.tolist() == pytest.approx([0.95, 0.7, 0.7])
    strategy = make_strategy("ours", n=5, nms_iou=0.5)
    keep, _ = strategy.select(boxes, None, scores, None)
    assert keep.tolist() == [1, 4, 5, 2]  # only 4 survive: all of them, best first
