"""Crop speed (``make bench``; never a unit test): the whole crop job against the model it runs.

In one process and one run, on a generated COCO-like image folder, for each backbone (resnet50, resnet18)
and strategy (ours, ours_coarse):

- pure phi: the strategy's own ``features`` call (normalise, bf16 autocast on CUDA, phi's forward) on
  images decoded beforehand (by the job's own CPU decode, ``cpu_item``) and already on the device, in
  exactly the job's batches: the job's own ``job_batches`` (same batch size, same windows of
  ``--size-window`` images across shards), split into the same same-size groups the strategy forms
  (``_same_size_groups``, ``_stack``), so phi sees the job's tensor shapes [B, 3, H, W] one for one:
  images / second of a warm pass. Before it, one cold pass over the same groups is timed apart ("cold"):
  every new shape [B, 3, H, W] costs the backend a kernel choice once (cuDNN execution plans, oneDNN
  primitives), which the job pays too on its first window. (An older version batched per shard with
  smaller, different batches, and warmed up one batch per image size only; the first strategy measured
  per backbone then paid the new shapes' setup inside its timed pass: ``ours`` read ~3x slower than
  ``ours_coarse``, although both run the same ``OurCrop.features``.) The job runs after pure phi in the
  same process, so its shapes are warm too: both figures are steady rates; "phi cold" shows what a
  fresh process pays once per new shape;
- the strategy's stages, synced, on the same groups (the first ``--stage-images``): phi (``features``),
  map + scoring (``scored_anchors`` minus phi), selection (``select_batch``), and the rest of
  ``crop_batch`` (stack, pack, the one device-to-host copy, per-image results): ms / image;
- the job: ``run_crop_job`` from the first pixel read to manifest.json (decode, phi, scoring, NMS,
  shard files, manifest), images / second; its setup (building phi, listing the scenes) and the CUDA
  initialisation are timed and printed apart, not counted;
- the ratio job / pure phi (target >= 0.85), and the decode path counts (gpu / cpu / bad; why files
  took the CPU path);
- where the job's wall time went, from its own timing.jsonl (``coarsecrop.crops.job.STAGES``: waiting
  for the loader, the GPU decode, the strategy, the hand-over to the writer, the writer thread's busy
  time): ms / image;
- the CPU decode's cost per image in one process with one torch thread (as a DataLoader worker):
  ``cpu_item`` (load_image, HWC -> CHW) and ``worker_item`` (the GPU path's header read);
- with CUDA: the same job decoded on the CPU too, and the agreement of the two manifests: the share of
  boxes at IoU >= 0.9, boxes matched per image in order (target >= 99 %);
- with CUDA, beside it and not a target: the first ``--map-images`` baseline JPEGs decoded both ways
  (``gpu_decode_pairs``) through the strategy (``compare_decodes``): box agreement on them, how far apart
  the objectness maps are (max |difference|, Pearson r) and how much objectness the moved picks lose.
  Why: random-init phi's map is nearly flat among the best anchors, so the top-5 picks move with
  any pixel change. benchmarks/decode_sensitivity.py measures it on the CPU in float32 (no nvJPEG, no
  bf16; ResNet-18, 88 JPEGs, 440 boxes): uniform +-1 / +-2 level noise, or +1 on every pixel, keeps only
  85-95 % of the boxes at IoU >= 0.9 while the maps stay at r > 0.9997 (max |difference| 0.006-0.015)
  and the moved picks lose 1e-5 to 3e-3 of mean objectness (the picks' own: 0.93 ours, 0.79
  ours_coarse). A decoder not bit-exact with PIL cannot reach 99 % on this image set and phi; the map
  figures say whether the GPU decode changes what phi sees, which is what the box target was meant to
  guard.

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
from coarsecrop.crops.decode import BatchDecoder, cpu_item, worker_item
from coarsecrop.crops.job import (DEFAULT_MAX_SIDE, DEFAULT_SIZE_WINDOW, STAGE_NOTES, STAGES, default_workers,
                                  job_batches, run_crop_job, sorted_scenes, window_shards)
from coarsecrop.crops.scoring import score_boxes
from coarsecrop.crops.strategies import make_strategy
from coarsecrop.crops.strategies.ours import _same_size_groups, _stack
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


def decoded_groups(folder: Path, batch_size: int, shard_size: int, size_window: int, max_side: int,
                   device: torch.device) -> list[torch.Tensor]:
    """The uint8 tensors [B, 3, H, W] that the strategy's phi gets in a CPU-decoded job over ``folder``:
    the job's batches (``job_batches``, all shards), each image decoded by the job's ``cpu_item`` (bad
    files left out, as the job leaves them out of the strategy's batch), each batch split into the
    strategy's same-size groups and stacked as the strategy stacks them, on ``device``."""
    scenes = sorted_scenes(open_scenes(str(folder)))
    shards = list(range(mf.num_shards(len(scenes), shard_size)))
    groups = []
    for idx in job_batches(scenes, shards, shard_size, batch_size, window_shards(size_window, shard_size)):
        items = [cpu_item(i, scenes[i].file, max_side) for i in idx]
        images = [image.to(device) for _, image, _ in items if image is not None]
        groups += [_stack([images[j] for j in g], device) for g in _same_size_groups(images)]
    return groups


def timed_pass(fn, groups: list[torch.Tensor], device: torch.device) -> float:
    """Seconds of ``fn(g)`` over every group, synchronised at the end."""
    sync(device)
    t0 = time.perf_counter()
    for g in groups:
        fn(g)
    sync(device)
    return time.perf_counter() - t0


def pure_phi(strategy, groups: list[torch.Tensor], device: torch.device) -> tuple[float, float]:
    """(warm, cold) images / second of ``strategy.features`` over the job's groups: the cold pass is the
    first over these shapes in this process (the backend's per-shape setup included), the warm one the
    second."""
    images = sum(len(g) for g in groups)
    cold = timed_pass(strategy.features, groups, device)
    return images / timed_pass(strategy.features, groups, device), images / cold


def strategy_stages(strategy, groups: list[torch.Tensor], device: torch.device) -> dict[str, float]:
    """ms / image of the strategy's steps on the job's groups (already warm), each pass synchronised:
    phi (``features``), map + scoring (``scored_anchors`` minus phi), selection (``select_batch`` on
    scored anchors), and the rest of ``crop_batch`` (stack, pack, the one copy to the host, results)."""
    images = sum(len(g) for g in groups)
    phi = timed_pass(strategy.features, groups, device)
    scored_s = timed_pass(strategy.scored_anchors, groups, device)
    scored = [strategy.scored_anchors(g) for g in groups]
    sync(device)
    t0 = time.perf_counter()
    for anchors, shape_index, scores, table in scored:
        strategy.select_batch(anchors, shape_index, scores, table)
    sync(device)
    select = time.perf_counter() - t0
    del scored
    whole = timed_pass(lambda g: strategy.crop_batch(list(g), [None] * len(g)), groups, device)
    return {k: 1e3 * v / images for k, v in (("phi", phi), ("map+scoring", scored_s - phi), ("selection", select),
                                             ("rest", whole - scored_s - select), ("crop_batch", whole))}


def job_stages(out: Path) -> dict[str, float]:
    """ms / image of each of the job's stages (``STAGES``) from the last line of its timing.jsonl."""
    run = json.loads((out / mf.TIMING_NAME).read_text(encoding="utf-8").splitlines()[-1])
    return {k: 1e3 * run["stages"][k] / max(1, run["processed"]) for k in STAGES}


def decode_costs(folder: Path, max_side: int, num: int = 200) -> dict[str, float]:
    """ms / image of the job's worker steps on the first ``num`` files, in this process with one torch
    thread (DataLoader workers run with one): ``cpu_item`` (the CPU path: load_image, HWC -> CHW) and
    ``worker_item`` (the GPU path: read the bytes, the header facts; non-baseline files decoded)."""
    files = [s.file for s in sorted_scenes(open_scenes(str(folder)))][:num]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for name, fn in (("cpu_item", cpu_item), ("worker_item", worker_item)):
            t0 = time.perf_counter()
            for i, file in enumerate(files):
                fn(i, file, max_side)
            out[name] = 1e3 * (time.perf_counter() - t0) / max(1, len(files))
        return out
    finally:
        torch.set_num_threads(threads)


def time_job(folder: Path, out: Path, name: str, backbone: str, device: torch.device, decode: str, args) -> dict:
    """run_crop_job once; images / second from the first pixel read to manifest.json (setup apart)."""
    t0 = time.perf_counter()
    summary = run_crop_job(str(folder), out=str(out), strategy=name, backbone=backbone, device=str(device),
                           batch_size=args.batch_size, workers=args.workers, shard_size=args.shard_size,
                           progress=False, max_side=DEFAULT_MAX_SIDE, decode=decode, size_window=args.size_window)
    wall = time.perf_counter() - t0
    assert summary["complete"], summary
    run = summary["this_run"]
    job_s = wall - run["setup_seconds"]
    return {"images_per_s": run["processed"] / job_s, "with_setup_per_s": run["processed"] / wall,
            "job_s": job_s, "setup_s": run["setup_seconds"],
            "decode": summary["decode"], "decoded": run["decoded"], "skipped": summary["skipped"],
            "job_stages_ms": job_stages(out)}


def agreement(a: Path, b: Path, threshold: float = 0.9) -> tuple[float, int]:
    """Share of manifest ``a``'s boxes whose box of the same rank in ``b`` (same image) has IoU >= threshold;
    an image skipped in one manifest only counts all its boxes as disagreeing. Returns (share, boxes)."""
    pairs = []
    for ra, rb in zip(mf.read_manifest(a).records(), mf.read_manifest(b).records(), strict=True):
        assert ra["id"] == rb["id"]
        pairs.append((ra.get("boxes", []), rb.get("boxes", [])))
    return box_agreement(pairs, threshold)


def box_agreement(pairs, threshold: float = 0.9) -> tuple[float, int]:
    """``agreement`` over (boxes a, boxes b) per image (lists of [x1, y1, x2, y2], in rank order): the share
    of boxes whose box of the same rank has IoU >= threshold, boxes counted as the longer list of each
    pair. Returns (share, boxes)."""
    total = same = 0
    for boxes_a, boxes_b in pairs:
        total += max(len(boxes_a), len(boxes_b))
        if len(boxes_a) and len(boxes_b):
            k = min(len(boxes_a), len(boxes_b))
            iou = box_iou(torch.as_tensor(boxes_a[:k], dtype=torch.float64),
                          torch.as_tensor(boxes_b[:k], dtype=torch.float64)).diagonal()  # box j vs box j
            same += int((iou >= threshold).sum())
    return (same / total if total else 1.0), total


def compare_decodes(strategy, pairs: list[tuple[torch.Tensor, torch.Tensor]], chunk: int = 64) -> dict:
    """The same images decoded two ways (uint8 [3, H, W] pairs a, b of equal size), through ``strategy``:

    - ``boxes``: ``box_agreement`` of the picks (the target's measure), and ``boxes_n``;
    - ``map_maxdiff``: the median and 95th percentile over images of max |map a - map b| (objectness in
      [0, 1]), and ``map_r``: the median Pearson correlation of the two maps;
    - ``objectness_gap``: the mean over images of |mean objectness on map a of a's picks - of b's picks|
      (is a different pick a worse one, or one of many near-equal boxes of a flat map?), and for scale
      ``objectness_picks``: the mean over images of the mean objectness of a's picks on map a."""
    picks, maxdiff, corr, gap, level = [], [], [], [], []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        sides = []
        for images in ([a for a, _ in part], [b for _, b in part]):
            maps = strategy.objectness_maps(images)
            boxes = [bx for bx, _ in strategy(images, [None] * len(images))]
            sides.append((maps, boxes))
        (maps_a, boxes_a), (maps_b, boxes_b) = sides
        for ma, mb, ba, bb in zip(maps_a, maps_b, boxes_a, boxes_b):
            picks.append((ba, bb))
            maxdiff.append(float((ma - mb).abs().max()))
            corr.append(float(torch.corrcoef(torch.stack([ma.flatten(), mb.flatten()]).double())[0, 1]))
            if len(ba) and len(bb):
                on_a = score_boxes(ma[None], torch.cat([ba, bb]))[0]  # [len(ba) + len(bb)]
                gap.append(float((on_a[:len(ba)].mean() - on_a[len(ba):].mean()).abs()))
                level.append(float(on_a[:len(ba)].mean()))
    share, boxes = box_agreement(picks)
    return {"boxes": share, "boxes_n": boxes, "map_maxdiff": float(np.median(maxdiff)),
            "map_maxdiff_p95": float(np.percentile(maxdiff, 95)), "map_r": float(np.nanmedian(corr)),
            "objectness_gap": float(np.mean(gap)) if gap else 0.0, "objectness_picks": float(np.mean(level)) if level else 0.0}


def gpu_decode_pairs(folder: Path, device: torch.device, max_side: int, num: int) -> list[tuple]:
    """The first ``num`` files that the job's GPU path decodes with nvJPEG: (CPU path's pixels, nvJPEG's),
    both on ``device``."""
    decoder = BatchDecoder("gpu", device, max_side)
    pairs = []
    for i, s in enumerate(sorted_scenes(open_scenes(str(folder)))):
        item = worker_item(i, s.file, max_side)
        if item[-1] != "gpu":
            continue
        (_, gpu, _), = decoder([item])
        _, cpu, _ = cpu_item(i, s.file, max_side)
        if gpu is not None and cpu is not None:
            pairs.append((cpu.to(device), gpu))
        if len(pairs) == num:
            break
    return pairs


# ---------------------------------------------------------------- main

def print_decode_maps(rows: list[dict]) -> None:
    """nvJPEG against the CPU path on the same images (``compare_decodes``): boxes and objectness maps."""
    print()
    n = rows[0]["decode_maps"]["boxes_n"]
    print(f"nvJPEG vs CPU decode, same images ({n} boxes), through phi: box agreement (IoU >= 0.9, as the "
          "target), objectness maps (max |diff| median / p95, Pearson r median), objectness gap of the picks")
    print(f"{'backbone':<9} {'strategy':<12} {'boxes':>7} {'maxdiff':>8} {'p95':>7} {'map r':>8} {'gap':>8} "
          f"{'picks':>6}")
    for r in rows:
        m = r["decode_maps"]
        print(f"{r['backbone']:<9} {r['strategy']:<12} {m['boxes']:>7.2%} {m['map_maxdiff']:>8.4f} "
              f"{m['map_maxdiff_p95']:>7.4f} {m['map_r']:>8.5f} {m['objectness_gap']:>8.5f} "
              f"{m['objectness_picks']:>6.3f}")
    print("(gap: mean |objectness of the CPU path's picks - of nvJPEG's picks| on the CPU path's map; picks: the "
          "CPU path's picks' own objectness. benchmarks/decode_sensitivity.py measures the same for 1-level "
          "pixel changes on the CPU)")


def print_stages(rows: list[dict]) -> None:
    """Where the time goes, per row: phi cold / warm, the strategy's synced steps, the job's stages."""
    print()
    print("the strategy's steps, synchronised, on the job's first groups (ms / image; crop_batch = all of them)")
    steps = list(rows[0]["strategy_stages_ms"])
    print(f"{'backbone':<9} {'strategy':<12} {'phi cold':>8} " + " ".join(f"{k:>11}" for k in steps))
    for r in rows:
        print(f"{r['backbone']:<9} {r['strategy']:<12} {1e3 / r['pure_phi_cold_per_s']:>8.3f} "
              + " ".join(f"{r['strategy_stages_ms'][k]:>11.3f}" for k in steps))
    print("(phi cold: the first pass over the job's shapes in this process, per-shape setup included)")
    print()
    print("the job's own stages, host clock, from its timing.jsonl (ms / image; writer_*: its thread, overlapping)")
    print(f"{'backbone':<9} {'strategy':<12} {'job':>7} " + " ".join(f"{k:>12}" for k in STAGES))
    for r in rows:
        print(f"{r['backbone']:<9} {r['strategy']:<12} {1e3 / r['images_per_s']:>7.3f} "
              + " ".join(f"{r['job_stages_ms'][k]:>12.3f}" for k in STAGES))
        if "cpu_decode_stages_ms" in r:  # the same job with --decode cpu
            print(f"{'':<9} {'(cpu decode)':<12} {1e3 / r['cpu_decode_images_per_s']:>7.3f} "
                  + " ".join(f"{r['cpu_decode_stages_ms'][k]:>12.3f}" for k in STAGES))
    for k in STAGES:
        print(f"  {k:<13} {STAGE_NOTES[k]}")



def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=4000 if cuda else 128,
                        help="images generated (default 4000 with CUDA, 128 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=64 if cuda else 8)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the crop job (default: the job's own, default_workers)")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--size-window", type=int, default=DEFAULT_SIZE_WINDOW,
                        help="images batched by size together in the job (and so in pure phi)")
    parser.add_argument("--stage-images", type=int, default=1024 if cuda else 16,
                        help="images of the job's first batches on which the strategy's steps are timed "
                             "(default 1024 with CUDA, 16 on the CPU)")
    parser.add_argument("--backbones", default="resnet50,resnet18")
    parser.add_argument("--strategies", default="ours,ours_coarse")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--no-agreement", action="store_true", help="with CUDA: skip the CPU-decoded jobs")
    parser.add_argument("--map-images", type=int, default=256,
                        help="with CUDA: images whose objectness maps are compared, nvJPEG against the CPU path")
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
        costs = decode_costs(folder, DEFAULT_MAX_SIDE)
        print(f"  worker decode, one process, one torch thread: cpu_item {costs['cpu_item']:.2f} ms/image "
              f"({1e3 / costs['cpu_item'] * max(1, args.workers):.0f} img/s for {max(1, args.workers)} workers "
              f"that get a core each), worker_item {costs['worker_item']:.2f} ms/image", flush=True)
        t0 = time.perf_counter()
        groups = decoded_groups(folder, args.batch_size, args.shard_size, args.size_window, DEFAULT_MAX_SIDE, device)
        shapes = len({tuple(g.shape) for g in groups})
        print(f"  decoded them onto {device} for pure phi in {time.perf_counter() - t0:.1f} s: the job's batches "
              f"as {len(groups)} same-size groups of {shapes} distinct shapes", flush=True)
        compare = device.type == "cuda" and not args.no_agreement
        pairs = gpu_decode_pairs(folder, device, DEFAULT_MAX_SIDE, args.map_images) if compare else []
        counted = np.cumsum([len(g) for g in groups])
        stage_groups = groups[:int(np.searchsorted(counted, args.stage_images)) + 1]
        for backbone in args.backbones.split(","):
            for name in args.strategies.split(","):
                strategy = make_strategy(name, device=device, backbone=backbone)
                phi_ips, cold_ips = pure_phi(strategy, groups, device)
                stages = strategy_stages(strategy, stage_groups, device)
                maps = compare_decodes(strategy, pairs) if pairs else None
                del strategy
                main_path = "auto"
                job = time_job(folder, Path(tmp) / f"{backbone}-{name}-auto", name, backbone, device, main_path, args)
                row = {"backbone": backbone, "strategy": name, "pure_phi_per_s": phi_ips,
                       "pure_phi_cold_per_s": cold_ips, "strategy_stages_ms": stages, "decode_maps": maps, **job,
                       "ratio": job["images_per_s"] / phi_ips}
                if compare:
                    cpu = time_job(folder, Path(tmp) / f"{backbone}-{name}-cpu", name, backbone, device, "cpu", args)
                    row["cpu_decode_images_per_s"] = cpu["images_per_s"]
                    row["cpu_decode_stages_ms"] = cpu["job_stages_ms"]
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
        print_stages(rows)
        if rows[0]["decode_maps"]:
            print_decode_maps(rows)
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
