"""Readers: COCO json (polygons, RLE, uncompressed RLE, crowd), VOC trees, plain folders, our scenes."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from coarsecrop.boxes import is_valid
from coarsecrop.crops.quality import crop_objectness, labelled_masks
from coarsecrop.data.masks import filled_boxes, voc_colormap
from coarsecrop.data.scenes import VOC_CLASSES, Scene, open_scenes
from coarsecrop.data.synthetic import render_scene, write_scenes

# ------------------------------------------------------------------------------------------- helpers


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
H, W = 30, 40


def _coco_fixture(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (W, H), (10, 20, 30)).save(root / "a.jpg")
    Image.new("RGB", (W, H), (10, 20, 30)).save(root / "sub" / "b.jpg")
    rle_mask = _rect(H, W, 20, 26, 20, 31)
    unc_mask = _rect(H, W, 8, 18, 25, 33)
    crowd_mask = _rect(H, W, 0, 4, 30, 40)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 0,
         "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 11, 6], "iscrowd": 0,
         "segmentation": _compressed_rle(rle_mask)},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [25, 8, 8, 10], "iscrowd": 0,
         "segmentation": _uncompressed_rle(unc_mask)},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [30, 0, 10, 4], "iscrowd": 1,
         "segmentation": _uncompressed_rle(crowd_mask)},
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [35, 25, 20, 20], "iscrowd": 0},  # clipped
        {"id": 6, "image_id": 1, "category_id": 2, "bbox": [10, 10, -5, 5], "iscrowd": 0},  # negative
        {"id": 7, "image_id": 1, "category_id": 2, "bbox": [100, 100, 5, 5], "iscrowd": 0},  # outside
        {"id": 8, "image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0,
         "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": W, "height": H, "split": "train"},
            {"id": 2, "file_name": "sub/b.jpg", "width": W, "height": H, "split": "val"},
            {"id": 3, "file_name": "missing.jpg", "width": W, "height": H, "split": "val"},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}, {"id": 3, "name": "three"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def coco(tmp_path):
    return _coco_fixture(tmp_path / "coco")


# ---------------------------------------------------------------------------------------------- COCO


def test_coco_reader_boxes_masks_crowd_and_one_warning(coco):
    with pytest.warns(UserWarning) as record:
        ss = open_scenes(coco)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and str(coco) in messages[0]
    assert "clipped 1 box" in messages[0] and "dropped 2 box" in messages[0]
    assert ss.format == "coco" and ss.root == str(coco.parent) and len(ss) == 3
    assert ss.categories == {1: "one", 2: "two", 3: "three"}
    s = ss[0]
    assert s.id == 1 and s.file == str(coco.parent / "a.jpg") and (s.width, s.height) == (W, H)
    torch.testing.assert_close(s.boxes, torch.tensor([[5, 5, 15, 15], [20, 20, 31, 26], [25, 8, 33, 18],
                                                      [35, 25, 40, 30]], dtype=torch.float32))
    assert s.labels.tolist() == [3, 1, 2, 2] and is_valid(s.boxes, W, H)
    masks = s.instance_masks()
    assert masks.shape == (4, H, W) and masks.dtype == bool and not s.masks_are_boxes
    poly = mask_util.decode(mask_util.merge(mask_util.frPyObjects([[5, 5, 15, 5, 15, 15, 5, 15]], H, W)))
    np.testing.assert_array_equal(masks[0], poly.astype(bool))
    np.testing.assert_array_equal(masks[1], _rect(H, W, 20, 26, 20, 31))
    np.testing.assert_array_equal(masks[2], _rect(H, W, 8, 18, 25, 33))
    np.testing.assert_array_equal(masks[3], _rect(H, W, 25, 30, 35, 40))  # no segmentation: its box
    crowd = _rect(H, W, 0, 4, 30, 40)
    assert not (masks.any(0) & crowd).any()  # the crowd region is no instance ...
    obj = s.object_mask()
    assert obj[crowd].all() and obj.sum() == (masks.any(0) | crowd).sum()  # ... but counts as object
    assert ss[1].file == str(coco.parent / "sub" / "b.jpg") and len(ss[1].boxes) == 1
    assert len(s.crowd) == 1 and s.crowd[0][:2] == (1, [30.0, 0.0, 40.0, 4.0])  # kept for the AP evaluation
    assert ss[2].file.endswith("missing.jpg")  # a missing image file is no reading error


def test_coco_split_and_image_root(coco, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = open_scenes(coco, split="val")
        assert [s.id for s in val] == [2, 3] and val.split == "val"
        elsewhere = open_scenes(coco, images=tmp_path / "pics")
    assert elsewhere.root == str(tmp_path / "pics") and elsewhere[0].file == str(tmp_path / "pics" / "a.jpg")
    with pytest.raises(ValueError, match="available splits: train, val"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_scenes(coco, split="test")


def test_coco_without_split_keys_or_segmentations(tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"images": [{"id": 7, "file_name": "x.jpg", "width": 10, "height": 8}],
                                "annotations": [{"id": 1, "image_id": 7, "category_id": 1,
                                                 "bbox": [1.0, 2.0, 3.0, 3.0]}],
                                "categories": [{"id": 1, "name": "thing"}]}))
    ss = open_scenes(path)
    s = ss[0]
    assert s.masks_are_boxes
    np.testing.assert_array_equal(s.instance_masks()[0], _rect(8, 10, 2, 5, 1, 4))
    with pytest.raises(ValueError, match="no 'split' key"):
        open_scenes(path, split="train")


@pytest.mark.parametrize("name, why", [("../evil.jpg", "escapes"), ("a/../../evil.jpg", "escapes"),
                                       ("/etc/passwd", "absolute"), ("C:\\x.jpg", "absolute"),
                                       ("\\\\server\\x.jpg", "absolute")])
def test_file_name_escaping_the_root_is_refused(tmp_path, name, why):
    path = tmp_path / "esc.json"
    path.write_text(json.dumps({"images": [{"id": 42, "file_name": name, "width": 4, "height": 4}]}))
    with pytest.raises(ValueError, match=why) as err:
        open_scenes(path)
    assert "image id 42" in str(err.value) and str(path) in str(err.value)


def test_harmless_dots_are_accepted(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x/../y/./z.jpg", "width": 4, "height": 4}]}))
    assert open_scenes(path)[0].file == str(tmp_path / "y" / "z.jpg")


def test_bad_annotation_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        open_scenes(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,,]}')
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON at line 1 column"):
        open_scenes(bad)
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        open_scenes(listing)
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    with pytest.raises(ValueError, match="not a scene source"):
        open_scenes(other)


def _one_image_coco(path: Path, image: dict | None = None, annotation: dict | None = None) -> Path:
    """A one-image, one-box COCO file whose image entry / annotation is updated with the given keys."""
    path.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "x.jpg", "width": 10, "height": 8, **(image or {})}],
        "annotations": [{"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 3], **(annotation or {})}],
        "categories": [{"id": 1, "name": "thing"}]}))
    return path


@pytest.mark.parametrize("image, annotation, field, where", [
    ({}, {"bbox": [1, None, 3, 3]}, "'bbox'", "annotation id 3"),
    ({}, {"bbox": [10, 10, "a", 5]}, "'bbox'", "annotation id 3"),
    ({}, {"iscrowd": 1, "bbox": [1, 2, [3], 3]}, "'bbox'", "annotation id 3"),
    ({}, {"category_id": None}, "'category_id' is null", "annotation id 3"),
    ({}, {"category_id": "cat"}, "'category_id'", "annotation id 3"),
    ({"width": "wide"}, {}, "'width' is \"wide\"", "image id 7"),
    ({"height": 7.5}, {}, "'height' is 7.5", "image id 7"),
])
def test_malformed_coco_values_name_the_file_the_entry_and_the_field(tmp_path, image, annotation, field, where):
    path = _one_image_coco(tmp_path / "odd.json", image, annotation)
    with pytest.raises(ValueError) as err:
        open_scenes(path)
    message = str(err.value)
    assert str(path) in message and where in message and field in message, message


def test_duplicate_coco_image_ids_are_refused(tmp_path):
    path = tmp_path / "twice.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                                           {"id": 1, "file_name": "c.jpg"}, {"id": "2", "file_name": "d.jpg"}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}]}))
    with pytest.raises(ValueError, match=r"twice\.json: 1 image id\(s\) occur more than once \(1\)"):
        open_scenes(path)
    path.write_text(json.dumps({"images": [{"id": [1], "file_name": "a.jpg"}]}))
    with pytest.raises(ValueError, match=r"twice\.json: image entry #0 has id \[1\]"):
        open_scenes(path)


def test_scenes_pickle_with_their_lazy_decoders(coco):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_scenes(coco)[0]
    again = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(again.instance_masks(), s.instance_masks())
    np.testing.assert_array_equal(again.object_mask(), s.object_mask())


def test_filled_boxes_cover_pixel_centres():
    m = filled_boxes(torch.tensor([[1.0, 2.0, 4.0, 5.0], [0.2, 0.2, 1.2, 1.2]]), 6, 6)
    np.testing.assert_array_equal(m[0], _rect(6, 6, 2, 5, 1, 4))
    assert m[1].sum() == 1 and m[1][0, 0]
    scene = Scene(id=0, file="x", width=6, height=6, boxes=torch.tensor([[1.0, 2.0, 4.0, 5.0]]),
                  labels=torch.tensor([1]))
    assert scene.masks_are_boxes and scene.object_mask().sum() == 9


# ----------------------------------------------------------------------------------------------- VOC

VOC_W, VOC_H = 50, 40


def _voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    parts = [f"<annotation><filename>{filename}</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, difficult, (x1, y1, x2, y2) in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def _voc_fixture(root: Path) -> np.ndarray:
    for d in ("Annotations", "JPEGImages", "SegmentationObject", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    objects = [("dog", 0, (1, 1, 20, 20)), ("person", 1, (25, 10, 45, 35)), ("unicorn", 0, (5, 25, 15, 39)),
               ("car", 0, (30, 1, 60, 10)), ("cat", 0, (10, 5, 5, 9))]
    (root / "Annotations" / "000001.xml").write_text(_voc_xml("000001.jpg", VOC_W, VOC_H, objects))
    (root / "Annotations" / "000002.xml").write_text(_voc_xml("000002.jpg", 20, 10, [("cat", 0, (2, 2, 10, 8))]))
    Image.new("RGB", (VOC_W, VOC_H)).save(root / "JPEGImages" / "000001.jpg")
    Image.new("RGB", (20, 10)).save(root / "JPEGImages" / "000002.jpg")
    index = np.zeros((VOC_H, VOC_W), np.uint8)
    index[0:20, 0:20] = 1
    index[10:35, 24:45] = 2
    index[24:39, 4:15] = 3
    index[0:10, 29:50] = 4
    index[19, 0:20] = 255  # the void band along the dog's lower border
    png = Image.fromarray(index, "P")
    png.putpalette(list(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8)))
    png.save(root / "SegmentationObject" / "000001.png")
    (root / "ImageSets" / "Main" / "train.txt").write_text("000002\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n")
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("000002 -1\n")
    return index


def test_voc_reader(tmp_path):
    root = tmp_path / "VOC2007"
    index = _voc_fixture(root)
    with pytest.warns(UserWarning) as record:
        ss = open_scenes(root)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "000001.xml" in messages[0]
    assert "clipped 1 box" in messages[0] and "dropped 1 box" in messages[0]
    assert ss.format == "voc" and len(ss) == 2 and ss.root == str(root / "JPEGImages")
    assert [ss.categories[i + 1] for i in range(20)] == list(VOC_CLASSES) and ss.categories[21] == "unicorn"
    s = ss[0]
    assert s.id == "000001" and s.file == str(root / "JPEGImages" / "000001.jpg")
    torch.testing.assert_close(s.boxes, torch.tensor([[0, 0, 20, 20], [24, 9, 45, 35], [4, 24, 15, 39],
                                                      [29, 0, 50, 10]], dtype=torch.float32))
    assert s.labels.tolist() == [VOC_CLASSES.index(n) + 1 for n in ("dog", "person")] + [21, 7]
    masks = s.instance_masks()  # instance k = k-th XML object (the difficult person included)
    assert masks.shape == (4, VOC_H, VOC_W) and not s.masks_are_boxes
    for k, value in enumerate((1, 2, 3, 4)):
        np.testing.assert_array_equal(masks[k], index == value)
    assert not s.object_mask()[index == 255].any()  # void is not object ...
    np.testing.assert_array_equal(s.void_decoder(), index == 255)  # ... but known, for semantic segmentation
    assert s.difficult.tolist() == [False, True, False, False] and ss[1].void_decoder is None
    # crop objectness leaves the void band out of both counts: a GT box holds its object and void only
    obj, void = labelled_masks(s)
    np.testing.assert_array_equal(void, index == 255)
    gt = crop_objectness(s.boxes[:1], obj, void).item()
    band = (index[0:20, 0:20] == 255).mean()
    assert band > 0 and gt == pytest.approx((index[0:20, 0:20] == 1).mean() / (1 - band))
    assert labelled_masks(ss[1])[1] is None
    assert ss[1].masks_are_boxes and ss[1].instance_masks().sum() == 9 * 7  # VOC (2, 2, 10, 8) -> [1, 1, 10, 8]


def test_voc_classes_outside_the_20_are_numbered_alike_in_every_split(tmp_path):
    """Each split met the unknown names in its own order and numbered them so: test's labels were permuted
    against train's class index (an object probe below chance on the built-in VOC export)."""
    root = tmp_path / "VOC2007"
    _voc_fixture(root)
    (root / "Annotations" / "000001.xml").write_text(_voc_xml("000001.jpg", VOC_W, VOC_H, [
        ("zebra", 0, (1, 1, 20, 20)), ("unicorn", 0, (25, 10, 45, 35))]))
    (root / "Annotations" / "000002.xml").write_text(_voc_xml("000002.jpg", 20, 10, [
        ("unicorn", 0, (2, 2, 10, 8)), ("cat", 0, (1, 1, 5, 5))]))
    train, val, whole = open_scenes(root, split="train"), open_scenes(root, split="val"), open_scenes(root)
    assert train.categories == val.categories == whole.categories
    assert [whole.categories[i] for i in (8, 21, 22)] == ["cat", "unicorn", "zebra"]  # VOC's 20, then sorted
    assert train[0].labels.tolist() == [21, 8] and val[0].labels.tolist() == [22, 21]


def test_voc_splits_and_errors(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    _voc_fixture(root)
    train = open_scenes(root, split="train")
    assert [s.id for s in train] == ["000002"] and train.split == "train"
    with pytest.raises(ValueError, match="available splits: train, val"):
        open_scenes(root, split="trainval")
    with pytest.raises(ValueError, match="holds VOC roots"):
        open_scenes(tmp_path / "VOCdevkit")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000009\n")
    with pytest.raises(ValueError, match="000009.xml"):
        open_scenes(root, split="test")
    (root / "Annotations" / "000003.xml").write_text(_voc_xml("../../x.jpg", 5, 5, []))
    with pytest.raises(ValueError, match="escapes"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_scenes(root)
    (root / "Annotations" / "000003.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match="000003.xml: invalid XML"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_scenes(root)


@pytest.mark.parametrize("bndbox, tag, why", [("<xmin>1</xmin><ymin>two</ymin><xmax>9</xmax><ymax>9</ymax>",
                                               "<ymin>", "'two', not a number"),
                                              ("<xmin>1</xmin><ymin>2</ymin><ymax>9</ymax>", "<xmax>", "missing")])
def test_voc_unreadable_box_coordinates_are_refused(tmp_path, bndbox, tag, why):
    root = tmp_path / "VOC"
    _voc_fixture(root)
    (root / "Annotations" / "000002.xml").write_text(
        "<annotation><filename>000002.jpg</filename><size><width>20</width><height>10</height></size>"
        "<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object>"
        f"<object><name>dog</name><bndbox>{bndbox}</bndbox></object></annotation>")
    with pytest.raises(ValueError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_scenes(root)
    message = str(err.value)
    assert "000002.xml" in message and "object 2 ('dog')" in message and tag in message and why in message


def test_voc_object_without_bndbox_is_dropped_with_a_warning(tmp_path):
    root = tmp_path / "VOC"
    _voc_fixture(root)
    (root / "Annotations" / "000002.xml").write_text(
        "<annotation><filename>000002.jpg</filename><size><width>20</width><height>10</height></size>"
        "<object><name>dog</name></object>"
        "<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object>"
        "</annotation>")
    with pytest.warns(UserWarning, match=r"000002\.xml: .*dropped 1 box"):
        scene = open_scenes(root, split="train")[0]
    assert scene.boxes.tolist() == [[1, 1, 10, 8]] and scene.labels.tolist() == [VOC_CLASSES.index("cat") + 1]


def test_voc_colour_coded_segmentation(tmp_path):
    root = tmp_path / "VOC"
    index = _voc_fixture(root)
    Image.fromarray(voc_colormap()[index]).save(root / "SegmentationObject" / "000001.png")  # RGB png
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = open_scenes(root, split="val")[0].instance_masks()
    np.testing.assert_array_equal(masks[1], index == 2)


# --------------------------------------------------------------------------------------- plain folder


def test_plain_folder(tmp_path):
    root = tmp_path / "pics"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.new("RGB", (12, 7)).save(root / "a.jpg")
    Image.new("L", (5, 9)).save(root / "sub" / "b.png")
    Image.new("RGB", (3, 4)).save(root / "sub" / "deeper" / "c.JPG")
    Image.new("RGB", (3, 4)).save(root / ".hidden" / "d.jpg")
    Image.new("RGB", (3, 4)).save(root / ".e.jpg")
    (root / "notes.txt").write_text("no image")
    (root / "broken.jpg").write_bytes(b"")
    ss = open_scenes(root)
    assert ss.format == "folder" and ss.categories == {}
    assert [Path(s.file).relative_to(root).as_posix() for s in ss] == ["a.jpg", "broken.jpg", "sub/b.png",
                                                                       "sub/deeper/c.JPG"]
    assert [s.id for s in ss] == [0, 1, 2, 3]
    assert [(s.width, s.height) for s in ss] == [(12, 7), (0, 0), (5, 9), (3, 4)]
    s = ss[0]
    assert not s.annotated and s.boxes.shape == (0, 4) and s.labels.shape == (0,)
    assert s.instance_masks().shape == (0, 7, 12) and not s.object_mask().any()
    assert len(open_scenes(root, split="sub")) == 2
    with pytest.raises(ValueError, match="subfolders: sub"):
        open_scenes(root, split="val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        open_scenes(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        open_scenes(tmp_path / "absent")


# ----------------------------------------------------------------------------------- built-in scenes


def test_scenes_folder_reads_back_the_generated_masks(tmp_path):
    out = tmp_path / "scenes"
    write_scenes(out, num_images=5, seed=2, size=64, progress=False)
    ss = open_scenes(out)
    assert ss.format == "coco" and ss.root == str(out) and len(ss) == 5
    assert [s.id for s in open_scenes(out, split="val")] == [5]
    assert open_scenes(out / "annotations.json")[0].file == ss[0].file == str(out / "images" / "000001.jpg")
    for i, s in enumerate(ss):
        truth = render_scene(2, i, 64)
        masks = s.instance_masks()
        np.testing.assert_array_equal(masks, np.stack(truth.masks))
        assert s.labels.tolist() == truth.category_ids and is_valid(s.boxes, 64, 64)
        for mask, box in zip(masks, s.boxes.tolist()):
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_write_scenes_refuses_a_folder_of_other_files(tmp_path):
    """write_scenes writes into a new or empty folder, or rewrites its own scenes (an interrupted or repeated
    call); a folder holding anything else, a file, or an absurd size is refused before anything is written."""
    out = tmp_path / "scenes"
    ann = write_scenes(out, num_images=3, seed=2, size=32, progress=False)
    before = ann.read_bytes()
    ann.unlink()  # an interrupted call: images but no annotations.json yet
    assert write_scenes(out, num_images=3, seed=2, size=32, progress=False).read_bytes() == before
    assert write_scenes(out, num_images=3, seed=2, size=32, progress=False).read_bytes() == before  # repeated
    for kw, why in (({"seed": 3}, "annotations.json"), ({"num_images": 2}, "images/000003.jpg")):
        with pytest.raises(ValueError, match=f"holds files that are not these .*{why}.*new or empty folder"):
            write_scenes(out, **{"num_images": 3, "seed": 2, "size": 32, "progress": False, **kw})
    assert ann.read_bytes() == before
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"scenes: holds files that are not these 3 scenes \(notes\.txt\)"):
        write_scenes(out, num_images=3, seed=2, size=32, progress=False)
    with pytest.raises(ValueError, match="notes.txt is a file, not a folder"):
        write_scenes(out / "notes.txt", num_images=3, seed=2, size=32, progress=False)
    with pytest.raises(ValueError, match=r"size must be 32 \.\. 4096 pixels, got 100000"):
        write_scenes(tmp_path / "huge", num_images=1, seed=0, size=100000, progress=False)
    assert not (tmp_path / "huge").exists()
