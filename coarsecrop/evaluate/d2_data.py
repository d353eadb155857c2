"""Any COCO json, VOC root or the built-in scenes as detectron2 data sets (``coarsecrop detectron2 --scenes``).

    data = d2_data.describe("data/scenes", train_split="train", val_split="val")  # checks; no detectron2
    d2_data.register(data)          # in every process detectron2 launches (spawned ones too)
    options = d2_data.options(data, user_options, mask_on)  # DATASETS, NUM_CLASSES, masks, sizes

``describe`` reads the source once with ``coarsecrop.data.scenes.open_scenes`` (so every check and error
of our readers applies: a missing split names the splits there are, a missing file names the file) and
returns a picklable ``D2Data``: the formats, splits, classes, mask format and image sizes that decide the
detectron2 options. It needs no detectron2, so it runs (and fails on bad input) before anything trains.

The rules, once:

- **Formats.** A COCO json, or a folder written by ``coarsecrop scenes`` (its ``annotations.json``), is
  read by detectron2's ``load_coco_json`` and cut to the split's image ids (the scenes' ``split`` key);
  evaluated COCO-style (``COCOEvaluator``: AP, AP50, AP75 for boxes and masks), from the split's own
  annotations (never from a json that holds other splits, which would count their images as misses).
  A VOC root (Annotations/, JPEGImages/, ImageSets/Main/) is read by our VOC reader (boxes as detectron2's
  own VOC loader: 1-based corners minus one, difficult objects kept) and evaluated VOC-style
  (``PascalVOCDetectionEvaluator``: the 11-point metric when the root's name holds 2007, else the area
  metric; AP50 is the VOC number).
- **Classes.** The data's own: the json's categories in id order; for a VOC root the 20 VOC classes when
  every name in its splits is one of them, else the names found there, sorted. ``NUM_CLASSES`` follows.
- **Masks.** ``bitmask`` when any non-crowd instance has an RLE segmentation (the built-in scenes),
  ``polygon`` when all are polygons (COCO 2017: only its crowd regions are RLE, and crowds are not
  trained on), none (``MASK_ON False``) when no instance has one (and always for a VOC root). A json where
  some instances have a segmentation and others not is refused: detectron2's mapper needs one on each.
- **Sizes.** The test size is the train images' median shorter side, the longer-side cap their largest
  side, and training uses that single scale: the paper configs' 640-800 px inputs are meant for COCO and
  VOC photos read at detectron2's defaults, not for 64-256 px scenes. Any INPUT size the user sets wins;
  for the paper's protocol on real COCO and VOC use ``--datasets`` (detectron2's own names and sizes).
- **Splits.** ``train_split`` of ``scenes`` trains, ``val_split`` of ``val_scenes`` (default: ``scenes``)
  tests: a COCO json's ``split`` keys (the built-in scenes), a VOC ImageSets list; a split of None takes
  every image (real COCO: ``instances_train2017.json`` and, as ``val_scenes``, ``instances_val2017.json``).
- **Names.** ``coarsecrop_<hash of format, source, images, split>_<train|val>``: unique per data set and
  split, the same in every process.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from coarsecrop.data.scenes import VOC_CLASSES, SceneSet, open_scenes, voc_year

MASK_FORMATS = ("polygon", "bitmask")
SIZE_KEYS = ("INPUT.MIN_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TRAIN", "INPUT.MAX_SIZE_TEST")


@dataclass(frozen=True)
class D2Data:
    """One data set as detectron2 sees it (picklable: sent to every launched process).

    format: "coco" (a COCO json, built-in scenes) or "voc" (a VOC root).
    train / val: (source, image root, split) each: source is the annotation json (coco) or the VOC root;
        split None takes every image; val None: no test set.
    train_name / val_name: the registered names (val_name None: no test set).
    classes: the class names, contiguous id order; mask_format: "polygon", "bitmask" or None (no masks).
    min_size / max_size: the train images' median shorter side and largest side (the sizes rule above).
    train_images / val_images / train_instances: counts, for the record and the errors.
    """

    format: str
    train: tuple[str, str, str | None]
    val: tuple[str, str, str | None] | None
    train_name: str
    val_name: str | None
    classes: tuple[str, ...]
    mask_format: str | None
    min_size: int
    max_size: int
    train_images: int
    val_images: int
    train_instances: int

    @property
    def evaluator(self) -> str:
        return "coco" if self.format == "coco" else "pascal_voc"

    def record(self) -> dict:
        """What metrics.json keeps of the data."""
        return {"format": self.format, "train": list(self.train), "val": list(self.val) if self.val else None,
                "names": [self.train_name, self.val_name], "classes": list(self.classes),
                "mask_format": self.mask_format, "evaluator": self.evaluator, "min_size": self.min_size,
                "max_size": self.max_size, "train_images": self.train_images, "val_images": self.val_images,
                "train_instances": self.train_instances}


def _name(fmt: str, part: tuple, role: str) -> str:
    key = json.dumps([fmt, *part])
    return f"coarsecrop_{hashlib.sha1(key.encode()).hexdigest()[:10]}_{role}"


def option_pairs(opts: list) -> dict:
    """detectron2's KEY VALUE ... options as {KEY: VALUE}; ValueError for an odd list."""
    if len(opts) % 2:
        raise ValueError(f"detectron2 options come in KEY VALUE pairs; got an odd list: {opts}")
    return dict(zip(opts[::2], opts[1::2]))


def _coco_segmentations(sets: list[SceneSet]) -> list:
    """The segmentation (or None) of every non-crowd annotation of the images of ``sets`` (each annotation
    file read once, also when train and val come from the same one)."""
    ids: dict[str, set] = {}
    for scene_set in sets:
        ids.setdefault(scene_set.source, set()).update(s.id for s in scene_set.scenes)
    segs = []
    for source, wanted in ids.items():
        data = json.loads(Path(source).read_text(encoding="utf-8"))
        segs += [a.get("segmentation") or None for a in data.get("annotations", [])
                 if a.get("image_id") in wanted and not a.get("iscrowd", 0)]
    return segs


def _mask_format(segs: list, source: str) -> str | None:
    have = [s for s in segs if s is not None]
    if not have:
        return None
    if len(have) < len(segs):
        raise ValueError(f"{source}: {len(segs) - len(have)} of {len(segs)} instances have no segmentation "
                         "and the others have one; detectron2 trains masks only when every instance has one: "
                         "pass --opt MODEL.MASK_ON False for boxes alone, or complete the segmentations")
    return "bitmask" if any(isinstance(s, dict) for s in have) else "polygon"


def _voc_classes(sets: list[SceneSet]) -> tuple[str, ...]:
    names = {scene_set.categories[int(label)] for scene_set in sets for s in scene_set.scenes for label in s.labels}
    if names <= set(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(sorted(names))


def _part(scene_set: SceneSet) -> tuple[str, str, str | None]:
    return (str(scene_set.source), str(scene_set.root), scene_set.split)


def describe(scenes: str | Path, images: str | Path | None = None, train_split: str | None = "train",
             val_split: str | None = "val", val_scenes: str | Path | None = None,
             val_images: str | Path | None = None, test: bool = True) -> D2Data:
    """Read and check a data set for detectron2 (see the module's rules); ValueError / FileNotFoundError
    in one line, naming the source, for a missing split, no boxes, mixed segmentations.

    The test set is ``val_split`` of ``val_scenes`` (default: of ``scenes``); ``test=False``: none."""
    root = Path(scenes)
    if root.is_dir() and not any((d / "annotations.json").is_file() or (d / "Annotations").is_dir()
                                 for d in [root, *(c for c in root.iterdir() if c.is_dir())]):
        raise ValueError(f"{root}: not a data set with boxes (no annotations.json, no VOC Annotations/); pass a "
                         "COCO json, a VOC root or a folder made by `coarsecrop scenes`")
    train = open_scenes(scenes, images, train_split)
    val = open_scenes(val_scenes if val_scenes is not None else scenes,
                      val_images if val_scenes is not None else images, val_split) if test else None
    for scene_set in [train] + ([val] if val is not None else []):
        if scene_set.format == "folder":
            raise ValueError(f"{scene_set.source}: a plain image folder has no boxes to train or test a detector "
                             "on; pass a COCO json, a VOC root or a folder made by `coarsecrop scenes`")
    if val is not None and val.format != train.format:
        raise ValueError(f"the train data ({train.source}) is {train.format} and the test data ({val.source}) "
                         f"is {val.format}: give both in one format")
    which = f" (split {train_split!r})" if train_split is not None else ""
    instances = sum(len(s.boxes) for s in train.scenes)
    if not train.scenes or instances == 0:
        raise ValueError(f"{train.source}{which}: {len(train.scenes)} images and no boxes: nothing to train a "
                         "detector on; pass a data set (or split) with box annotations")
    if val is not None and not val.scenes:
        raise ValueError(f"{val.source}: split {val_split!r} has no images to test on")
    if val is not None and train.format == "voc" and val_split is None:
        raise ValueError(f"{val.source}: the VOC evaluator reads ImageSets/Main/<split>.txt: name the test split")
    sizes = [(s.width, s.height) for s in train.scenes if s.width > 0 and s.height > 0]
    if not sizes:
        raise ValueError(f"{train.source}: no image sizes in the annotations (width/height); detectron2 needs them")
    min_size = int(statistics.median(min(w, h) for w, h in sizes))
    max_size = max(max(w, h) for w, h in sizes)
    sets = [train] + ([val] if val is not None else [])
    if train.format == "coco":
        classes = tuple(train.categories[c] for c in sorted(train.categories))
        if val is not None and tuple(val.categories[c] for c in sorted(val.categories)) != classes:
            raise ValueError(f"{val.source}: its categories differ from {train.source}'s; the test set must "
                             "have the train set's classes")
        mask_format = _mask_format(_coco_segmentations(sets), train.source)
    else:
        classes, mask_format = _voc_classes(sets), None
    train_part = _part(train)
    val_part = _part(val) if val is not None else None
    return D2Data(format=train.format, train=train_part, val=val_part,
                  train_name=_name(train.format, train_part, "train"),
                  val_name=_name(train.format, val_part, "val") if val_part else None,
                  classes=classes, mask_format=mask_format, min_size=min_size, max_size=max_size,
                  train_images=len(train.scenes), val_images=len(val.scenes) if val is not None else 0,
                  train_instances=instances)


def options(data: D2Data, user: list[str], mask_on: bool) -> list[str]:
    """KEY VALUE options for ``data`` over a config whose ``MODEL.MASK_ON`` is ``mask_on``: the data sets,
    the class count (a different one in ``user`` is an error), masks and their format, the input sizes
    (those ``user`` sets win). They go before the user's own, which keep the last word."""
    given = option_pairs(user)
    classes = len(data.classes)
    if "MODEL.ROI_HEADS.NUM_CLASSES" in given and int(given["MODEL.ROI_HEADS.NUM_CLASSES"]) != classes:
        raise ValueError(f"--opt MODEL.ROI_HEADS.NUM_CLASSES {given['MODEL.ROI_HEADS.NUM_CLASSES']} disagrees with "
                         f"the data: {data.train[0]} has {classes} classes; leave the option out (it is set from "
                         "the data)")
    opts = ["DATASETS.TRAIN", repr((data.train_name,)),
            "DATASETS.TEST", repr((data.val_name,)) if data.val_name else "()",
            "MODEL.ROI_HEADS.NUM_CLASSES", str(classes)]
    if mask_on and data.mask_format is None:
        opts += ["MODEL.MASK_ON", "False"]  # no masks in the data: boxes only
    elif data.mask_format is not None:
        opts += ["INPUT.MASK_FORMAT", data.mask_format]
    sizes = {"INPUT.MIN_SIZE_TRAIN": repr((data.min_size,)), "INPUT.MIN_SIZE_TEST": str(data.min_size),
             "INPUT.MAX_SIZE_TRAIN": str(data.max_size), "INPUT.MAX_SIZE_TEST": str(data.max_size)}
    for key in SIZE_KEYS:
        if key not in given:
            opts += [key, sizes[key]]
    return opts


def _split_ids(ann_file: str, split: str | None) -> set | None:
    if split is None:
        return None
    data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    return {img["id"] for img in data["images"] if img.get("split") == split}


def _load_coco(part: tuple, name: str) -> list[dict]:
    from detectron2.data.datasets import load_coco_json

    source, images, split = part
    ids = _split_ids(source, split)
    dicts = load_coco_json(source, images, name)
    return [d for d in dicts if ids is None or d["image_id"] in ids]


def voc_dicts(part: tuple, classes: tuple[str, ...], box_mode: object = 0) -> list[dict]:
    """detectron2 dicts of a VOC root's split from our VOC reader (``box_mode``: BoxMode.XYXY_ABS)."""
    source, images, split = part
    scene_set = open_scenes(source, images, split)
    index = {name: i for i, name in enumerate(classes)}
    dicts = []
    for s in scene_set.scenes:
        annotations = [{"bbox": [float(v) for v in box], "bbox_mode": box_mode,
                        "category_id": index[scene_set.categories[int(label)]]}
                       for box, label in zip(s.boxes.tolist(), s.labels.tolist())]
        dicts.append({"file_name": s.file, "image_id": s.id, "height": s.height, "width": s.width,
                      "annotations": annotations})
    return dicts


def _load_voc(part: tuple, classes: tuple[str, ...]) -> list[dict]:
    from detectron2.structures import BoxMode

    return voc_dicts(part, classes, BoxMode.XYXY_ABS)


def register(data: D2Data) -> None:
    """Register ``data``'s train and val sets with detectron2 in this process (again: a no-op)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name, part in ((data.train_name, data.train), (data.val_name, data.val)):
        if name is None or name in DatasetCatalog.list():
            continue
        if data.format == "coco":
            DatasetCatalog.register(name, lambda p=part, n=name: _load_coco(p, n))
            MetadataCatalog.get(name).set(thing_classes=list(data.classes), evaluator_type="coco",
                                          image_root=part[1])
        else:
            source, _, split = part
            year = voc_year(source)
            DatasetCatalog.register(name, lambda p=part: _load_voc(p, data.classes))
            MetadataCatalog.get(name).set(thing_classes=list(data.classes), evaluator_type="pascal_voc",
                                          dirname=source, split=split, year=year)
