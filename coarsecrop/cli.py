"""The command line: ``coarsecrop scenes | crops`` (later: pretrain, evaluate, export, sweep).

The CLI only parses arguments and calls the package; no logic lives here.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml


def _key_value(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as YAML (so ``n=5``, ``sizes=[16,32]``, ``flag=true`` work)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _cmd_scenes(args: argparse.Namespace) -> int:
    from coarsecrop.data.synthetic import write_scenes

    ann = write_scenes(args.out, num_images=args.num_images, seed=args.seed, size=args.size,
                       val_fraction=args.val_fraction, progress=not args.quiet)
    print(f"wrote {args.num_images} scenes: {ann}")
    return 0


def _cmd_crops(args: argparse.Namespace) -> int:
    from coarsecrop.crops.job import run_crop_job

    summary = run_crop_job(
        scenes=args.scenes, images=args.images, split=args.split, out=args.out,
        strategy=args.strategy, n=args.n, strategy_params=dict(args.param or []),
        checkpoint=args.checkpoint, backbone=args.backbone, device=args.device,
        batch_size=args.batch_size, workers=args.workers, shard_size=args.shard_size,
        progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coarsecrop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenes", help="write the built-in synthetic scenes as a COCO data set")
    p.add_argument("--out", required=True, help="output folder (images/ and annotations.json)")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_scenes)

    p = sub.add_parser("crops", help="run a cropping strategy over a data set into a sharded manifest")
    p.add_argument("--scenes", required=True,
                   help="COCO annotation file, VOC root, plain image folder, or a `coarsecrop scenes` folder")
    p.add_argument("--images", default=None, help="image root for a COCO file (default: the file's folder)")
    p.add_argument("--split", default=None, help="train | val (COCO scenes) or a VOC ImageSets name")
    p.add_argument("--strategy", default="ours")
    p.add_argument("--n", type=int, default=5, help="crops per image (paper: 5)")
    p.add_argument("--out", required=True, help="manifest folder")
    p.add_argument("--checkpoint", default=None, help="phi weights (default: random init, the paper's s5)")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for decoding")
    p.add_argument("--shard-size", type=int, default=256, help="images per manifest shard")
    p.add_argument("--param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="strategy parameter, repeatable (e.g. nms_iou=0.5, anchor_sizes=[16,32,64,128])")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_crops)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"coarsecrop {args.command}: error: {err}", file=sys.stderr)
        return 2
