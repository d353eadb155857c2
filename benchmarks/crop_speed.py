"""Crop speed (``make bench``; never a unit test): the whole crop job against the model it runs.

In one process and one run, on a generated COCO-like image folder, for each backbone (resnet50, resnet18)
and strategy (ours, ours_coarse):

- pure phi: the strategy's own ``features`` call (normalise, bf16 autocast on CUDA, phi's forward) on
  images decoded beforehand and already on the device, in exactly the job's batches (same batch size,
  same shards, same same-size groups, so the same image sizes): images / second;
- the job: ``run_crop_job`` from the first pixel read to manifest.json (decode, phi, scoring, NMS,
  shard files, manifest), images / second; its setup (building phi, listing the scenes) and the CUDA
  initialisation are timed and printed apart, not counted;
- the ratio job / pure phi (target >= 0.85), and the decode path counts (gpu / cpu / bad; why files
  took the CPU path);
- with CUDA: the same job decoded on the CPU too, and the agreement of the two manifests: the share of
  boxes at IoU >= 0.9, boxes matched per image in order (target >= 99 %).

The image set: JPEGs of COCO's common sizes (640x480, 480x640, 640x427, 427x640, 500x375, 375x500) and a
tail of others (up to 2000x1500), plus a few grayscale, progressive, CMYK, EXIF-rotated, PNG and truncated
files, in shards of 256. phi is random-init (the paper's s5; weights do not change the speed).
Exits 1 while a target fails.

    python benchmarks/crop_speed.py [--num-images N] [--batch-size B] [--workers W] [--backbones ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from coarsecrop.crops import manifest as mf
from coarsecrop.crops.job import DEFAULT_MAX_SIDE, default_workers, run_crop_job, shard_batches
from coarsecrop.crops.strategies import make_strategy
from coarsecrop.data.images import load_image
from coarsecrop.data.scenes import open_scenes

COMMON = [(640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (375, 500)]
TAIL = [(640, 360), (612, 612), (800, 600), (333, 500), (1024, 768), (2000, 1500), (320, 240), (640, 512)]
# (kind, period, offset): image i is of that kind when i % period == offset (at least one of each in 128)
SPECIAL = [("gray", 60, 29), ("progressive", 40, 7), ("cmyk", 50, 13), ("exif", 30, 3), ("png", 45, 21),
           ("corrupt", 100, 57)]
JOB_TARGET, AGREEMENT_TARGET = 0.85, 0.99


# ---------------------------------------------------------------- the image set

def kind_of(i: int) -> str:
    return next((kind for kind, period, offset in SPECIAL if i % period == offset), "jpeg")


def write_image(args: tuple[Path, int, int]) -> str:
    """Image ``i``: a smooth random background with a few solid shapes, of size and kind by its index."""
    folder, i, seed = args
    rng = np.random.default_rng((seed, i))
    w, h = COMMON[i % len(COMMON)] if rng.random() < 0.9 else TAIL[int(rng.integers(len(TAIL)))]
    kind = kind_of(i)
    low = Image.fromarray(rng.integers(0, 255, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8))
    im = low.resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 3)), y0 + int(rng.integers(h // 10, h // 3))
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    path = folder / f"{i:06d}.{'png' if kind == 'png' else 'jpg'}"
    if kind == "png":
        im.save(path)
    elif kind == "exif":  # stored sideways, shown upright
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 2 else 8
        im.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif.tobytes())
    else:
        im = im.convert({"gray": "L", "cmyk": "CMYK"}.get(kind, "RGB"))
        im.save(path, quality=90, progressive=kind == "progressive")
        if kind == "corrupt":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])
    return kind


def write_images(folder: Path, num: int, seed: int = 0) -> dict[str, int]:
    """``num`` images into ``folder`` (in parallel); returns how many of each kind."""
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        kinds = list(pool.map(write_image, [(folder, i, seed) for i in range(num)], chunksize=64))
    return {k: kinds.count(k) for k in sorted(set(kinds))}


# ---------------------------------------------------------------- measurements

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def job_batches(folder: Path, batch_size: int, shard_size: int, max_side: int, device: torch.device
                ) -> list[list[torch.Tensor]]:
    """The job's batches of decoded images (load_image, max_side), on ``device``, bad files left out."""
    scenes = sorted(open_scenes(str(folder)).scenes, key=lambda s: Path(s.file).name)
    sizes = [(s.height or 0, s.width or 0) for s in scenes]
    shards = list(range(-(-len(scenes) // shard_size)))
    batches = []
    for idx in shard_batches(shards, sizes, shard_size, batch_size):
        images = []
        for i in idx:
            try:
                array, _ = load_image(scenes[i].file, max_side=max_side)
            except ValueError:
                continue
            images.append(torch.from_numpy(array).permute(2, 0, 1).contiguous().to(device))  # [3, H, W]
        batches.append(images)
    return batches


def pure_phi(strategy, batches: list[list[torch.Tensor]], device: torch.device) -> float:
    """Images / second of ``strategy.features`` over the job's batches, grouped by size as the strategy
    groups them; one warm-up pass over every distinct size first."""
    groups = []
    for images in batches:
        by_size: dict[tuple, list] = {}
        for im in images:
            by_size.setdefault(tuple(im.shape), []).append(im)
        groups += [torch.stack(g) for g in by_size.values()]  # [B, 3, H, W]
    seen = set()
    for g in groups:  # warm-up: cuDNN algorithm choice, first-call allocations
        if g.shape[1:] not in seen:
            seen.add(g.shape[1:])
            strategy.features(g)
    sync(device)
    t0 = time.perf_counter()
    for g in groups:
        strategy.features(g)
    sync(device)
    return sum(len(g) for g in groups) / (time.perf_counter() - t0)


def time_job(folder: Path, out: Path, name: str, backbone: str, device: torch.device, decode: str, args) -> dict:
    """run_crop_job once; images / second from the first pixel read to manifest.json (setup apart)."""
    t0 = time.perf_counter()
    summary = run_crop_job(str(folder), out=str(out), strategy=name, backbone=backbone, device=str(device),
                           batch_size=args.batch_size, workers=args.workers, shard_size=args.shard_size,
                           progress=False, max_side=DEFAULT_MAX_SIDE, decode=decode)
    wall = time.perf_counter() - t0
    assert summary["complete"], summary
    run = summary["this_run"]
    job_s = wall - run["setup_seconds"]
    return {"images_per_s": run["processed"] / job_s, "with_setup_per_s": run["processed"] / wall,
            "job_s": job_s, "setup_s": run["setup_seconds"],
            "decode": summary["decode"], "decoded": run["decoded"], "skipped": summary["skipped"]}


def agreement(a: Path, b: Path, threshold: float = 0.9) -> tuple[float, int]:
    """Share of manifest ``a``'s boxes whose box of the same rank in ``b`` (same image) has IoU >= threshold;
    an image skipped in one manifest only counts all its boxes as disagreeing. Returns (share, boxes)."""
    total = same = 0
    for ra, rb in zip(mf.read_manifest(a).records(), mf.read_manifest(b).records(), strict=True):
        assert ra["id"] == rb["id"]
        boxes_a, boxes_b = ra.get("boxes", []), rb.get("boxes", [])
        total += max(len(boxes_a), len(boxes_b))
        if boxes_a and boxes_b:
            k = min(len(boxes_a), len(boxes_b))
            iou = box_iou(torch.tensor(boxes_a[:k], dtype=torch.float64),
                          torch.tensor(boxes_b[:k], dtype=torch.float64)).diagonal()  # box j vs box j
            same += int((iou >= threshold).sum())
    return (same / total if total else 1.0), total


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=4000 if cuda else 128,
                        help="images generated (default 4000 with CUDA, 128 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=64 if cuda else 8)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the crop job (default: the job's own, default_workers)")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--backbones", default="resnet50,resnet18")
    parser.add_argument("--strategies", default="ours,ours_coarse")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--no-agreement", action="store_true", help="with CUDA: skip the CPU-decoded jobs")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.workers = default_workers(device) if args.workers is None else args.workers
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"crop speed: {args.num_images} images, batch {args.batch_size}, {args.workers} workers, shards of "
          f"{args.shard_size}, on {device}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, load average {load:.1f}", flush=True)
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.zeros(1, device=device)
        sync(device)
        print(f"  CUDA initialisation {time.perf_counter() - t0:.2f} s ({torch.cuda.get_device_name(device)})")

    rows, targets = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        t0 = time.perf_counter()
        kinds = write_images(folder, args.num_images)
        print(f"  wrote {args.num_images} images in {time.perf_counter() - t0:.1f} s: {kinds}", flush=True)
        t0 = time.perf_counter()
        batches = job_batches(folder, args.batch_size, args.shard_size, DEFAULT_MAX_SIDE, device)
        print(f"  decoded them onto {device} for pure phi in {time.perf_counter() - t0:.1f} s", flush=True)
        for backbone in args.backbones.split(","):
            for name in args.strategies.split(","):
                strategy = make_strategy(name, device=device, backbone=backbone)
                phi_ips = pure_phi(strategy, batches, device)
                del strategy
                main_path = "auto"
                job = time_job(folder, Path(tmp) / f"{backbone}-{name}-auto", name, backbone, device, main_path, args)
                row = {"backbone": backbone, "strategy": name, "pure_phi_per_s": phi_ips, **job,
                       "ratio": job["images_per_s"] / phi_ips}
                if device.type == "cuda" and not args.no_agreement:
                    cpu = time_job(folder, Path(tmp) / f"{backbone}-{name}-cpu", name, backbone, device, "cpu", args)
                    row["cpu_decode_images_per_s"] = cpu["images_per_s"]
                    row["agreement"], row["agreement_boxes"] = agreement(Path(tmp) / f"{backbone}-{name}-cpu",
                                                                         Path(tmp) / f"{backbone}-{name}-auto")
                    targets.append((f"gpu vs cpu decode, boxes at IoU >= 0.9 ({backbone} {name})",
                                    row["agreement"], AGREEMENT_TARGET))
                targets.append((f"job >= {JOB_TARGET} x pure phi ({backbone} {name}, decode {job['decode']})",
                                row["ratio"], JOB_TARGET))
                rows.append(row)
                print(f"  measured {backbone} {name}: pure phi {phi_ips:.1f} img/s, job {job['images_per_s']:.1f} "
                      f"img/s (decode {job['decode']}: {job['decoded']})", flush=True)

    print()
    print("ratio = job / pure phi, setup apart; +setup: the same with building phi and listing the scenes counted")
    print(f"{'backbone':<9} {'strategy':<12} {'pure phi/s':>10} {'job/s':>8} {'ratio':>6} {'+setup':>6} {'job s':>7} "
          f"{'setup s':>7} {'decode':>6} {'gpu':>5} {'cpu':>5} {'bad':>4} {'cpu-dec/s':>9} {'agree':>7}")
    for r in rows:
        d = r["decoded"]
        extra = (f"{r['cpu_decode_images_per_s']:>9.1f} {r['agreement']:>7.2%}" if "agreement" in r else
                 f"{'-':>9} {'-':>7}")
        print(f"{r['backbone']:<9} {r['strategy']:<12} {r['pure_phi_per_s']:>10.1f} {r['images_per_s']:>8.1f} "
              f"{r['ratio']:>6.2f} {r['with_setup_per_s'] / r['pure_phi_per_s']:>6.2f} {r['job_s']:>7.1f} "
              f"{r['setup_s']:>7.1f} {r['decode']:>6} {d['gpu']:>5} {d['cpu']:>5} {d['bad']:>4} {extra}")
    if rows:
        print(f"why files took the CPU path on the last job: {rows[-1]['decoded']['cpu_routes'] or 'none'}")
    print()
    failed = 0
    for name, value, goal in targets:
        ok = value >= goal
        failed += not ok
        shown = f"{value:.2%}" if "IoU" in name else f"{value:.2f}"
        print(f"{'PASS' if ok else 'FAIL'}  {name:<70} measured {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "kinds": kinds, "targets": targets}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
