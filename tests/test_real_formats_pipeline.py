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
