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
  background, 255 (the void band along object borders) counts as **not object**: instance masks hold
  only the pixels labelled with the instance. Images without such a png fall back to filled boxes.
  VOC boxes are 1-based inclusive pixel indices: ``[xmin - 1, ymin - 1, xmax, ymax]`` in our coordinates.
- Boxes reaching more than ``CLIP_TOLERANCE`` px outside their image are clipped, boxes of zero or
  negative size (given so, or after clipping) are dropped, with one ``warnings.warn`` per annotation file
  naming it and the counts. An image entry naming a missing file is kept: the crop job records it as
  skipped when loading fails. A ``file_name`` that escapes the image root is refused (ValueError).
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
from PIL import Image

from coarsecrop.data.images import BadImage, image_size

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
    format: str  # "coco" | "voc" | "folder"
    root: str
    categories: dict[int, str]
    source: str = ""  # the path given to open_scenes (annotation file or folder), absolute
    split: str | None = None

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> Scene:
        return self.scenes[i]


# ------------------------------------------------------------------------------------------ helpers


def filled_boxes(boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Bool [K, H, W]: the pixels whose centres lie inside each box (>= 1 px for a valid box)."""
    b = boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
    masks = np.zeros((len(b), height, width), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(b):
        c0, c1 = int(np.ceil(x1 - 0.5)), int(np.floor(x2 - 0.5)) + 1
        r0, r1 = int(np.ceil(y1 - 0.5)), int(np.floor(y2 - 0.5)) + 1
        masks[k, max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] = True
    return masks


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
                      f"{dropped} box(es) of zero or negative size", stacklevel=3)


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


def _coco_rle(seg, height: int, width: int) -> dict | None:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> one compressed RLE, or None."""
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, (list, tuple)) and len(p) >= 6]
        if not polys:
            return None
        return mask_util.merge(mask_util.frPyObjects(polys, height, width))
    if isinstance(seg, dict) and "counts" in seg:
        if isinstance(seg["counts"], list):  # uncompressed RLE
            return mask_util.frPyObjects(seg, *seg["size"])
        counts = seg["counts"]
        return {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str)
                else counts}
    return None


def _decode_rle(rle: dict) -> np.ndarray:
    """pycocotools decode -> bool [H, W], without its numpy-2 DeprecationWarning (harmless noise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def _decode_coco_masks(segs: tuple, boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Bool [K, H, W]; an instance without a segmentation gets its filled box."""
    masks = np.zeros((len(segs), height, width), dtype=bool)
    for k, seg in enumerate(segs):
        rle = _coco_rle(seg, height, width) if seg is not None else None
        if rle is None:
            masks[k] = filled_boxes(boxes[k:k + 1], height, width)[0]
            continue
        m = _decode_rle(rle)
        if m.shape != (height, width):
            raise ValueError(f"segmentation of size {m.shape} does not match the image ({height}, {width})")
        masks[k] = m
    return masks


def _decode_coco_crowd(segs: tuple, boxes: tuple, height: int, width: int) -> np.ndarray:
    """Bool [H, W]: union of crowd regions (their box when a region has no segmentation)."""
    union = np.zeros((height, width), dtype=bool)
    for seg, box in zip(segs, boxes):
        rle = _coco_rle(seg, height, width) if seg is not None else None
        if rle is None:
            if box is not None:
                union |= filled_boxes(torch.tensor([box]), height, width)[0]
            continue
        union |= _decode_rle(rle)
    return union


def _coco_box(ann: dict, height: int, width: int) -> list[float] | None:
    """xyxy from ``bbox`` (xywh), or from the segmentation when the bbox is missing."""
    bbox = ann.get("bbox")
    if bbox is None and ann.get("segmentation") is not None and height > 0 and width > 0:
        rle = _coco_rle(ann["segmentation"], height, width)
        if rle is not None:
            bbox = mask_util.toBbox(rle).tolist()
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _select_split(images: list[dict], split: str | None, source: Path) -> list[dict]:
    if split is None:
        return images
    available = sorted({str(img["split"]) for img in images if "split" in img})
    if not available:
        raise ValueError(f"{source}: its image entries carry no 'split' key, so split={split!r} cannot be "
                         "selected; omit the split to use every image")
    if split not in available:
        raise ValueError(f"{source}: no images in split {split!r}; available splits: {', '.join(available)}")
    return [img for img in images if img.get("split") == split]


def read_coco(ann_file: str | Path, images: str | Path | None = None, split: str | None = None) -> SceneSet:
    """Scenes of a COCO annotation file; image files under ``images`` (default: the file's folder)."""
    ann_file = Path(ann_file).absolute()
    data = _load_json(ann_file)
    root = Path(images).absolute() if images is not None else ann_file.parent
    categories = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", [])}
    entries = _select_split(data["images"], split, ann_file)
    wanted = {img.get("id") for img in entries}
    by_image: dict[object, list[dict]] = defaultdict(list)
    for ann in data.get("annotations", []):
        if ann.get("image_id") in wanted:
            by_image[ann["image_id"]].append(ann)
    has_masks = any(a.get("segmentation") for a in data.get("annotations", []))
    clean = _BoxCleaner()
    scenes = []
    for i, img in enumerate(entries):
        if "id" not in img or "file_name" not in img:
            raise ValueError(f"{ann_file}: image entry #{i} lacks 'id' or 'file_name': {img}")
        entry = f"{ann_file}: image id {img['id']}"
        file = safe_join(root, img["file_name"], entry)
        width, height = int(img.get("width") or 0), int(img.get("height") or 0)
        boxes, labels, segs, crowd_segs, crowd_boxes = [], [], [], [], []
        for ann in by_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                crowd_segs.append(ann.get("segmentation"))
                crowd_boxes.append(_coco_box(ann, height, width))
                continue
            raw = _coco_box(ann, height, width)
            box = clean(*raw, width, height) if raw is not None else None
            if raw is None:
                clean.dropped += 1
            if box is None:
                continue
            boxes.append(box)
            labels.append(int(ann.get("category_id", 0)))
            segs.append(ann.get("segmentation") or None)
        box_t = _box_tensor(boxes, width, height)
        sized = width > 0 and height > 0
        decoder = partial(_decode_coco_masks, tuple(segs), box_t, height, width) if has_masks and sized else None
        crowd = (partial(_decode_coco_crowd, tuple(crowd_segs), tuple(crowd_boxes), height, width)
                 if crowd_segs and sized else None)
        scenes.append(Scene(id=img["id"], file=str(file), width=width, height=height, boxes=box_t,
                            labels=torch.tensor(labels, dtype=torch.int64), mask_decoder=decoder,
                            annotated=True, crowd_decoder=crowd))
    _warn_boxes(ann_file, clean.clipped, clean.dropped)
    return SceneSet(scenes=scenes, format="coco", root=str(root), categories=categories,
                    source=str(ann_file), split=split)


# ---------------------------------------------------------------------------------------------- VOC


def _voc_colormap() -> np.ndarray:
    """The standard VOC palette [256, 3] (index -> colour), for colour-coded SegmentationObject pngs."""
    cmap = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def _voc_index_map(png: Path) -> np.ndarray:
    """uint8 [H, W] instance indices of a SegmentationObject png (palette or VOC-colour RGB)."""
    with Image.open(png) as im:
        if im.mode in ("P", "L"):
            return np.array(im, dtype=np.uint8)
        rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    cmap = _voc_colormap().astype(np.int32)
    keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    lut = {int(k): i for i, k in enumerate(keys)}
    out = np.zeros(code.shape, np.uint8)
    for value in np.unique(code):
        out[code == value] = lut.get(int(value), 255)  # unknown colours count as void
    return out


def _decode_voc_masks(png: str, object_index: tuple[int, ...], height: int, width: int) -> np.ndarray:
    """Bool [K, H, W]: instance k is the pixels labelled object_index[k] + 1; 0 and 255 are not object."""
    index = _voc_index_map(Path(png))
    if index.shape != (height, width):
        raise ValueError(f"{png}: size {index.shape[::-1]} does not match its annotation ({width}x{height})")
    return np.stack([index == k + 1 for k in object_index]) if object_index else \
        np.zeros((0, height, width), dtype=bool)


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


def _text_number(node: ET.Element | None, tag: str, default: float = 0.0) -> float:
    text = node.findtext(tag) if node is not None else None
    try:
        return float(text) if text is not None and text.strip() else default
    except ValueError:
        return default


def read_voc(root: str | Path, images: str | Path | None = None, split: str | None = None) -> SceneSet:
    """Scenes of a VOC root (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt,
    SegmentationObject/<stem>.png when present). ``images`` overrides the JPEGImages folder."""
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
    categories = {i + 1: name for i, name in enumerate(VOC_CLASSES)}
    ids = {name: i for i, name in categories.items()}
    scenes = []
    for xml in xmls:
        node = _parse_voc_xml(xml)
        stem = xml.stem
        file = safe_join(img_dir, (node.findtext("filename") or "").strip() or f"{stem}.jpg", str(xml))
        size = node.find("size")
        width, height = int(_text_number(size, "width")), int(_text_number(size, "height"))
        clean = _BoxCleaner()
        boxes, labels, object_index = [], [], []
        for k, obj in enumerate(node.findall("object")):
            name = (obj.findtext("name") or "").strip()
            bnd = obj.find("bndbox")
            box = clean(_text_number(bnd, "xmin") - 1, _text_number(bnd, "ymin") - 1,
                        _text_number(bnd, "xmax"), _text_number(bnd, "ymax"), width, height)
            if box is None:
                continue
            if name not in ids:  # unknown class names are accepted and get the next id
                ids[name] = len(categories) + 1
                categories[ids[name]] = name
            boxes.append(box)
            labels.append(ids[name])
            object_index.append(k)
        _warn_boxes(xml, clean.clipped, clean.dropped)
        png = root / "SegmentationObject" / f"{stem}.png"
        decoder = (partial(_decode_voc_masks, str(png), tuple(object_index), height, width)
                   if png.is_file() and width > 0 and height > 0 else None)
        scenes.append(Scene(id=stem, file=str(file), width=width, height=height,
                            boxes=_box_tensor(boxes, width, height),
                            labels=torch.tensor(labels, dtype=torch.int64), mask_decoder=decoder))
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


def _is_voc_root(path: Path) -> bool:
    return (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir()


def open_scenes(path: str | Path, images: str | Path | None = None, split: str | None = None) -> SceneSet:
    """Open any supported source: a COCO annotation file, a VOC root, a plain image folder, or a
    folder written by ``coarsecrop scenes`` (holds ``annotations.json``)."""
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
    nested = sorted(p.name for p in path.iterdir() if p.is_dir() and _is_voc_root(p))
    if nested:
        raise ValueError(f"{path}: holds VOC roots ({', '.join(nested)}); pass one of them, "
                         f"e.g. {path / nested[0]}")
    if images is not None:
        raise ValueError(f"{path}: a plain image folder takes no separate image root (got images={images})")
    return read_folder(path, split)
