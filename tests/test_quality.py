"""Crop quality: objectness against GT masks, Poor / Coarse / Precise shares, crop sizes."""

import math

import numpy as np
import pytest
import torch

from coarsecrop.crops.quality import crop_objectness, crop_sides, quality_buckets, size_summary


def test_crop_objectness_is_the_share_of_object_pixels():
    mask = np.zeros((40, 60), bool)
    mask[10:20, 10:30] = True  # 200 object pixels
    boxes = torch.tensor([[10, 10, 30, 20], [0, 0, 60, 40], [40, 0, 60, 10], [5, 10, 25, 20], [10.5, 10.5, 11.5, 11.5]])
    obj = crop_objectness(boxes, mask)
    assert obj.dtype == torch.float32 and obj.shape == (5,)
    assert obj.tolist() == pytest.approx([1.0, 200 / 2400, 0.0, 0.75, 1.0])  # last: touches 4 object pixels


def test_crop_objectness_accepts_tensor_masks_and_no_boxes():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    assert crop_objectness(torch.tensor([[0.0, 0, 8, 8]]), mask).tolist() == [0.5]
    assert crop_objectness(torch.zeros(0, 4), mask).shape == (0,)
    partly, outside = crop_objectness(torch.tensor([[-8.0, 0, 8, 8], [8.0, 8, 12, 12]]), mask).tolist()
    assert partly == 0.5 and np.isnan(outside)  # the part inside; no pixel inside: NaN, not the corner's value


def test_unlabelled_pixels_count_neither_as_object_nor_as_background():
    """VOC's void band: objectness is object pixels over labelled pixels; a box of void alone is NaN."""
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:6] = True  # 16 object pixels
    void = np.zeros((10, 10), bool)
    void[1:7, 1:7] = ~mask[1:7, 1:7]  # a one-pixel band around the object: 20 pixels
    boxes = torch.tensor([[1.0, 1, 7, 7], [0, 0, 10, 10], [2, 2, 6, 6], [1, 1, 2, 7], [7, 7, 10, 10]])
    with_void = crop_objectness(boxes, mask, void).tolist()
    assert with_void[:3] == pytest.approx([1.0, 16 / 80, 1.0]) and np.isnan(with_void[3]) and with_void[4] == 0.0
    as_background = crop_objectness(boxes, mask).tolist()  # no unlabelled mask: every pixel counts
    assert as_background[:4] == pytest.approx([16 / 36, 16 / 100, 1.0, 0.0])
    assert crop_objectness(boxes, mask, np.zeros((10, 10), bool)).tolist() == pytest.approx(as_background)


def test_quality_buckets_shares():
    q = quality_buckets(torch.tensor([0.0, 0.1, 0.19999, 0.2, 0.5, 0.8, 0.81, 1.0]))
    assert q == pytest.approx({"poor": 3 / 8, "coarse": 3 / 8, "precise": 2 / 8})
    assert sum(q.values()) == pytest.approx(1.0)
    assert quality_buckets([torch.tensor([0.1]), torch.tensor([0.9, 0.5])]) == pytest.approx(
        {"poor": 1 / 3, "coarse": 1 / 3, "precise": 1 / 3}
    )
    assert quality_buckets([]) == {"poor": 0.0, "coarse": 0.0, "precise": 0.0}


def test_size_summary_percentiles():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 5], [0, 0, 30, 30]], dtype=torch.float32)
    assert crop_sides(boxes).tolist() == pytest.approx([10, 10, 30])
    s = size_summary(torch.arange(1, 101, dtype=torch.float32))
    assert list(s) == ["p10", "p50", "p75", "p90", "mean"]
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["mean"] == pytest.approx(50.5)
    per_image = size_summary([boxes, boxes[:1]])  # a list of per-image box tensors
    assert per_image["p50"] == pytest.approx(10)
    assert all(math.isnan(v) for v in size_summary([]).values())
