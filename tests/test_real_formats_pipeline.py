"""The paper-scale presets read VOC roots and COCO json files: the pretraining notebook's steps (crop job
on the train split, objectness of the pseudo-images, trainer, probe) on the built-in scenes written in the
VOC layout, and on a COCO json without splits (as instances_train2017.json)."""

import json

import pytest
import torch

from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.data.synthetic_voc import write_voc
from coarsecrop.studies import pretrain as ps
from coarsecrop.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    write_scenes(root / "coco", num_images=12, seed=0, size=64, progress=False)
    return root


def tiny(source, **changes):
    return ps.PretrainStudyParams(scenes=str(source), strategy="gt", backbone="resnet10_w8", image_size=16,
                                  method_params={"queue_size": 64}, epochs=1, batch_size=8, workers=0,
                                  device="cpu", monitor="knn", **changes)


def test_voc_layout_holds_the_same_scenes(scenes):
    voc = write_voc(scenes / "coco", scenes / "voc")
    for split in ("train", "val"):
        ours, theirs = open_scenes(voc, split=split), open_scenes(scenes / "coco", split=split)
        assert len(ours) == len(theirs) > 0
        a, b = ours.scenes[0], theirs.scenes[0]
        assert torch.allclose(a.boxes, b.boxes, atol=1.0)  # VOC stores integer pixel corners
        assert [ours.categories[int(k)] for k in a.labels] == [theirs.categories[int(k)] for k in b.labels]
        assert (a.object_mask() == b.object_mask()).mean() > 0.99
    assert len(open_scenes(voc, split="trainval")) == 12


def test_pretraining_steps_run_on_a_voc_root(scenes, tmp_path):
    voc = scenes / "voc" if (scenes / "voc").is_dir() else write_voc(scenes / "coco", scenes / "voc")
    params = tiny(voc)
    manifest = ps.prepare_manifest(params, voc, tmp_path)
    crops = ps.crop_quality(params, voc, manifest)
    assert crops["crops"] > 0 and 0.3 < crops["objectness"] <= 1.0  # GT boxes hold mostly object
    train = ps.trainer_params(params, manifest, tmp_path)
    pretrain(train)
    lines = [json.loads(x) for x in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "monitor" and 0 <= r["knn_top1"] <= 1 for r in lines)


def test_pretrain_split_names_the_voc_list_pretraining_reads(scenes, tmp_path):
    """The paper pretrains on VOC2007 trainval; the voc07 preset read train.txt (half of it) for want of a
    parameter."""
    from coarsecrop.crops.manifest import read_manifest

    voc = scenes / "voc" if (scenes / "voc").is_dir() else write_voc(scenes / "coco", scenes / "voc")
    for split, images in ((None, len(open_scenes(voc, split="train"))), ("trainval", 12)):
        manifest = ps.prepare_manifest(tiny(voc, pretrain_split=split), voc, tmp_path / str(split))
        assert len({r["id"] for r in read_manifest(manifest).records()}) == images
    assert images > len(open_scenes(voc, split="train"))


def test_a_coco_json_without_splits_is_pretrained_on_every_image(scenes, tmp_path):
    data = json.loads((scenes / "coco" / "annotations.json").read_text())
    for image in data["images"]:
        image.pop("split", None)
    (scenes / "nosplit").mkdir(exist_ok=True)
    ann = scenes / "nosplit" / "annotations.json"
    ann.write_text(json.dumps(data))
    images = scenes / "coco"  # the file names are relative to the original folder
    params = tiny(ann, images=str(images))
    assert ps.train_split(ann, str(images)) is None
    manifest = ps.prepare_manifest(params, ann, tmp_path)
    assert ps.crop_quality(params, ann, manifest)["crops_per_image"] > 0
    from coarsecrop.crops.manifest import read_manifest

    assert len(list(read_manifest(manifest).records())) == 12  # every image, no split


def test_evaluate_takes_coco_train_and_val_files_without_splits(scenes, tmp_path, capsys):
    """COCO's instances_train2017 / instances_val2017 carry no split key: `evaluate`'s default splits
    (train, val) stop with a message that names the way out, which is 'all' as for `detectron2`."""
    from coarsecrop.cli import main

    data = json.loads((scenes / "coco" / "annotations.json").read_text())
    for split in ("train", "val"):
        part = {**data, "images": [{k: v for k, v in im.items() if k != "split"}
                                   for im in data["images"] if im["split"] == split]}
        (tmp_path / f"instances_{split}.json").write_text(json.dumps(part))
    files = ["--scenes", str(tmp_path / "instances_train.json"), "--images", str(scenes / "coco"),
             "--val-scenes", str(tmp_path / "instances_val.json"), "--val-images", str(scenes / "coco")]
    common = ["evaluate", "--task", "objects", "--backbone", "resnet10_w8", "--device", "cpu", *files]
    assert main([*common, "--out", str(tmp_path / "default")]) == 2
    assert "--train-split all and --val-split all for `evaluate`" in capsys.readouterr().err
    assert main([*common, "--train-split", "all", "--val-split", "all", "--out", str(tmp_path / "all")]) == 0
    record = json.loads((tmp_path / "all" / "metrics.json").read_text())
    train_ids = {im["id"] for im in data["images"] if im["split"] == "train"}  # every object of the train file
    assert record["rows"]["random"]["runs"][0]["train_objects"] == sum(a["image_id"] in train_ids
                                                                      for a in data["annotations"])


def test_mask_tasks_leave_out_the_voc_images_without_masks(scenes, tmp_path):
    """A VOC root has SegmentationObject/<id>.png only for its Segmentation sets (VOC07: 422 of 9,963 images):
    the other images' objects were scored as filled boxes, silently."""
    import shutil
    import warnings

    from coarsecrop.evaluate.data import with_masks

    voc = write_voc(scenes / "coco", tmp_path / "voc")
    pngs = sorted((voc / "SegmentationObject").glob("*.png"))
    for png in pngs[::2]:
        png.unlink()
    whole = open_scenes(voc)
    masked = {p.stem for p in pngs[1::2]}
    for task in ("semantic", "instance"):
        with pytest.warns(UserWarning, match=rf"task '{task}' leaves out {len(pngs[::2])} of 12 images whose "
                                             r"objects have no instance masks \(VOC: no SegmentationObject"):
            kept = with_masks(whole, task, voc)
        assert {s.id for s in kept.scenes} == masked | {s.id for s in whole.scenes if not len(s.labels)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert with_masks(whole, "objects", voc) is whole  # boxes are what the other tasks need
    shutil.rmtree(voc)
