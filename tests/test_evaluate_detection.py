"""Detection and instance segmentation at toy scale: COCOeval on known predictions, the C4 and FPN
detectors from torchvision on a tiny trunk, and training that lowers the loss."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from coarsecrop.data.masks import filled_boxes
from coarsecrop.data.scenes import Scene, open_scenes
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.evaluate import detection
from coarsecrop.evaluate.checkpoints import make_trunk
from coarsecrop.evaluate.coco import coco_evaluate, encode_masks, scenes_to_coco
from coarsecrop.evaluate.data import open_split
from coarsecrop.evaluate.metrics import voc_ap, voc_detection_scores

TINY = "resnet10_w8"
TOY = dict(min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 48, 64), rois_per_image=32,
           proposals_train=64, proposals_test=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("det_scenes")
    write_scenes(root, num_images=12, seed=2, size=64, val_fraction=0.34, progress=False)
    return open_split(root, "train"), open_split(root, "val")


def _perfect(scenes, masks=False, shift=0.0):
    """Ground truth as predictions, boxes moved right by ``shift`` of their width."""
    out = []
    for i, s in enumerate(scenes):
        rles = encode_masks(s.instance_masks()) if masks else [None] * len(s.boxes)
        for (x1, y1, x2, y2), c, rle in zip(s.boxes.tolist(), s.labels.tolist(), rles):
            dx = shift * (x2 - x1)
            r = {"image_id": i, "category_id": int(c), "score": 0.9, "bbox": [x1 + dx, y1, x2 - x1, y2 - y1]}
            if rle is not None:
                r["segmentation"] = rle
            out.append(r)
    return out


def test_cocoeval_perfect_predictions_score_one_and_shifted_less(splits):
    _, val = splits
    gt = scenes_to_coco(val.scenes, val.categories, masks=True)
    assert len(gt["annotations"]) == sum(len(s.boxes) for s in val.scenes) > 0
    perfect = coco_evaluate(gt, _perfect(val.scenes), "bbox")
    assert perfect["AP"] == pytest.approx(100) and perfect["AP50"] == pytest.approx(100)
    shifted = coco_evaluate(gt, _perfect(val.scenes, shift=0.2), "bbox")
    assert shifted["AP"] < 60 and shifted["AP50"] == pytest.approx(100)  # IoU 0.67: passes .5, fails .75
    assert shifted["AP75"] == pytest.approx(0)
    segm = coco_evaluate(gt, [{k: v for k, v in r.items() if k != "bbox"}
                              for r in _perfect(val.scenes, masks=True)], "segm")
    assert segm["AP"] == pytest.approx(100)
    none = coco_evaluate(gt, [], "bbox")
    assert none["AP"] == 0.0 and none["APs"] == 0.0 and none["APl"] is None  # 64-px scenes: no large object


def test_wrong_class_scores_zero(splits):
    _, val = splits
    gt = scenes_to_coco(val.scenes, val.categories)
    cats = sorted(val.categories)
    wrong = [{**r, "category_id": cats[(cats.index(r["category_id"]) + 1) % len(cats)]}
             for r in _perfect(val.scenes)]
    assert coco_evaluate(gt, wrong, "bbox")["AP"] < 5


def _square(x, y, side):
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def test_the_ground_truth_scores_as_cocoeval_on_the_original_file(tmp_path):
    """Crowd regions ignored (a detection on one counts neither way) and the file's own ``area`` deciding
    the size ranges: our ground truth, read back through the reader, gives COCOeval's numbers on the
    original json for boxes and masks. Before, a detection on the crowd was a false positive and the
    detection task sized objects by their boxes."""
    anns = [  # image 1: a cat-1 object (annotated area 2000: medium, its box 400: small) and a cat-1 crowd
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 2000, "iscrowd": 0,
         "segmentation": _square(4, 4, 20)},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [34, 34, 24, 24], "area": 576, "iscrowd": 1,
         "segmentation": _square(34, 34, 24)},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0,
         "segmentation": _square(10, 10, 30)},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [44, 2, 16, 16], "area": 5000, "iscrowd": 0,
         "segmentation": _square(44, 2, 16)}]
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in (1, 2)],
            "annotations": anns, "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]}
    for i in (1, 2):
        Image.new("RGB", (64, 64)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "instances.json").write_text(json.dumps(data))
    scenes = open_scenes(tmp_path / "instances.json")
    assert [s.id for s in scenes] == [1, 2]
    detections = [  # (image position, category, score, xywh)
        (0, 1, 0.95, [35, 35, 22, 22]), (0, 1, 0.8, [4, 5, 20, 19]), (1, 2, 0.9, [11, 10, 29, 30]),
        (1, 1, 0.7, [44, 2, 15, 16]), (1, 2, 0.3, [40, 40, 10, 10])]

    def results(ids, segm):
        out = []
        for image, cat, score, (x, y, w, h) in detections:
            r = {"image_id": ids[image], "category_id": cat, "score": score}
            if segm:
                r["segmentation"] = encode_masks(filled_boxes(torch.tensor([[x, y, x + w, y + h]]), 64, 64))[0]
            else:
                r["bbox"] = [x, y, w, h]
            out.append(r)
        return out

    for iou_type in ("bbox", "segm"):
        ours = coco_evaluate(scenes_to_coco(scenes.scenes, scenes.categories, masks=iou_type == "segm"),
                             results([0, 1], iou_type == "segm"), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(tmp_path / "instances.json"))
            ev = COCOeval(gt, gt.loadRes(results([1, 2], iou_type == "segm")), iou_type)
            ev.evaluate(), ev.accumulate(), ev.summarize()
        theirs = {k: None if v < 0 else 100 * float(v) for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"),
                                                                       ev.stats)}
        assert ours == pytest.approx(theirs), iou_type
        assert ours["AP50"] == pytest.approx(100)  # the 0.95 detection lies on the crowd: ignored


def test_voc_difficult_objects_count_neither_way():
    """A detection on a VOC "difficult" object is no false positive, a missed one no false negative."""
    scene = Scene(id="1", file="1.jpg", width=64, height=64,
                  boxes=torch.tensor([[4.0, 4, 24, 24], [30, 30, 60, 60]]), labels=torch.tensor([1, 1]),
                  difficult=torch.tensor([False, True]))
    gt = scenes_to_coco([scene], {1: "one"})
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1]
    hit = {"image_id": 0, "category_id": 1, "score": 0.5, "bbox": [4, 4, 20, 20]}
    on_difficult = {"image_id": 0, "category_id": 1, "score": 0.9, "bbox": [30, 30, 30, 30]}
    assert coco_evaluate(gt, [hit], "bbox")["AP50"] == pytest.approx(100)
    assert coco_evaluate(gt, [hit, on_difficult], "bbox")["AP50"] == pytest.approx(100)


def test_voc_detection_ap_by_hand():
    """PASCAL VOC's AP, worked by hand: two objects to find and a difficult one; detections by score: a hit, one
    on the difficult object (ignored), a miss, a hit. Recall .5 .5 .5 1, precision 1 1 .5 .67. 11-point (VOC2007):
    (6 x 1 + 5 x 2/3) / 11; the area under the envelope (VOC2010+): .5 x 1 + .5 x 2/3. A second detection of a
    found object is a false positive; an image or class without objects gives no AP of its own."""
    objects = [(0, [0, 0, 10, 10], 0), (1, [20, 20, 10, 10], 0), (1, [0, 0, 8, 8], 1)]
    gt = {"images": [{"id": 0}, {"id": 1}], "categories": [{"id": 1}, {"id": 2}],
          "annotations": [{"id": k + 1, "image_id": i, "category_id": 1, "bbox": b, "iscrowd": d}
                          for k, (i, b, d) in enumerate(objects)]}
    dets = [(0, 0.9, [0, 0, 10, 9]), (1, 0.8, [0, 0, 8, 8]), (0, 0.7, [30, 30, 5, 5]), (1, 0.6, [20, 20, 10, 10])]
    results = [{"image_id": i, "category_id": 1, "score": sc, "bbox": b} for i, sc, b in dets]
    voc07 = voc_detection_scores(gt, results, use_07=True)
    assert voc07["AP50"] == pytest.approx(100 * (6 + 5 * 2 / 3) / 11)
    assert voc_detection_scores(gt, results, use_07=False)["AP50"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert voc07["AP75"] == pytest.approx(voc07["AP50"])  # the hits have IoU 0.9 and 1
    # at IoU > 0.90 and > 0.95 the first becomes a miss: recall 0 0 0 .5, precision 0 0 0 1/3 -> 6 x 1/3 / 11
    assert voc07["AP"] == pytest.approx((8 * voc07["AP50"] + 2 * 100 * 2 / 11) / 10)
    twice = results + [{"image_id": 0, "category_id": 1, "score": 0.95, "bbox": [0, 0, 10, 10]}]
    assert voc_detection_scores(gt, twice, use_07=False)["AP50"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 4))
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), use_07=True) == pytest.approx(1.0)


@pytest.mark.parametrize("head,masks", [("c4", False), ("c4", True), ("fpn", False), ("fpn", True)])
def test_detector_trains_and_predicts(splits, head, masks):
    """Both layouts, boxes and masks: a training step gives finite losses, eval gives COCO results."""
    data = detection.prepare_data(*splits, masks=masks)
    model = detection.build_detector(make_trunk(TINY, seed=0), len(data.index), head=head, masks=masks,
                                     fpn_channels=32, **TOY)
    losses = detection.train_detector(model, data, iterations=2, batch_size=4, base_lr=0.02, warmup=1)
    assert len(losses) == 2 and all(np.isfinite(losses))
    results = detection.predict(model, data.val, data.index, masks)
    assert all(r["category_id"] in data.categories for r in results)
    if masks and results:
        assert "segmentation" in results[0]


def test_c4_has_the_extra_norm_and_shares_res5_with_the_mask_head(splits):
    data = detection.prepare_data(*splits, masks=True)
    model = detection.build_detector(make_trunk(TINY, seed=0), len(data.index), head="c4", masks=True, **TOY)
    res5 = model.roi_heads.box_head[0]
    assert isinstance(res5, detection.Res5Head) and isinstance(res5.norm, torch.nn.BatchNorm2d)
    assert model.roi_heads.mask_head is res5
    assert not hasattr(model.backbone, "layer4")  # res5 is the head, not the backbone
    assert all(p.requires_grad for p in model.parameters())  # no frozen stages


def test_detector_keeps_the_pretrained_weights(splits):
    trunk = make_trunk(TINY, seed=5)
    model = detection.build_detector(trunk, 12, head="fpn", **TOY)
    body = model.backbone.body.trunk.state_dict()
    for k, v in trunk.state_dict().items():
        assert torch.equal(body[k], v), k
    assert model.backbone.body.trunk is not trunk  # a copy: the caller's trunk is not finetuned


def test_a_few_steps_reduce_the_loss(splits):
    """Ten steps on the same four images: the detector fits them (loss falls)."""
    train, _ = splits
    data = detection.prepare_data(train, train, masks=False)
    data.train = data.train[:4]
    model = detection.build_detector(make_trunk(TINY, seed=0), len(data.index), head="c4", **TOY)
    losses = detection.train_detector(model, data, iterations=10, batch_size=4, base_lr=0.32, warmup=1)
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2])


def test_learning_rate_schedule():
    lr = [detection.lr_at(s, 100, 0.02, 10) for s in range(100)]
    assert lr[0] == pytest.approx(0.02 * 0.001)
    assert lr[10] == pytest.approx(0.02) and lr[74] == pytest.approx(0.02)
    assert lr[75] == pytest.approx(0.002) and lr[92] == pytest.approx(0.0002)


def test_run_detection_end_to_end(splits):
    data = detection.prepare_data(*splits, masks=True)
    r = detection.run_detection(make_trunk(TINY, seed=0), data, head="c4", iterations=20, batch_size=4,
                                warmup=2, base_lr=0.32, **TOY)
    for key in ("AP_bbox", "AP50_bbox", "AP75_bbox", "AP_seg", "AP50_seg", "AP75_seg"):
        assert 0 <= r[key] <= 100
    assert r["loss_last"] < r["loss_first"]
