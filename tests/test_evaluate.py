"""Transfer evaluation on small generated scenes: metrics against independent code, probes, finetuning,
semantic segmentation, ImageFolder transfer, the runner (seeds, random-init row, metrics.json), the CLI,
and clear errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coarsecrop.crops.job import run_crop_job
from coarsecrop.data.masks import voc_colormap
from coarsecrop.data.scenes import Scene, open_scenes
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.evaluate import classify, multilabel, objects, segmentation
from coarsecrop.evaluate.checkpoints import make_trunk
from coarsecrop.evaluate.data import class_index, multilabel_targets, open_split
from coarsecrop.evaluate.metrics import average_precision, confusion, mean_ap, segmentation_scores, summarise
from coarsecrop.models.probe import multilabel_loss
from coarsecrop.studies.transfer import evaluate, split_params

TINY = "resnet10_w8"  # 8/16/32/64 channels: fast on CPU


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """24 built-in scenes of 64 px, a quarter of them val."""
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, num_images=24, seed=1, size=64, val_fraction=0.25, progress=False)
    return root


@pytest.fixture(scope="module")
def splits(scenes):
    return open_split(scenes, "train"), open_split(scenes, "val")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A 'trained' tiny trunk saved as our trainer's backbone.pt would be."""
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pt"
    torch.save(make_trunk(TINY, seed=123).state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------ metrics

def test_average_precision_matches_sklearn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        y = rng.random(n) < 0.3
        y[0] = True
        s = np.round(rng.random(n), 1)  # many ties
        assert average_precision(s, y) == pytest.approx(sklearn.average_precision_score(y, s), abs=1e-12)


def test_mean_ap_is_mean_over_classes_with_positives():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = (rng.random((40, 5)) < 0.4).astype(int)
    y[:, 4] = 0  # a class without positives: left out
    s = rng.random((40, 5))
    expected = np.mean([sklearn.average_precision_score(y[:, c], s[:, c]) for c in range(4)])
    assert mean_ap(s, y) == pytest.approx(expected, abs=1e-12)


def test_average_precision_by_hand():
    # ranking: +, -, +  -> precision 1 at recall .5, 2/3 at recall 1 -> AP = .5 * 1 + .5 * 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.9, 0.8]), np.array([1, 1])) == 1.0
    assert math.isnan(average_precision(np.array([0.9]), np.array([0])))


def test_segmentation_scores_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    conf = confusion(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    s = segmentation_scores(conf)
    assert s["aAcc"] == pytest.approx(3 / 5)
    assert s["mAcc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert s["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_summarise_mean_and_sample_std():
    s = summarise([{"a": 1.0, "b": "x"}, {"a": 3.0, "b": "y"}])
    assert set(s) == {"a"}
    assert s["a"]["mean"] == 2.0 and s["a"]["std"] == pytest.approx(math.sqrt(2)) and s["a"]["n"] == 2
    s = summarise([{"a": 1.0}, {"a": math.nan}, {"a": 3.0}])  # a run without a defined value (no positive)
    assert s["a"]["mean"] == 2.0 and s["a"]["n"] == 2 and len(s["a"]["values"]) == 3


# ------------------------------------------------------------------------------------------ tasks

def test_multilabel_targets_are_categories_present(splits):
    train, _ = splits
    index = class_index(train.categories)
    t = multilabel_targets(train.scenes, index)
    for row, scene in zip(t, train.scenes):
        present = {index[int(c)] for c in scene.labels.tolist()}
        assert set(torch.nonzero(row).flatten().tolist()) == present


def test_a_class_present_only_as_voc_difficult_objects_counts_neither_way():
    """VOC's rule: an image whose objects of a class are all "difficult" is neither a positive nor a negative
    of that class, in the AP and in the training loss."""
    def scene(labels, difficult):
        return Scene(id=0, file="x.jpg", width=8, height=8, boxes=torch.zeros(len(labels), 4),
                     labels=torch.tensor(labels), difficult=torch.tensor(difficult))

    targets = multilabel_targets([scene([1, 2, 2], [True, True, False]), scene([3], [False])], {1: 0, 2: 1, 3: 2})
    assert targets.tolist() == [[-1, 1, 0], [0, 0, 1]]
    scores, labels = np.array([0.9, 0.8, 0.7, 0.6]), np.array([-1, 0, 1, 1])
    assert average_precision(scores, labels) == pytest.approx(average_precision(scores[1:], labels[1:])) \
        == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.1, -2.0]])
    known = torch.nn.functional.binary_cross_entropy_with_logits(logits[targets >= 0], targets[targets >= 0])
    assert multilabel_loss(logits, targets) == pytest.approx(float(known))


def test_voc_void_pixels_are_ignored_by_semantic_segmentation(tmp_path):
    """VOC's void band (index 255 of SegmentationObject) is ignored, not scored as background."""
    root = tmp_path / "VOC2007"
    for d in ("Annotations", "JPEGImages", "SegmentationObject"):
        (root / d).mkdir(parents=True)
    (root / "Annotations" / "1.xml").write_text(
        "<annotation><filename>1.jpg</filename><size><width>20</width><height>10</height></size><object>"
        "<name>dog</name><difficult>0</difficult><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>8</xmax>"
        "<ymax>8</ymax></bndbox></object></annotation>")
    Image.new("RGB", (20, 10)).save(root / "JPEGImages" / "1.jpg")
    index = np.zeros((10, 20), np.uint8)
    index[2:8, 2:8] = 255
    index[3:7, 3:7] = 1
    png = Image.fromarray(index, "P")
    png.putpalette(voc_colormap().flatten().tolist())  # as VOC's own files (without one, PIL renumbers)
    png.save(root / "SegmentationObject" / "1.png")
    scene = open_scenes(root)[0]
    label = segmentation.semantic_map(scene, {c: i for i, c in enumerate(range(1, 21))})
    assert (label[index == 255] == 255).all() and (label[index == 1] == 12).all() and (label[index == 0] == 0).all()


def test_train_and_val_on_the_same_images_are_refused(scenes):
    with pytest.raises(ValueError, match=r"share 24 image\(s\).*measured on training images"):
        evaluate("objects", backbone=TINY, scenes=scenes, train_split=None, val_split=None)


def test_linear_probe_and_finetuning_run_and_learn(splits):
    data = multilabel.prepare_data(*splits, image_size=48)
    trunk = make_trunk(TINY, seed=0)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    targets = multilabel_targets(splits[1].scenes, class_index(splits[0].categories))
    chance = 100 * targets.mean(0)[targets.sum(0) > 0].mean().item()  # the mAP of random scores: prevalence
    lin = multilabel.run_linear(trunk, data, epochs=20)
    assert chance + 15 < lin["mAP_l"] <= 100 and len(lin["mAP_l_per_class"]) == len(data.names)
    ft = multilabel.run_finetune(trunk, data, epochs=6, batch_size=8, lr=0.05)
    assert chance < ft["mAP"] <= 100
    assert ft["train_loss_last_epoch"] < ft["train_loss_first_epoch"]
    for k, v in trunk.state_dict().items():  # finetuning works on a copy
        assert torch.equal(v, before[k]), k


def test_object_probe_beats_the_majority_class(splits):
    data = objects.prepare_data(*splits, crop_size=32)
    assert len(data.train_labels) == sum(len(s.labels) for s in splits[0].scenes)
    r = objects.run_probe(make_trunk(TINY, seed=0), data, epochs=60)
    assert r["top1"] > r["majority_class"] + 10


@pytest.mark.parametrize("name,stride,expected", [
    (TINY, 8, {"res3": 8, "res4": 8, "res5": 8}), (TINY, 16, {"res3": 8, "res4": 16, "res5": 16}),
    (TINY, 32, {"res3": 8, "res4": 16, "res5": 32}), (TINY + "_cifar", 8, {"res3": 2, "res4": 4, "res5": 8})])
def test_dilated_trunk_reaches_the_output_stride(name, stride, expected):
    trunk = make_trunk(name, seed=0)
    reference = {k: v.clone() for k, v in trunk.state_dict().items()}
    strides = segmentation.stage_strides(segmentation.dilate(trunk, output_stride=stride))
    assert {k: strides[k] for k in expected} == expected
    assert all(torch.equal(v, reference[k]) for k, v in trunk.state_dict().items())  # same weights


def test_semantic_segmentation_runs_and_learns(splits):
    data = segmentation.prepare_data(*splits, image_size=48)
    scene = splits[0].scenes[0]
    full = segmentation.semantic_map(scene, class_index(splits[0].categories))
    assert ((full > 0) == scene.object_mask()).all()
    r = segmentation.run_semantic(make_trunk(TINY, seed=0), data, epochs=4, batch_size=6, lr=0.02)
    assert 0 <= r["mIoU"] <= 100 and 0 < r["aAcc"] <= 100
    assert r["train_loss_last_epoch"] < r["train_loss_first_epoch"]


def _cityscapes(root: Path, per_split: dict) -> Path:
    """A Cityscapes root in its layout: sky (labelId 23) above, road (7) below, a car (26) and an unlabelled
    patch (0); each in its own colour, so a few epochs learn them."""
    rng = np.random.default_rng(0)
    for split, cities in per_split.items():
        for city, count in cities.items():
            for k in range(count):
                stem = f"{city}_{k:06d}_000019"
                ids = np.full((16, 32), 23, np.uint8)
                ids[8:] = 7
                x = int(rng.integers(0, 20))
                ids[6:12, x:x + 10] = 26
                ids[0:2, 28:] = 0
                colour = {23: (70, 130, 180), 7: (128, 64, 128), 26: (220, 20, 20), 0: (0, 0, 0)}
                rgb = np.zeros((16, 32, 3), np.uint8)
                for label, c in colour.items():
                    rgb[ids == label] = c
                rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
                for folder, name, image in (("leftImg8bit", "leftImg8bit", Image.fromarray(rgb)),
                                            ("gtFine", "gtFine_labelIds", Image.fromarray(ids, "L"))):
                    out = root / folder / split / city / f"{stem}_{name}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    image.save(out)
    return root


def test_a_cityscapes_root_is_read_with_its_19_classes_and_segmented(tmp_path):
    """Table 6's data set: leftImg8bit/ + gtFine/ labelIds, the 19 evaluation classes (the rest ignored)."""
    root = _cityscapes(tmp_path / "cityscapes", {"train": {"aachen": 6, "bochum": 4}, "val": {"lindau": 4},
                                                  "test": {"berlin": 2}})
    everything = open_scenes(root)
    assert everything.format == "cityscapes" and len(everything) == 14  # train and val: test has no labels
    val = open_scenes(root, split="val")
    assert [s.id for s in val][:2] == ["lindau_000000_000019", "lindau_000001_000019"]
    labels = val[0].semantic_decoder()
    assert set(np.unique(labels).tolist()) == {0, 10, 13, 255}  # road, sky, car; unlabelled ignored
    assert val.semantic_classes[0] == "road" and len(val.semantic_classes) == 19
    record = evaluate("semantic", backbone=TINY, scenes=root, train_split="train", val_split="val",
                      params={"image_size": 32, "epochs": 8, "batch_size": 4, "lr": 0.05})
    runs = record["rows"]["random"]["runs"]
    assert set(runs[0]["IoU_per_class"]) == set(val.semantic_classes)
    assert runs[0]["IoU_per_class"]["bicycle"] is None and runs[0]["IoU_per_class"]["sky"] > 50
    with pytest.raises(ValueError, match="labels pixels only"):
        evaluate("objects", backbone=TINY, scenes=root, train_split="train", val_split="val")
    with pytest.raises(ValueError, match="no split 'trainval'.*available: test, train, val"):
        open_scenes(root, split="trainval")
    with pytest.raises(ValueError, match="needs annotated scenes.*a Cityscapes root"):
        run_crop_job(root, split="val", out=tmp_path / "crops", strategy="gt", progress=False)
    next((root / "gtFine" / "val").rglob("*.png")).unlink()
    with pytest.raises(ValueError, match="no label image .*_gtFine_labelIds.png"):
        open_scenes(root, split="val")


def _image_folder(root, per_class=6):
    """Two classes a linear probe must separate: reddish and bluish noise."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, colour in enumerate(([200, 40, 40], [40, 40, 200])):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = np.clip(np.array(colour) + rng.normal(0, 10, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def test_classify_linear_probe_on_image_folder(tmp_path):
    data = classify.prepare_data(_image_folder(tmp_path), image_size=32)
    assert data.names == ["class0", "class1"]
    r = classify.run_probe(make_trunk(TINY, seed=0), data, epochs=30)
    assert r["top1"] == 100.0


# ------------------------------------------------------------------------------------------ runner, CLI

def test_runner_rows_seeds_and_metrics_json(scenes, ckpt, tmp_path):
    rec = evaluate("objects", checkpoint=ckpt, backbone=None, scenes=scenes, n_seeds=2,
                   params={"crop_size": 32, "epochs": 20}, out=tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["task"] == "objects" and on_disk["rows"]["checkpoint"]["backbone"] == TINY
    assert set(on_disk["rows"]) == {"checkpoint", "random"}
    for row in on_disk["rows"].values():
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        assert row["summary"]["top1"]["n"] == 2
    # checkpoint: same trunk for both seeds (only the probe's seed differs); random: a new trunk per seed
    assert len(rec["rows"]["checkpoint"]["sha256"]) == 64 and rec["rows"]["random"]["sha256"] is None
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_first_seed_shifts_the_seeds_and_a_random_row_follows_them(scenes):
    """A sweep gives pretraining seed s the transfer seed s: seeds first_seed.. and, for the random row,
    the trunk of that seed (the same as n_seeds runs from 0 give at that position)."""
    from coarsecrop.studies.transfer import evaluate_rows

    kw = {"backbone": TINY, "scenes": scenes, "params": {"crop_size": 32, "epochs": 5}}
    shifted = evaluate_rows("objects", {"random": None}, first_seed=1, **kw)
    from_zero = evaluate_rows("objects", {"random": None}, n_seeds=2, **kw)
    assert [r["seed"] for r in shifted["rows"]["random"]["runs"]] == [1]
    assert shifted["rows"]["random"]["runs"][0] == from_zero["rows"]["random"]["runs"][1]
    with pytest.raises(ValueError, match="first_seed must be >= 0"):
        evaluate_rows("objects", {"random": None}, first_seed=-1, **kw)


def test_runner_rejects_unknown_task_and_parameter():
    with pytest.raises(ValueError, match="valid: .*multilabel"):
        split_params("segment", {})
    with pytest.raises(ValueError, match="unknown parameter.*epochz.*valid: .*epochs"):
        split_params("linear", {"epochz": 3})


def test_task_parameters_are_checked_against_the_task_functions_types():
    """``--param lr=1e-3`` is a float (read_yaml), an int is a float where one is declared; a string or a
    fraction where a number or an int belongs stops before any data is read."""
    from coarsecrop.cli import _key_value

    _, run = split_params("objects", dict([_key_value("lr=1e-3"), _key_value("epochs=3")]))
    assert run == {"lr": 0.001, "epochs": 3}
    assert split_params("objects", {"lr": 1})[1]["lr"] == 1.0 and isinstance(split_params("objects", {"lr": 1})[1]["lr"], float)
    with pytest.raises(ValueError, match=r"parameter lr = 'abc' for task 'objects': got str \(expected float\)"):
        split_params("objects", {"lr": "abc"})
    with pytest.raises(ValueError, match=r"epochs = 2.5 .*expected int"):
        split_params("objects", {"epochs": 2.5})
    assert split_params("detection", {"anchor_sizes": [8, 16, 32, 64, 128]})[1]["anchor_sizes"] == [8, 16, 32, 64, 128]
    with pytest.raises(ValueError, match="anchor_sizes = 'big'"):
        split_params("detection", {"anchor_sizes": "big"})
    with pytest.raises(ValueError, match=r"crop_size = 0 for task 'objects' must be > 0"):
        split_params("objects", {"crop_size": 0})  # was torch's RuntimeError after the data were read
    with pytest.raises(ValueError, match=r"weight_decay = -0.1 .* must be >= 0"):
        split_params("objects", {"weight_decay": -0.1})
    assert split_params("objects", {"weight_decay": 0, "workers": 0}) == ({"workers": 0}, {"weight_decay": 0.0})


def test_cli_evaluate_writes_metrics(scenes, ckpt, tmp_path):
    from coarsecrop.cli import main

    rc = main(["evaluate", "--task", "linear", "--checkpoint", str(ckpt), "--scenes", str(scenes),
               "--param", "image_size=32", "--param", "epochs=5", "--no-random-init", "--out", str(tmp_path)])
    assert rc == 0
    rec = json.loads((tmp_path / "metrics.json").read_text())
    assert set(rec["rows"]) == {"checkpoint"} and rec["headline"] == "mAP_l"


# ------------------------------------------------------------------------------------------ bad input

def test_checkpoint_of_another_architecture(scenes, ckpt, capsys):
    with pytest.raises(ValueError, match="does not fit backbone resnet18.*matches resnet10_w8"):
        evaluate("linear", checkpoint=ckpt, backbone="resnet18", scenes=scenes)
    from coarsecrop.cli import main

    assert main(["evaluate", "--task", "linear", "--checkpoint", str(ckpt), "--backbone", "resnet18",
                 "--scenes", str(scenes), "--out", "unused"]) == 2
    assert "does not fit backbone resnet18" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "half"])
def test_corrupt_or_truncated_checkpoint(scenes, ckpt, tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2] if content == "half" else content)
    with pytest.raises(ValueError, match="bad.pt.*(truncated|corrupt)"):
        evaluate("linear", checkpoint=bad, backbone=TINY, scenes=scenes)


def test_missing_checkpoint(scenes, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate("linear", checkpoint=tmp_path / "nope.pt", backbone=TINY, scenes=scenes)


def test_a_run_folder_or_a_vit_trunk_is_refused_with_what_to_pass(ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backbone.pt").write_bytes(ckpt.read_bytes())
    with pytest.raises(ValueError, match=r"run is a folder, not a checkpoint file: pass .*run/backbone\.pt"):
        make_trunk(None, run)
    vit = tmp_path / "mae.pt"
    torch.save({"arch": {"backbone": "vit_micro_patch4"}, "model": {}}, vit)
    with pytest.raises(ValueError, match="a ViT trunk .*vit_micro_patch4.*ResNet trunks only"):
        make_trunk(None, vit)


def test_data_set_without_labels(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(ValueError, match="needs boxes with category labels.*no annotations"):
        evaluate("objects", backbone=TINY, scenes=folder, train_split=None, val_split=None)


def test_data_set_with_boxes_only_for_mask_tasks(scenes, tmp_path):
    ann = json.loads((scenes / "annotations.json").read_text())
    for a in ann["annotations"]:
        a.pop("segmentation")
    boxes_only = tmp_path / "boxes.json"
    boxes_only.write_text(json.dumps(ann))
    for task in ("instance", "semantic"):
        with pytest.raises(ValueError, match=f"task '{task}' needs instance masks.*boxes only"):
            evaluate(task, backbone=TINY, scenes=boxes_only, images=scenes)


def test_val_data_set_numbering_its_classes_otherwise_is_refused(scenes, tmp_path):
    """A --val-scenes with other category ids was a bare KeyError (or, where the ids existed, wrong labels)."""
    ann = json.loads((scenes / "annotations.json").read_text())
    first = ann["categories"][0]
    renamed = {**ann, "categories": [{**first, "name": "zebra"}, *ann["categories"][1:]]}
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    extra = {**ann, "categories": [*ann["categories"], {"id": 99, "name": "yak"}],
             "annotations": [{**ann["annotations"][0], "category_id": 99}, *ann["annotations"][1:]]}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    for name, why in (("renamed.json", f"{first['id']}: '{first['name']}' in train, 'zebra' in val"),
                      ("extra.json", "val labels [99] are no category of train's data set")):
        with pytest.raises(ValueError) as err:
            evaluate("objects", backbone=TINY, scenes=scenes, val_scenes=tmp_path / name, val_images=scenes,
                     val_split=None)
        assert f"{tmp_path / name} does not number its classes as {scenes} does" in str(err.value)
        assert why in str(err.value), str(err.value)


def test_classify_needs_an_image_folder(tmp_path):
    with pytest.raises(ValueError, match="ImageFolder layout"):
        evaluate("classify", backbone=TINY, scenes=tmp_path)


def test_checkpoint_folder_resolves_to_its_newest_backbone(tmp_path, ckpt):
    import os

    from coarsecrop.studies.transfer import resolve_checkpoint

    with pytest.raises(ValueError, match="no backbone.pt below"):
        resolve_checkpoint(tmp_path)
    for i, name in enumerate(("a", "b", ".replaced/c")):  # .replaced: a run a sweep made again, set aside
        folder = tmp_path / name / "train"
        folder.mkdir(parents=True)
        (folder / "backbone.pt").write_bytes(ckpt.read_bytes())
        os.utime(folder / "backbone.pt", (1000 + i, 1000 + i))
    assert resolve_checkpoint(tmp_path) == tmp_path / "b" / "train" / "backbone.pt"
    assert resolve_checkpoint(ckpt) == ckpt


def test_rows_with_two_checkpoints_share_the_data(scenes, ckpt, tmp_path, monkeypatch):
    from coarsecrop.studies import transfer as runner
    from coarsecrop.studies.transfer import TransferParams, run_transfer

    calls = []
    prepare = runner.prepare_task
    monkeypatch.setattr(runner, "prepare_task", lambda *a, **k: calls.append(a[0]) or prepare(*a, **k))

    other = tmp_path / "other.pt"
    torch.save(make_trunk(TINY, seed=7).state_dict(), other)
    p = TransferParams(tasks=["linear", "multilabel"], checkpoints={"a": str(ckpt), "b": str(other)},
                       random_init=False, backbone=None, scenes=str(scenes), n_seeds=1, out=str(tmp_path / "run"),
                       task_params={"linear": {"image_size": 32, "epochs": 5},
                                    "multilabel": {"image_size": 32, "epochs": 1}})
    result = run_transfer(p)
    for task in ("linear", "multilabel"):
        assert set(result["tasks"][task]["rows"]) == {"a", "b"}
    a, b = (result["tasks"]["linear"]["rows"][k]["runs"][0]["mAP_l"] for k in ("a", "b"))
    assert a != b  # different trunks, different scores
    assert calls == ["linear"]  # multilabel reused linear's decoded images
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["notebook"] == "03_transfer"
