"""The built-in scenes in the PASCAL VOC layout, so that the VOC code paths (``coarsecrop crops --scenes
VOCROOT``, the voc07 presets, detectron2's VOC reader) run on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from coarsecrop.data.scenes import open_scenes


def write_voc(scenes: str | Path, out: str | Path) -> Path:
    """Re-write a ``write_scenes`` data set in the PASCAL VOC layout under ``out``: JPEGImages/ (the same
    files), Annotations/<stem>.xml (boxes, class names), SegmentationObject/<stem>.png (palette index k =
    the k-th object of the XML, 0 background) and ImageSets/Main/{train,val,trainval}.txt from the
    splits. It lets the VOC code paths (``coarsecrop crops --scenes VOCROOT``, the voc07 presets) run on
    the built-in scenes. Returns ``out``."""
    out = Path(out)
    for sub in ("JPEGImages", "Annotations", "SegmentationObject", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    scene_set = open_scenes(scenes)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    data = json.loads(Path(scene_set.source).read_text(encoding="utf-8"))
    split_of = {str(img["id"]): img.get("split", "train") for img in data["images"]}
    for scene in scene_set.scenes:
        stem = Path(scene.file).stem
        shutil.copyfile(scene.file, out / "JPEGImages" / f"{stem}.jpg")
        masks = scene.instance_masks()
        index = np.zeros((scene.height, scene.width), dtype=np.uint8)
        objects = []
        for k, (box, label) in enumerate(zip(scene.boxes, scene.labels)):
            index[masks[k]] = k + 1
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            objects.append(f"<object><name>{escape(scene_set.categories[int(label)])}</name><pose>Unspecified</pose>"
                           f"<truncated>0</truncated><difficult>0</difficult>"
                           f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                           "</bndbox></object>")
        (out / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{scene.width}</width>"
            f"<height>{scene.height}</height><depth>3</depth></size>{''.join(objects)}</annotation>\n",
            encoding="utf-8")
        png = Image.fromarray(index, mode="P")
        png.putpalette([0, 0, 0] + [(37 * i) % 256 for i in range(3, 768)])
        png.save(out / "SegmentationObject" / f"{stem}.png")
        splits[split_of.get(str(scene.id), "train")].append(stem)
    main = out / "ImageSets" / "Main"
    for name, stems in (*splits.items(), ("trainval", splits["train"] + splits["val"])):
        (main / f"{name}.txt").write_text("".join(f"{s}\n" for s in sorted(stems)), encoding="utf-8")
    return out
