"""One Scene record for every source: COCO json, VOC xml, plain image folders, our synthetic scenes.

CONTRACT (other modules rely on it; keep it stable):

- ``Scene`` is a light index record: no pixels are held. ``load_image(scene)`` (coarsecrop.data.images)
  decodes the pixels on demand, ``scene.instance_masks()`` decodes the GT masks on demand.
- Boxes are float32 tensors ``[K, 4]`` ``x1 y1 x2 y2`` in pixels of the original image, clipped to it,
  width and height >= 1 (see ``coarsecrop.boxes``).
- ``open_scenes(path, images=None, split=None)`` detects the format and returns a ``SceneSet``.

Reading choices (documented once, here):

- COCO ``iscrowd`` regions are not boxes or instances (no crop strategy should target a crowd box), but
  their pixels count as object pixels: ``object_mask()`` is the union of the instance masks and the crowd
  regions, so objectness is not understated on crowded images.
- COCO annotations without a segmentation get their filled box as mask; a file with no segmentation at
  all gives scenes with ``mask_decoder=None`` (``masks_are_boxes``).
- VOC ``difficult`` objects are kept (they are real objects; for objectness they are object pixels).
- VOC ``SegmentationObject/<stem>.png``: palette index k is the k-th object of the XML (1-based), 0 is
  background, 255 (the void band along object borders) is in no instance mask (``void_decoder`` gives it:
  crop objectness and segmentation leave it out). Images without such a png fall back to filled boxes.
  VOC boxes are 1-based inclusive pixel indices: ``[xmin - 1, ymin - 1, xmax, ymax]`` in our coordinates.
- Boxes reaching more than ``CLIP_TOLERANCE`` px outside their image are clipped, boxes of zero or
  negative size (given so, or after clipping: wholly outside the image) are dropped, with one ``warnings.warn`` per annotation file
  naming it and the counts. An image entry naming a missing file is kept: the crop job records it as
  skipped when loading fails. A ``file_name`` that escapes the image root is refused (ValueError).
- Malformed values are refused, never read as 0 (ValueError naming the file, the image / annotation /
  object and the field): a non-numeric COCO ``bbox`` element, ``category_id``, ``width`` or ``height``,
  duplicate COCO image ids, a VOC ``<bndbox>`` lacking a coordinate or holding a non-number. A VOC
  object without any ``<bndbox>`` is dropped and counted in the file's warning.
- Masks are decoded lazily by picklable ``functools.partial`` decoders (DataLoader workers may be
  spawned), never all at once.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import warnings
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pycocotools.mask as mask_util
import torch

from coarsecrop.data.images import BadImage, image_size
from coarsecrop.data.masks import (CITYSCAPES_CLASSES, coco_rle, decode_cityscapes_labels, decode_coco_crowd,
                                    decode_coco_masks, decode_voc_masks, decode_voc_void, filled_boxes)

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pbm", ".jfif")
CLIP_TOLERANCE = 1.0  # px a box may reach outside its image before it counts as clipped (float rounding)


@dataclass
class Scene:
    """One scene image and its (optional) annotations.

    id: unique id within the data set (COCO image id, VOC file stem, or running index for folders).
    file: absolute path of the image file.
    width, height: size from the annotation (or read from the file header for plain folders);
        may be 0 when unknown, then the crop job takes it from the decoded image.
    boxes: float32 [K, 4] xyxy pixels (empty [0, 4] when unannotated).
    labels: int64 [K] category ids (empty when unannotated).
    mask_decoder: callable returning bool ndarray [K, H, W] of instance masks, or None when the
        source has no masks (then ``instance_masks`` falls back to filled boxes and says so via
        ``masks_are_boxes``).
    annotated: False for plain image folders: only the unsupervised strategies apply.
    crowd_decoder: callable returning bool [H, W] of COCO crowd regions (object pixels that are not
        instances), or None.
    areas: float32 [K] the source's annotated area of each instance (COCO's ``area``; NaN where an
        annotation has none), or None: the evaluation's size ranges (APs/APm/APl) use it, as COCOeval does.
    difficult: bool [K] VOC's ``<difficult>`` flags, or None (no instance is difficult): the evaluations
        neither reward nor penalise them, as the VOC devkit.
    crowd: COCO's crowd annotations, ((category id, xyxy box or None, area or NaN, segmentation or None), ...):
        regions the AP evaluation ignores (a detection on one counts neither way).
    void_decoder: callable returning bool [H, W] of VOC's void pixels (index 255 of SegmentationObject:
        object borders and unlabelled regions), which semantic segmentation ignores; or None.
    semantic_decoder: callable returning uint8 [H, W] class indices (of ``SceneSet.semantic_classes``, 255
        ignored) where the source labels pixels itself (Cityscapes), or None.
    """

    id: int | str
    file: str
    width: int
    height: int
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.float32))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.int64))
    mask_decoder: Callable[[], np.ndarray] | None = None
    annotated: bool = True
    crowd_decoder: Callable[[], np.ndarray] | None = None
    areas: torch.Tensor | None = None
    difficult: torch.Tensor | None = None
    crowd: tuple = ()
    void_decoder: Callable[[], np.ndarray] | None = None
    semantic_decoder: Callable[[], np.ndarray] | None = None

    @property
    def masks_are_boxes(self) -> bool:
        return self.mask_decoder is None

    def _size(self) -> tuple[int, int]:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{self.file}: image size unknown (no width/height in the annotations); "
                             "masks need it")
        return self.height, self.width

    def instance_masks(self) -> np.ndarray:
        """Bool [K, H, W]; filled boxes when the source has no instance masks."""
        h, w = self._size()
        if len(self.boxes) == 0:
            return np.zeros((0, h, w), dtype=bool)
        if self.mask_decoder is None:
            return filled_boxes(self.boxes, h, w)
        try:
            masks = self.mask_decoder()
        except ValueError as err:
            raise ValueError(f"{self.file}: cannot decode its instance masks: {err}") from err
        if masks.shape != (len(self.boxes), h, w):
            raise ValueError(f"{self.file}: instance masks have shape {masks.shape}, expected "
                             f"{(len(self.boxes), h, w)} (K boxes x height x width)")
        return masks

    def object_mask(self) -> np.ndarray:
        """Bool [H, W]: union of all instance masks (the pixels that count as 'object')."""
        h, w = self._size()
        masks = self.instance_masks()
        union = masks.any(0) if len(masks) else np.zeros((h, w), dtype=bool)
        if self.crowd_decoder is not None:
            union |= self.crowd_decoder()
        return union


@dataclass
class SceneSet:
    """A list of scenes plus what describes the data set (format, root, categories)."""

    scenes: list[Scene]
    format: str  # "coco" | "voc" | "cityscapes" | "folder"
    root: str
    categories: dict[int, str]
    source: str = ""  # the path given to open_scenes (annotation file or folder), absolute
    split: str | None = None
    semantic_classes: tuple[str, ...] = ()  # the classes of Scene.semantic_decoder (Cityscapes' 19)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> Scene:
        return self.scenes[i]


# ------------------------------------------------------------------------------------------ helpers


def safe_join(root: Path, name: str, entry: str) -> Path:
    """``root / name`` for a relative ``name`` that stays under ``root``; ValueError naming ``entry``
    otherwise (absolute paths, drive letters, ``..`` escapes)."""
    text = str(name).replace("\\", "/")
    if not text.strip():
        raise ValueError(f"{entry}: empty file name")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"{entry}: file name {name!r} is absolute; it must be relative to the image "
                         f"root {root}")
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"{entry}: file name {name!r} escapes the image root {root}; refusing it")
    return root / norm


def _warn_boxes(source: Path | str, clipped: int, dropped: int) -> None:
    if clipped or dropped:
        warnings.warn(f"{source}: clipped {clipped} box(es) reaching outside their image and dropped "
                      f"{dropped} box(es) that were empty (zero or negative size), wholly outside their image or "
                      "missing (a VOC object without <bndbox>)", stacklevel=3)


class _BoxCleaner:
    """Clip boxes to their image and drop empty ones, counting both for one warning per file."""

    def __init__(self) -> None:
        self.clipped = 0
        self.dropped = 0

    def __call__(self, x1: float, y1: float, x2: float, y2: float, width: int, height: int
                 ) -> list[float] | None:
        if not (math.isfinite(x1) and math.isfinite(y1) and math.isfinite(x2) and math.isfinite(y2)) \
                or x2 <= x1 or y2 <= y1:
            self.dropped += 1
            return None
        if width > 0 and height > 0:
            outside = (x1 < -CLIP_TOLERANCE or y1 < -CLIP_TOLERANCE or x2 > width + CLIP_TOLERANCE
                       or y2 > height + CLIP_TOLERANCE)
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if x2 <= x1 or y2 <= y1:  # entirely outside the image
                self.dropped += 1
                return None
            self.clipped += outside
        return [x1, y1, x2, y2]


def _box_tensor(boxes: list[list[float]], width: int, height: int) -> torch.Tensor:
    """float32 [K, 4] of already clipped boxes, sub-pixel ones widened to 1 px inside the image (the rule
    of ``coarsecrop.boxes.clip_boxes``, in numpy: torch's per-call overhead dominates at 1M images)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if width > 0 and height > 0 and len(b):
        for lo, hi, limit in ((0, 2, width), (1, 3, height)):
            short = b[:, hi] - b[:, lo] < 1
            if short.any():
                b[short, hi] = np.minimum(b[short, lo] + 1, limit)
                b[short, lo] = b[short, hi] - 1
    return torch.from_numpy(b)


# --------------------------------------------------------------------------------------------- COCO


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the annotation file ({err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO annotation file (expected an object with an 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise ValueError(f"{path}: '{key}' must be a list")
    return data


def _coco_int(value, where: str, key: str) -> int:
    """``value`` (a COCO id, size, ...) as an int; ValueError naming ``where`` and ``key`` for anything that
    is not a whole number (null, text, 2.5, true)."""
    if not isinstance(value, bool):
        try:
            number = int(value)
        except (TypeError, ValueError):
            pass
        else:
            if not isinstance(value, float) or value.is_integer():
                return number
    raise ValueError(f"{where}: '{key}' is {json.dumps(value)}, not a whole number; fix it in the file")


def _coco_box(ann: dict, height: int, width: int, where: str) -> list[float] | None:
    """xyxy from ``bbox`` (xywh), or from the segmentation when the bbox is missing; None when neither
    gives 4 values. ValueError naming ``where`` (file and annotation) for a bbox element that is no number."""
    bbox = ann.get("bbox")
    if bbox is None and ann.get("segmentation") is not None and height > 0 and width > 0:
        rle = coco_rle(ann["segmentation"], height, width)
        if rle is not None:
            bbox = mask_util.toBbox(rle).tolist()
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        if any(isinstance(v, bool) for v in bbox):
            raise TypeError
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'bbox' is {json.dumps(bbox)}; it must be 4 numbers [x, y, width, height]; "
                         "fix it in the file") from None
    return [x, y, x + w, y + h]


def _coco_area(ann: dict) -> float:
    """An annotation's ``area`` (COCOeval's size ranges read it), NaN when it has none or it is no number."""
    area = ann.get("area")
    return float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) else math.nan


def _check_coco_images(images: list, source: Path) -> None:
    """Every image entry is an object with an int or str ``id`` and a ``file_name``, and no id repeats
    (annotations name their image by id); ValueError naming ``source`` otherwise."""
    seen: set = set()
    repeated: list = []
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise ValueError(f"{source}: image entry #{i} lacks 'id' or 'file_name': {img}")
        key = img["id"]
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise ValueError(f"{source}: image entry #{i} has id {json.dumps(key)}; ids must be integers or "
                             "strings")
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    if repeated:
        shown = ", ".join(str(k) for k in repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise ValueError(f"{source}: {len(repeated)} image id(s) occur more than once ({shown}); annotations "
                         "could not tell these images apart: give every image entry its own id")


def _select_split(images: list[dict], split: str | None, source: Path) -> list[dict]:
    if split is None:
        return images
    available = sorted({str(img["split"]) for img in images if "split" in img})
    if not available:
        raise ValueError(f"{source}: its image entries carry no 'split' key, so split={split!r} cannot be "
                         "selected; take every image (split None: no --split for `crops`, --train-split all and "
                         "--val-split all for `evaluate` and `detectron2`) and the val images from their own file "
                         "(--val-scenes, e.g. COCO's instances_val2017.json)")
    if split not in available:
        raise ValueError(f"{source}: no images in split {split!r}; available splits: {', '.join(available)}")
    return [img for img in images if img.get("split") == split]


def read_coco(ann_file: str | Path, images: str | Path | None = None, split: str | None = None) -> SceneSet:
    """Scenes of a COCO annotation file; image files under ``images`` (default: the file's folder)."""
    ann_file = Path(ann_file).absolute()
    data = _load_json(ann_file)
    root = Path(images).absolute() if images is not None else ann_file.parent
    categories = {}
    for i, c in enumerate(data.get("categories", [])):
        if not isinstance(c, dict):
            raise ValueError(f"{ann_file}: category entry #{i} is not an object: {c}")
        key = _coco_int(c.get("id"), f"{ann_file}: category entry #{i}", "id")
        categories[key] = str(c.get("name", key))
    _check_coco_images(data["images"], ann_file)
    entries = _select_split(data["images"], split, ann_file)
    wanted = {img["id"] for img in entries}
    by_image: dict[object, list[dict]] = defaultdict(list)
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise ValueError(f"{ann_file}: annotation entry #{i} is not an object: {ann}")
        image_id = ann.get("image_id")
        if isinstance(image_id, (int, str)) and image_id in wanted:
            by_image[image_id].append(ann)
    has_masks = any(a.get("segmentation") for a in data.get("annotations", []))
    clean = _BoxCleaner()
    scenes = []
    for img in entries:
        entry = f"{ann_file}: image id {img['id']}"
        file = safe_join(root, img["file_name"], entry)
        width, height = (_coco_int(img.get(key) or 0, entry, key) for key in ("width", "height"))
        if width < 0 or height < 0:
            raise ValueError(f"{entry}: negative size {width}x{height}; fix 'width' and 'height' in the file")
        boxes, labels, segs, areas, crowd_segs, crowd_boxes, crowd = [], [], [], [], [], [], []
        for ann in by_image.get(img["id"], []):
            where = f"{ann_file}: annotation id {ann.get('id')} (image id {img['id']})"
            if ann.get("iscrowd", 0):
                crowd_segs.append(ann.get("segmentation"))
                crowd_boxes.append(_coco_box(ann, height, width, where))
                crowd.append((_coco_int(ann.get("category_id", 0), where, "category_id"), crowd_boxes[-1],
                              _coco_area(ann), ann.get("segmentation")))
                continue
            raw = _coco_box(ann, height, width, where)
            box = clean(*raw, width, height) if raw is not None else None
            if raw is None:
                clean.dropped += 1
            if box is None:
                continue
            boxes.append(box)
            labels.append(_coco_int(ann.get("category_id", 0), where, "category_id"))
            segs.append(ann.get("segmentation") or None)
            areas.append(_coco_area(ann))
        box_t = _box_tensor(boxes, width, height)
        sized = width > 0 and height > 0
        decoder = partial(decode_coco_masks, tuple(segs), box_t, height, width) if has_masks and sized else None
        crowd_union = (partial(decode_coco_crowd, tuple(crowd_segs), tuple(crowd_boxes), height, width)
                       if crowd_segs and sized else None)
        scenes.append(Scene(id=img["id"], file=str(file), width=width, height=height, boxes=box_t,
                            labels=torch.tensor(labels, dtype=torch.int64), mask_decoder=decoder,
                            annotated=True, crowd_decoder=crowd_union, areas=torch.tensor(areas, dtype=torch.float32),
                            crowd=tuple(crowd)))
    _warn_boxes(ann_file, clean.clipped, clean.dropped)
    return SceneSet(scenes=scenes, format="coco", root=str(root), categories=categories,
                    source=str(ann_file), split=split)


# ---------------------------------------------------------------------------------------------- VOC


def _voc_split_stems(root: Path, split: str) -> list[str]:
    main = root / "ImageSets" / "Main"
    listing = main / f"{split}.txt"
    if not listing.is_file():
        available = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        raise ValueError(f"{root}: no split {split!r} ({listing} not found); available splits: "
                         f"{', '.join(available) or 'none (no ImageSets/Main/*.txt)'}")
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def _parse_voc_xml(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml}: invalid XML ({err})") from err
    except OSError as err:
        raise ValueError(f"{xml}: cannot read ({err})") from err


def _text_number(node: ET.Element | None, tag: str, where: str, required: bool) -> float:
    """The number in ``node``'s child ``<tag>``. Missing or empty: ValueError when ``required``, else 0.0
    (unknown). Not a number: ValueError. ``where`` names the file and element for the message."""
    text = node.findtext(tag) if node is not None else None
    if text is None or not text.strip():
        if required:
            raise ValueError(f"{where}: <{tag}> is missing or empty; give every <bndbox> its <xmin>, <ymin>, "
                             "<xmax> and <ymax> in pixels")
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}: <{tag}> is {text.strip()!r}, not a number; fix it in the file")
    return value


def voc_categories(nodes) -> dict[int, str]:
    """Category id -> name of a VOC root from the parsed XML of every file of its ``Annotations/``: VOC's 20
    classes (ids 1..20), then every other class name met in any file, sorted. Read over all files, not one
    split's, so that every split of a root numbers its classes alike (train's "dumbbell" is test's
    "dumbbell" whichever split meets it first)."""
    names = {(obj.findtext("name") or "").strip() for node in nodes for obj in node.findall("object")}
    extra = sorted(names - set(VOC_CLASSES))
    return {i + 1: name for i, name in enumerate([*VOC_CLASSES, *extra])}


def voc_year(root: str | Path) -> int:
    """The PASCAL VOC year of a root, from its name (VOC2007 -> 2007; any other: 2012), which decides its AP
    (the 11-point metric for 2007), as detectron2's data set names do."""
    return 2007 if "2007" in Path(root).name else 2012


def read_voc(root: str | Path, images: str | Path | None = None, split: str | None = None) -> SceneSet:
    """Scenes of a VOC root (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt,
    SegmentationObject/<stem>.png when present). ``images`` overrides the JPEGImages folder. Class ids: VOC's
    20 classes 1..20; a root with other class names numbers them by ``voc_categories`` (every split alike)."""
    root = Path(root).absolute()
    ann_dir = root / "Annotations"
    img_dir = Path(images).absolute() if images is not None else root / "JPEGImages"
    if split is not None:
        stems = _voc_split_stems(root, split)
        missing = [s for s in stems if not (ann_dir / f"{s}.xml").is_file()]
        if missing:
            raise ValueError(f"{root}: {len(missing)} annotation file(s) listed in split {split!r} are missing, "
                             f"e.g. {ann_dir / (missing[0] + '.xml')}")
        xmls = [ann_dir / f"{s}.xml" for s in stems]
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
        if not xmls:
            raise ValueError(f"{root}: no annotation files in {ann_dir}")
    nodes = {xml: _parse_voc_xml(xml) for xml in sorted(ann_dir.glob("*.xml"))}  # each file parsed once
    categories = voc_categories(nodes.values())
    ids = {name: i for i, name in categories.items()}
    scenes = []
    for xml in xmls:
        node = nodes[xml]
        stem = xml.stem
        file = safe_join(img_dir, (node.findtext("filename") or "").strip() or f"{stem}.jpg", str(xml))
        size = node.find("size")
        width, height = (int(_text_number(size, tag, f"{xml}: <size>", required=False))
                         for tag in ("width", "height"))
        clean = _BoxCleaner()
        boxes, labels, object_index, difficult = [], [], [], []
        for k, obj in enumerate(node.findall("object")):
            name = (obj.findtext("name") or "").strip()
            bnd = obj.find("bndbox")
            if bnd is None:  # no box at all: dropped, counted in the file's warning
                clean.dropped += 1
                continue
            x1, y1, x2, y2 = (_text_number(bnd, tag, f"{xml}: object {k + 1} ({name!r}) <bndbox>", required=True)
                              for tag in ("xmin", "ymin", "xmax", "ymax"))
            box = clean(x1 - 1, y1 - 1, x2, y2, width, height)
            if box is None:
                continue
            boxes.append(box)
            labels.append(ids[name])
            object_index.append(k)
            difficult.append((obj.findtext("difficult") or "0").strip() == "1")
        _warn_boxes(xml, clean.clipped, clean.dropped)
        png = root / "SegmentationObject" / f"{stem}.png"
        with_png = png.is_file() and width > 0 and height > 0
        decoder = partial(decode_voc_masks, str(png), tuple(object_index), height, width) if with_png else None
        scenes.append(Scene(id=stem, file=str(file), width=width, height=height,
                            boxes=_box_tensor(boxes, width, height),
                            labels=torch.tensor(labels, dtype=torch.int64), mask_decoder=decoder,
                            difficult=torch.tensor(difficult, dtype=torch.bool),
                            void_decoder=partial(decode_voc_void, str(png), height, width) if with_png else None))
    return SceneSet(scenes=scenes, format="voc", root=str(img_dir), categories=categories,
                    source=str(root), split=split)


# ------------------------------------------------------------------------------------- plain folders


def _walk_images(base: Path) -> list[Path]:
    """Image files under ``base`` and its subfolders (hidden ones skipped), sorted by relative path."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(base).as_posix())


def read_folder(root: str | Path, split: str | None = None) -> SceneSet:
    """Unannotated scenes: every image file under ``root`` (recursively); ``split`` picks a subfolder.
    Sizes come from the file headers (0 for unreadable files, which the crop job then skips)."""
    root = Path(root).absolute()
    base = root
    if split is not None:
        base = root / split
        if not base.is_dir():
            subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise ValueError(f"{root}: no subfolder {split!r} for the split; subfolders: "
                             f"{', '.join(subs) or 'none'}")
    files = _walk_images(base)
    if not files:
        raise ValueError(f"{base}: no image files found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    scenes = []
    for i, file in enumerate(files):
        try:
            width, height = image_size(file)
        except BadImage:
            width, height = 0, 0
        scenes.append(Scene(id=i, file=str(file), width=width, height=height, annotated=False))
    return SceneSet(scenes=scenes, format="folder", root=str(root), categories={}, source=str(root),
                    split=split)


# ------------------------------------------------------------------------------------------ dispatch


def read_cityscapes(root: str | Path, split: str | None = None) -> SceneSet:
    """A Cityscapes root (leftImg8bit/<split>/<city>/*_leftImg8bit.png, gtFine/<split>/<city>/
    *_gtFine_labelIds.png): every image of ``split`` (None: train and val; test's labels are placeholders)
    with its semantic labels (``semantic_decoder``, the 19 CITYSCAPES_CLASSES): Table 6's segmentation data."""
    root = Path(root).absolute()
    splits = sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())
    if split is not None and split not in splits:
        raise ValueError(f"{root}: no split {split!r} (no leftImg8bit/{split}/); available: {', '.join(splits)}")
    scenes = []
    for name in [split] if split else [s for s in ("train", "val") if s in splits]:
        for file in sorted((root / "leftImg8bit" / name).glob("*/*_leftImg8bit.png")):
            label = root / "gtFine" / name / file.parent.name / file.name.replace("_leftImg8bit", "_gtFine_labelIds")
            if not label.is_file():
                raise ValueError(f"{file}: no label image {label}; gtFine/ must hold one per image "
                                 "(*_gtFine_labelIds.png, as the Cityscapes download has it)")
            scenes.append(Scene(id=file.name[: -len("_leftImg8bit.png")], file=str(file), width=0, height=0,
                                annotated=False, semantic_decoder=partial(decode_cityscapes_labels, str(label))))
    return SceneSet(scenes=scenes, format="cityscapes", root=str(root / "leftImg8bit"), categories={},
                    source=str(root), split=split, semantic_classes=CITYSCAPES_CLASSES)


def _is_voc_root(path: Path) -> bool:
    return (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir()


def open_scenes(path: str | Path, images: str | Path | None = None, split: str | None = None) -> SceneSet:
    """Open any supported source: a COCO annotation file, a VOC root, a Cityscapes root, a plain image
    folder, or a folder written by ``coarsecrop scenes`` (holds ``annotations.json``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scene source not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return read_coco(path, images, split)
        raise ValueError(f"{path}: not a scene source; pass a COCO .json file, a VOC root (Annotations/ + "
                         "JPEGImages/), a folder of images, or a folder made by `coarsecrop scenes`")
    if (path / "annotations.json").is_file():
        return read_coco(path / "annotations.json", images if images is not None else path, split)
    if _is_voc_root(path):
        return read_voc(path, images, split)
    if (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir():
        if images is not None:
            raise ValueError(f"{path}: a Cityscapes root takes its images from leftImg8bit/ (got images={images})")
        return read_cityscapes(path, split)
    nested = sorted(p.name for p in path.iterdir() if p.is_dir() and _is_voc_root(p))
    if nested:
        raise ValueError(f"{path}: holds VOC roots ({', '.join(nested)}); pass one of them, "
                         f"e.g. {path / nested[0]}")
    if images is not None:
        raise ValueError(f"{path}: a plain image folder takes no separate image root (got images={images})")
    return read_folder(path, split)
