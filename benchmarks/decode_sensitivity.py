"""How much Our-Crop's picks move when the pixels move a little (issue 14's decode agreement; never a unit test).

The GPU job decodes JPEGs with nvJPEG, whose pixels differ from PIL's by a few levels (IDCT, chroma
upsampling); crop_speed.py's target asks that >= 99 % of the boxes stay put (same rank, IoU >= 0.9). This
measures, on the CPU in float32 with the random-init phi of the benchmark, what pixel changes of that size or
smaller do on their own: on crop_speed's generated image set (the files the GPU path would give nvJPEG), the
CPU job's pixels (``cpu_item``, PIL) against

- ``torchvision-cpu``: the GPU path's own code (worker_item, BatchDecoder "gpu") with torchvision's CPU
  decode_jpeg in place of nvJPEG: whether torchvision's libjpeg differs from PIL's at all;
- ``noise+-1`` / ``noise+-2``: PIL's pixels plus seeded uniform integer noise in [-1, 1] / [-2, 2], clamped;
- ``shift+1``: PIL's pixels plus 1 everywhere (clamped).

For each variant and strategy it prints crop_speed's ``compare_decodes``: box agreement as the target counts
it, the objectness maps' max |difference| (median, 95th percentile) and Pearson r, and the objectness gap of
the picks (how much worse, in mean objectness on the reference map, the moved picks are; ``picks``: the
reference picks' own mean objectness, for scale).

    python benchmarks/decode_sensitivity.py [--num-images N] [--backbone resnet18] [--strategies ours,ours_coarse]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from crop_speed import compare_decodes, gpu_decode_pairs, write_images
from coarsecrop.crops.job import DEFAULT_MAX_SIDE
from coarsecrop.crops.strategies import make_strategy


def perturbed(image: torch.Tensor, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 image plus uniform integer noise in [low, high] per pixel and channel, clamped to 0..255."""
    noise = torch.randint(low, high + 1, image.shape, generator=generator, dtype=torch.int16)
    return (image.to(torch.int16) + noise).clamp_(0, 255).to(torch.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=192, help="generated images (baseline JPEGs are used)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--strategies", default="ours,ours_coarse")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    print(f"decode sensitivity: {args.num_images} generated images, {args.backbone} random init, float32 on the "
          f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, args.num_images)
        reference = gpu_decode_pairs(folder, device, DEFAULT_MAX_SIDE, args.num_images)  # (PIL, torchvision)
    differ = [float((a.float() - b.float()).abs().max()) for a, b in reference]
    print(f"  {len(reference)} baseline JPEGs; torchvision's CPU decode differs from PIL's on "
          f"{sum(d > 0 for d in differ)} of them (max |difference| {max(differ):.0f} levels)", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    variants = {
        "torchvision-cpu": reference,
        "noise+-1": [(a, perturbed(a, -1, 1, generator)) for a, _ in reference],
        "noise+-2": [(a, perturbed(a, -2, 2, generator)) for a, _ in reference],
        "shift+1": [(a, perturbed(a, 1, 1, generator)) for a, _ in reference],
    }
    for name, pairs in variants.items():
        mean_abs = sum(float((a.float() - b.float()).abs().mean()) for a, b in pairs) / len(pairs)
        print(f"  {name}: mean |pixel difference| {mean_abs:.3f} levels")
    print()
    print(f"{'strategy':<12} {'variant':<16} {'boxes':>7} {'maxdiff':>8} {'p95':>7} {'map r':>9} {'gap':>8} "
          f"{'picks':>6} {'s':>6}")
    for strategy_name in args.strategies.split(","):
        strategy = make_strategy(strategy_name, device=device, backbone=args.backbone)
        for name, pairs in variants.items():
            if all(torch.equal(a, b) for a, b in pairs):
                print(f"{strategy_name:<12} {name:<16} the same pixels: the same boxes and maps")
                continue
            t0 = time.perf_counter()
            m = compare_decodes(strategy, pairs)
            print(f"{strategy_name:<12} {name:<16} {m['boxes']:>7.2%} {m['map_maxdiff']:>8.4f} "
                  f"{m['map_maxdiff_p95']:>7.4f} {m['map_r']:>9.6f} {m['objectness_gap']:>8.5f} {m['objectness_picks']:>6.3f} "
                  f"{time.perf_counter() - t0:>6.1f}", flush=True)
    print(f"(boxes: share of the {m['boxes_n']} reference boxes whose box of the same rank has IoU >= 0.9; "
          "maxdiff: objectness in [0, 1]; gap: mean over images of |mean objectness of the reference picks - of "
          "the moved picks|, both on the reference map)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
