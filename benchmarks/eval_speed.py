"""Evaluation speed per task (images/s), and COCOeval against faster-coco-eval on the same predictions.

    .venv/bin/python benchmarks/eval_speed.py [--backbone resnet10_w16] [--size 128] [--images 200]

Per task, on the built-in scenes: frozen-feature extraction (objects / linear / classify probes),
finetuning steps (multilabel, semantic), detector training steps and inference (C4 and FPN), and the
COCO evaluation of a fixed set of predictions (boxes and masks; 100 detections per image) with
pycocotools and, when installed, faster-coco-eval (``pip install faster-coco-eval``; not a dependency).
Prints a table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from coarsecrop.data.synthetic import write_scenes
from coarsecrop.evaluate import detection, multilabel, segmentation
from coarsecrop.evaluate.checkpoints import make_trunk
from coarsecrop.evaluate.coco import coco_evaluate, encode_masks, scenes_to_coco
from coarsecrop.evaluate.data import augment, normalise, open_split
from coarsecrop.evaluate.features import pooled_features


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def fake_predictions(scenes, per_image: int = 100, seed: int = 0, masks: bool = True) -> list[dict]:
    """GT boxes jittered plus random false positives: ``per_image`` scored detections per image."""
    rng = np.random.default_rng(seed)
    cats = sorted({int(c) for s in scenes for c in s.labels.tolist()})
    out = []
    for i, s in enumerate(scenes):
        w, h = s.width, s.height
        boxes = [b for b in s.boxes.tolist()]
        labels = [int(c) for c in s.labels.tolist()]
        while len(boxes) < per_image:
            x1, y1 = rng.uniform(0, w - 8), rng.uniform(0, h - 8)
            boxes.append([x1, y1, min(w, x1 + rng.uniform(8, w / 2)), min(h, y1 + rng.uniform(8, h / 2))])
            labels.append(int(rng.choice(cats)))
        boxes = np.array(boxes[:per_image]) + rng.normal(0, 2, (per_image, 4))
        boxes = np.clip(boxes, 0, [w, h, w, h])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        rles = [None] * per_image
        if masks:
            m = np.zeros((per_image, h, w), dtype=np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
                m[k, y1:y2, x1:x2] = 1
            rles = encode_masks(m)
        for (x1, y1, x2, y2), c, rle in zip(boxes.tolist(), labels[:per_image], rles):
            r = {"image_id": i, "category_id": c, "score": float(rng.random()), "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if rle is not None:
                r["segmentation"] = rle
            out.append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet10_w16")
    ap.add_argument("--size", type=int, default=128, help="scene side in pixels")
    ap.add_argument("--images", type=int, default=200, help="scenes (80% train)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []

    def add(task: str, what: str, images: int, seconds: float) -> None:
        rows.append((task, what, images, seconds, images / seconds))
        print(f"{task:11s} {what:40s} {images:6d} img {seconds:8.2f} s {images / seconds:9.1f} img/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        write_scenes(tmp, num_images=args.images, seed=0, size=args.size, progress=False)
        train, val = open_split(tmp, "train"), open_split(tmp, "val")
        print(f"backbone {args.backbone}, {len(train)} train / {len(val)} val scenes of {args.size} px, "
              f"{torch.get_num_threads()} threads, device {device}")
        trunk = make_trunk(args.backbone, seed=0)

        t = time.perf_counter()
        data = multilabel.prepare_data(train, val, image_size=args.size)
        add("(data)", "decode + resize scenes", len(train) + len(val), time.perf_counter() - t)
        imgs = data.train_images
        add("linear", "frozen features, eval mode", len(imgs),
            timed(lambda: pooled_features(trunk, imgs, device), repeat=2))

        steps, bs = 5, 32
        gen = torch.Generator().manual_seed(0)
        width = pooled_features(trunk, imgs[:1], device).shape[1]
        model = multilabel.Classifier(make_trunk(args.backbone, seed=0), width, 12).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def finetune():
            for s in range(steps):
                x = normalise(augment(imgs[s * bs % len(imgs):][:bs], gen).to(device))
                y = data.train_targets[:len(x)].to(device)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        add("multilabel", f"finetune step (batch {bs})", steps * bs, timed(finetune))

        seg = segmentation.prepare_data(train, val, image_size=args.size)
        fcn = segmentation.FCN(make_trunk(args.backbone, seed=0), 12).to(device)
        opt = torch.optim.SGD(fcn.parameters(), lr=0.01, momentum=0.9)

        def seg_steps():
            for s in range(3):
                x = normalise(seg.train_images[s * 16:(s + 1) * 16].to(device))
                y = seg.train_labels[s * 16:(s + 1) * 16].long().to(device)
                loss = torch.nn.functional.cross_entropy(fcn(x), y, ignore_index=255)
                opt.zero_grad()
                loss.backward()
                opt.step()
        add("semantic", "finetune step (batch 16, OS 8)", 48, timed(seg_steps))

        toy = dict(min_size=args.size, max_size=args.size,
                   anchor_sizes=[s * args.size // 128 for s in (16, 32, 64, 96, 128)],
                   rois_per_image=64, proposals_train=300, proposals_test=100, fpn_channels=64)
        for head, masks in (("c4", False), ("fpn", False), ("c4", True)):
            ddata = detection.prepare_data(train, val, masks=masks)
            det = detection.build_detector(make_trunk(args.backbone, seed=0), 12, head=head, masks=masks, **toy)
            task = "instance" if masks else "detection"
            n_it, bs = 5, 8
            add(task, f"{head} train step (batch {bs})", n_it * bs, timed(
                lambda: detection.train_detector(det, ddata, n_it, batch_size=bs, base_lr=0.02, warmup=1,
                                                 device=device)))
            results = []
            add(task, f"{head} inference", len(val), timed(
                lambda: results.extend(detection.predict(det, ddata.val, ddata.index, masks, device=device))))
            gt = ddata.gt
            add(task, f"{head} COCOeval bbox ({len(results)} dets)", len(val),
                timed(lambda: coco_evaluate(gt, results, "bbox")))
            if masks:
                segm = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
                add(task, f"{head} COCOeval segm ({len(results)} dets)", len(val),
                    timed(lambda: coco_evaluate(gt, segm, "segm")))

        # COCOeval alone, on many detections: does it dominate, and does faster-coco-eval help?
        gt = scenes_to_coco(val.scenes, val.categories, masks=True)
        preds = fake_predictions(val.scenes, per_image=100)
        segm = [{k: v for k, v in r.items() if k != "bbox"} for r in preds]
        for iou_type, res in (("bbox", preds), ("segm", segm)):
            ref = {}
            for backend in ("pycocotools", "faster_coco_eval"):
                try:
                    sec = timed(lambda: ref.__setitem__(backend, coco_evaluate(gt, res, iou_type, backend)), repeat=2)
                except ImportError:
                    print(f"{backend} not installed: skipped")
                    continue
                add("coco-eval", f"{backend} {iou_type} (100 dets/img)", len(val), sec)
            if len(ref) == 2:
                diff = max(abs(ref["pycocotools"][k] - ref["faster_coco_eval"][k])
                           for k in ("AP", "AP50", "AP75"))
                print(f"coco-eval   {iou_type}: AP pycocotools {ref['pycocotools']['AP']:.3f} vs faster-coco-eval "
                      f"{ref['faster_coco_eval']['AP']:.3f} (max |diff| over AP/AP50/AP75 {diff:.4f})")


if __name__ == "__main__":
    main()
