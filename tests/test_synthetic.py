"""The built-in scenes: deterministic, varied, and a real COCO data set whose masks match its boxes."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from pycocotools.coco import COCO

from coarsecrop.cli import main as cli_main
from coarsecrop.data.synthetic import (CATEGORIES, CLASSES, MAX_OBJECTS, MAX_SCALE, MIN_SCALE, min_visible_area,
                                       render_scene, write_scenes)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
SIZE = 128  # small scenes keep the tests fast; the generator is resolution independent


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return out, write_scenes(out, num_images=10, seed=3, size=SIZE, progress=False)


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_same_seed_same_bytes_and_pixels(tmp_path, scene_set):
    out, ann = scene_set
    ann2 = write_scenes(tmp_path / "again", num_images=10, seed=3, size=SIZE, progress=False)
    assert ann.read_bytes() == ann2.read_bytes()
    for entry in json.loads(ann.read_text())["images"]:
        np.testing.assert_array_equal(_pixels(out / entry["file_name"]),
                                      _pixels(tmp_path / "again" / entry["file_name"]))


def test_worker_processes_write_the_same_bytes_and_bad_workers_are_refused(tmp_path, scene_set):
    """Scenes rendered by worker processes (the gpu preset's 5,000-scene sets) are the same files, byte for
    byte, as one process writes: the annotation ids follow the scene order, not the order workers finish."""
    out, ann = scene_set
    ann2 = write_scenes(tmp_path / "workers", num_images=10, seed=3, size=SIZE, progress=False, workers=3)
    assert ann.read_bytes() == ann2.read_bytes()
    for entry in json.loads(ann.read_text())["images"]:
        assert (out / entry["file_name"]).read_bytes() == (tmp_path / "workers" / entry["file_name"]).read_bytes()
    assert cli_main(["scenes", "--out", str(tmp_path / "bad"), "--num-images", "2", "--workers", "0"]) == 2
    assert not (tmp_path / "bad" / "annotations.json").exists()


def test_different_seed_differs(tmp_path, scene_set):
    _, ann = scene_set
    other = write_scenes(tmp_path / "other", num_images=10, seed=4, size=SIZE, progress=False)
    assert json.loads(other.read_text())["annotations"] != json.loads(ann.read_text())["annotations"]
    assert not np.array_equal(render_scene(3, 0, SIZE).image, render_scene(4, 0, SIZE).image)


def test_an_image_depends_only_on_seed_and_index(tmp_path, scene_set):
    out, ann = scene_set
    short = write_scenes(tmp_path / "short", num_images=4, seed=3, size=SIZE, progress=False)
    full, part = json.loads(ann.read_text()), json.loads(short.read_text())
    assert part["images"] == full["images"][:4]
    assert part["annotations"] == [a for a in full["annotations"] if a["image_id"] <= 4]
    for entry in part["images"]:
        assert (tmp_path / "short" / entry["file_name"]).read_bytes() == (out / entry["file_name"]).read_bytes()
    scene = render_scene(3, 2, SIZE)  # the third image, regenerated alone
    decoded = _pixels(out / full["images"][2]["file_name"]).astype(int)
    assert np.abs(decoded - scene.image).mean() < 3  # JPEG quality 95


def test_coco_round_trip_through_pycocotools(scene_set):
    out, ann = scene_set
    coco = COCO(str(ann))
    assert sorted(coco.getCatIds()) == [c["id"] for c in CATEGORIES]
    assert len(coco.getImgIds()) == 10
    data = json.loads(ann.read_text())
    assert [img["split"] for img in data["images"]].count("val") == 2  # val_fraction 0.2 of 10
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        assert (out / info["file_name"]).is_file() and info["width"] == info["height"] == SIZE
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= MAX_OBJECTS
        seen = np.zeros((SIZE, SIZE), bool)
        for a in anns:
            assert isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0
            m = coco.annToMask(a).astype(bool)
            assert not (seen & m).any()  # visible masks do not overlap
            seen |= m
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["area"] == m.sum() >= min_visible_area(SIZE)


def test_variety_over_a_few_dozen_images():
    classes, counts, scales, cover = Counter(), Counter(), [], []
    for i in range(36):
        s = render_scene(11, i, SIZE)
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert len(s.masks) == len(s.category_ids) == len(s.scales)
        classes.update(s.category_ids)
        counts[len(s.masks)] += 1
        scales += s.scales
        cover.append(np.any(s.masks, axis=0).mean())
    assert len(classes) >= 10 and len(CLASSES) >= 10
    assert min(counts) >= 1 and max(counts) <= MAX_OBJECTS and len(counts) >= 4
    assert MIN_SCALE <= min(scales) < 0.12 and 0.4 < max(scales) <= MAX_SCALE
    assert 0.15 < float(np.mean(cover)) < 0.55  # objectness of whole images, aimed near VOC's 36%


def test_masks_are_rle_of_visible_pixels(scene_set):
    _, ann = scene_set
    a = json.loads(ann.read_text())["annotations"][0]
    rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
    assert mask_util.area(rle) == a["area"]
    assert mask_util.toBbox(rle).tolist() == a["bbox"]


def test_bad_arguments_fail(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        write_scenes(tmp_path, 0, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        write_scenes(tmp_path, 1, seed=0, val_fraction=1.5)
    with pytest.raises(ValueError, match="size"):
        write_scenes(tmp_path, 1, seed=0, size=8)


def test_cli_scenes_command(tmp_path, capsys):
    assert cli_main(["scenes", "--out", str(tmp_path / "s"), "--num-images", "2", "--seed", "1",
                     "--size", "64", "--quiet"]) == 0
    assert (tmp_path / "s" / "annotations.json").is_file()
    assert len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 2
    assert not list((tmp_path / "s").rglob("*.tmp"))
