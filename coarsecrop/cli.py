"""The command line: ``coarsecrop scenes | crops | pretrain | evaluate | export | detectron2 | sweep | book | tables``.

The CLI only parses arguments and calls the package; no logic lives here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coarsecrop.evaluate import TASKS
from coarsecrop.io import read_yaml


# what a command interrupted by Ctrl-C leaves (the commands that keep their work)
AFTER_INTERRUPT = {"crops": "; the same command again continues the job from its last written shard",
                   "pretrain": "; continue from the last checkpoint with --resume",
                   "sweep": "; the same command again skips the complete runs and continues the others"}


def _key_value(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as YAML (so ``n=5``, ``sizes=[16,32]``, ``flag=true`` work)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), read_yaml(value, repr(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _cmd_scenes(args: argparse.Namespace) -> int:
    from coarsecrop.data.synthetic import write_scenes

    ann = write_scenes(args.out, num_images=args.num_images, seed=args.seed, size=args.size,
                       val_fraction=args.val_fraction, progress=not args.quiet, version=args.version,
                       workers=args.workers)
    print(f"wrote {args.num_images} scenes: {ann}")
    return 0


def _cmd_crops(args: argparse.Namespace) -> int:
    from coarsecrop.crops.job import run_crop_job, strategy_takes

    if args.backbone is not None and not strategy_takes(args.strategy, "backbone"):
        raise ValueError(f"strategy {args.strategy!r} uses no backbone, so --backbone does not apply (it would be "
                         "ignored); drop it")
    summary = run_crop_job(
        scenes=args.scenes, images=args.images, split=args.split, out=args.out,
        strategy=args.strategy, n=args.n, strategy_params=dict(args.param or []),
        checkpoint=args.checkpoint, backbone=args.backbone, device=args.device,
        batch_size=args.batch_size, workers=args.workers, shard_size=args.shard_size,
        max_side=args.max_side, size_window=args.size_window, progress=not args.quiet, decode=args.decode,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    import os
    import signal

    from coarsecrop.train.children import OutliveReader
    from coarsecrop.train import TrainingDiverged, load_pretrain_params, pretrain

    # a notebook kernel streams this output: when it dies, the run must still reach its checkpoint
    sys.stdout, sys.stderr = OutliveReader(sys.stdout), OutliveReader(sys.stderr)
    overrides = dict(args.overrides or [])
    if args.resume:
        overrides["resume"] = True
    params = load_pretrain_params(args.params, overrides)
    try:
        summary = pretrain(params)
    except TrainingDiverged as err:
        print(f"coarsecrop pretrain: error: {err}", file=sys.stderr)
        return 1
    if summary["interrupted"] not in (None, "stop_at_step"):
        return 128 + signal.Signals[summary["interrupted"]].value  # stopped by a signal, checkpoint saved
    if not args.quiet and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 only
        print(json.dumps({k: summary[k] for k in ("out", "step", "total_steps", "interrupted", "wall_s",
                                                  "checkpoint", "backbone")}, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from coarsecrop.studies.transfer import evaluate

    record = evaluate(
        args.task, checkpoint=args.checkpoint, backbone=args.backbone, scenes=args.scenes, images=args.images,
        train_split=_split(args.train_split), val_split=_split(args.val_split), val_scenes=args.val_scenes,
        val_images=args.val_images, n_seeds=args.n_seeds, random_init=not args.no_random_init,
        device=args.device, params=dict(args.param or []), out=args.out,
    )
    for init, row in record["rows"].items():
        s = row["summary"].get(record["headline"], {})
        print(f"{record['task']} {init}: {record['headline']} = {s.get('mean', float('nan')):.2f} "
              f"+- {s.get('std', float('nan')):.2f} over {s.get('n', 0)} seed(s)")
    print(f"wrote {args.out}/metrics.json")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from coarsecrop.evaluate.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.format, args.out, backbone=args.backbone,
                            include_fc=not args.no_fc)
    print(f"wrote {args.format} weights: {out}")
    return 0


def _split(value: str) -> str | None:
    """A split given on the command line: 'all' (or '') is every image."""
    return None if value in ("all", "") else value


def _cmd_detectron2(args: argparse.Namespace) -> int:
    from coarsecrop.evaluate import d2

    path = d2.train_net(args.checkpoint, args.config, args.out, datasets=args.datasets, num_gpus=args.num_gpus,
                        ims_per_batch=args.ims_per_batch, opts=[v for kv in args.opts for v in kv],
                        resume=args.resume, eval_only=args.eval_only, backbone=args.backbone,
                        scenes=args.scenes, images=args.images, train_split=_split(args.train_split),
                        val_split=_split(args.val_split), val_scenes=args.val_scenes,
                        val_images=args.val_images, test=not args.no_test)
    record = json.loads(path.read_text())
    for key, value in record["headline"].items():
        print(f"{key} {'-' if value is None else format(value, '.2f')}")
    if record.get("note"):
        print(f"coarsecrop detectron2: {record['note']}", file=sys.stderr)
    print(f"metrics: {path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from coarsecrop.runs.sweep import missing_inputs, plan_sweep, plan_table, run_sweep, select_points, sweep_root

    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: runs at once must be at least 1")

    if args.dry_run:
        import pandas as pd

        root = sweep_root(args.sweep_file)
        plan = plan_sweep(Path(args.sweep_file), root, args.preset, args.of)
        only = select_points(args.sweep_file, plan, args.point, args.seed)  # a bad --point or --seed errors
        table = plan_table(plan)  # here as it would in the run
        if only is not None:  # what the same command without --dry-run would run
            table = table.loc[sorted(set(only))]
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 40):
            print(table.to_string())
        counts = table["state"].value_counts()
        print(f"{len(table)} point(s) of {plan['notebook']} at preset {plan['preset']}: "
              + ", ".join(f"{n} {state}" for state, n in counts.items()))
        for line in missing_inputs(plan, root):
            print(f"missing input: {line}")
        return 0
    try:
        table = run_sweep(args.sweep_file, jobs=args.jobs, force=args.force, progress=not args.quiet,
                          preset=args.preset, only=args.point, seeds=args.seed, of=args.of)
    except KeyboardInterrupt:
        print("\ncoarsecrop sweep: interrupted; the running points stopped (a trainer saves its checkpoint "
              "first) and no new one started. The same command resumes them.", file=sys.stderr)
        return 130
    counts = table["status"].value_counts().to_dict()
    others = len(table) - counts.get("ok", 0) - counts.get("failed", 0)  # never run (--point, --seed) or unfinished
    print(f"{len(table)} point(s): {counts.get('ok', 0)} ok ({int(table['reused'].sum())} reused), "
          f"{counts.get('failed', 0)} failed" + (f", {others} not run or unfinished" if others else ""))
    print(f"wrote {table.attrs['csv']}")
    return 1 if counts.get("failed", 0) else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from coarsecrop.book import build_book, run_book

    if args.book_command == "build":
        return build_book(Path(args.root))
    return run_book(Path(args.root), args.preset, names=args.notebook, every=args.all, force=args.force)


def _cmd_tables(args: argparse.Namespace) -> int:
    from coarsecrop.studies.results import export_results, results_dir

    source = Path(args.source).resolve() / "runs"
    ids = export_results(args.preset, source.parent)
    target = results_dir(args.preset).parent
    if source.is_dir():
        print(f"{len(ids)} complete run(s) copied from {source} to {target}")
    else:  # a typo in --from must not read as "nothing new": say what was (not) read
        print(f"{source} does not exist: nothing copied (--from names the project root whose runs/ to read); "
              f"the run.json files in {target} now name their points in the sweep files as they are")
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
    p.add_argument("--version", type=int, default=1, choices=(1, 2, 3),
                   help="generator: 1 (the committed results'), 2 (scenes v2: the class is the shape) or 3 "
                        "(scenes v3: v2's objects on a ground that can be told apart from them)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes rendering scenes side by side (the same bytes whatever their number)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_scenes)

    p = sub.add_parser("crops", help="run a cropping strategy over a data set into a sharded manifest")
    p.add_argument("--scenes", required=True,
                   help="COCO annotation file, VOC root, Cityscapes root, plain image folder, or a `coarsecrop scenes` "
                        "folder")
    p.add_argument("--images", default=None, help="image root for a COCO file (default: the file's folder)")
    p.add_argument("--split", default=None, help="train | val (COCO scenes) or a VOC ImageSets name")
    p.add_argument("--strategy", default="ours")
    p.add_argument("--n", type=int, default=5, help="crops per image (paper: 5)")
    p.add_argument("--out", required=True, help="manifest folder")
    p.add_argument("--checkpoint", default=None, help="phi weights (default: random init, the paper's s5)")
    p.add_argument("--backbone", default=None,
                   help="phi's architecture, for the strategies that run one (ours and its variants; default: the "
                        "checkpoint's, else resnet50)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers for decoding (default: on CUDA one per CPU but one, at most 8; on "
                        "the CPU only the cores torch leaves free, usually 0: workers would slow phi down)")
    p.add_argument("--shard-size", type=int, default=256, help="images per manifest shard")
    p.add_argument("--max-side", type=int, default=1333,
                   help="larger images are decoded down to this side (boxes stay in original pixels)")
    p.add_argument("--size-window", type=int, default=None, metavar="IMAGES",
                   help="images batched by size together, in whole shards (default 4096): larger fills more "
                        "batches and holds more lines in memory; under torchrun the ranks split these windows. "
                        "Like --batch-size, resume with the value the job was started with")
    p.add_argument("--decode", default="cpu", choices=("auto", "cpu", "gpu"),
                   help="where images are decoded: cpu (PIL in the DataLoader workers, the default), gpu "
                        "(baseline JPEGs in batches by nvJPEG on the CUDA device; PNG, CMYK, progressive and "
                        "bad files still on the CPU; pixels differ slightly, so it is part of the job's "
                        "configuration), auto (gpu where CUDA and nvJPEG work and the strategy runs a "
                        "backbone, else cpu)")
    p.add_argument("--param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="strategy parameter, repeatable (e.g. nms_iou=0.5, sizes=[16,32,64,128])")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_crops)

    p = sub.add_parser("pretrain", help="SSL pretraining on a crop manifest (one process, or under torchrun)")
    p.add_argument("--params", default=None,
                   help="YAML file of coarsecrop.train.PretrainParams keys (e.g. the pretrain.yaml that "
                        "notebooks/02_pretrain.py writes into its run folder)")
    p.add_argument("overrides", nargs="*", type=_key_value, metavar="KEY=VALUE",
                   help="parameter overrides read as YAML, e.g. epochs=2 batch_size=64 method=byol")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in `out` from its checkpoint.pt (another file: resume=PATH)")
    p.add_argument("--quiet", action="store_true", help="no summary on stdout")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("evaluate", help="transfer a checkpoint to a downstream task (random-init row beside)")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--checkpoint", default=None, help="trainer checkpoint or backbone.pt (default: random init only)")
    p.add_argument("--backbone", default=None, help="architecture (default: read from the checkpoint)")
    p.add_argument("--scenes", required=True,
                   help="COCO json / VOC root / `coarsecrop scenes` folder (semantic: also a Cityscapes root); for "
                        "classify an ImageFolder root")
    p.add_argument("--images", default=None, help="image root for a COCO file (default: the file's folder)")
    p.add_argument("--train-split", default="train",
                   help="split to train on ('all': every image, e.g. COCO's instances_train2017.json)")
    p.add_argument("--val-split", default="val",
                   help="split to score on ('all': every image, e.g. of --val-scenes instances_val2017.json)")
    p.add_argument("--val-scenes", default=None, help="a second data set for the val split (e.g. COCO val2017)")
    p.add_argument("--val-images", default=None, help="image root for --val-scenes")
    p.add_argument("--n-seeds", type=int, default=1, help="runs per row; tables give mean and std")
    p.add_argument("--no-random-init", action="store_true", help="skip the random-init row")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="task parameter, repeatable (e.g. epochs=30, image_size=128, head=fpn)")
    p.add_argument("--out", required=True, help="run folder: metrics.json is written there")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="write a checkpoint's trunk as a torchvision state_dict or a detectron2 pickle")
    p.add_argument("checkpoint", help="trainer checkpoint, backbone.pt or a torchvision state_dict")
    p.add_argument("--format", required=True, choices=["torchvision", "detectron2"])
    p.add_argument("--out", required=True, help="output file (.pt for torchvision, .pkl for detectron2)")
    p.add_argument("--backbone", default=None, help="architecture (default: read from the checkpoint)")
    p.add_argument("--no-fc", action="store_true",
                   help="torchvision: leave out the freshly initialised fc (for detection backbones, strict=True)")
    p.set_defaults(func=_cmd_export)

    from coarsecrop.evaluate.d2 import config_names

    p = sub.add_parser("detectron2", help="finetune and test a trunk with detectron2 and a shipped config "
                                          "(paper-scale detection / instance segmentation; needs detectron2)")
    p.add_argument("checkpoint", help="trainer checkpoint or backbone.pt (exported to OUT/backbone.pkl), or a .pkl")
    p.add_argument("--config", required=True, choices=config_names(), help="a config of coarsecrop/evaluate/configs")
    p.add_argument("--out", required=True, help="output folder: detectron2's files and metrics.json")
    p.add_argument("--datasets", default=None,
                   help="folder holding VOC2007/, VOC2012/, coco/ for the config's own data sets (real VOC07+12, "
                        "COCO 2017; default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--scenes", default=None,
                   help="instead: any COCO json, VOC root or folder made by `coarsecrop scenes` (its classes, "
                        "masks, evaluator and image sizes set the options)")
    p.add_argument("--images", default=None, help="with --scenes: the image root of a COCO json")
    p.add_argument("--train-split", default="train", help="with --scenes: the split to train on ('all': every image)")
    p.add_argument("--val-split", default="val", help="with --scenes: the split to test on ('all': every image)")
    p.add_argument("--val-scenes", default=None,
                   help="with --scenes: the test data when it is another file (e.g. instances_val2017.json)")
    p.add_argument("--val-images", default=None, help="with --val-scenes: its image root")
    p.add_argument("--no-test", action="store_true", help="with --scenes: no test set (metrics.json says so)")
    p.add_argument("--num-gpus", type=int, default=1, help="processes on this machine, one per GPU")
    p.add_argument("--ims-per-batch", type=int, default=None,
                   help="total images per iteration (default: the config's 16); the lr is scaled with it")
    p.add_argument("--backbone", default=None, help="architecture (default: read from the checkpoint)")
    p.add_argument("--resume", action="store_true", help="go on from OUT's last detectron2 checkpoint")
    p.add_argument("--eval-only", action="store_true", help="test MODEL.WEIGHTS (or OUT's last checkpoint) only")
    p.add_argument("--opt", dest="opts", action="append", nargs=2, default=[], metavar=("KEY", "VALUE"),
                   help="a detectron2 option over the config, repeatable (e.g. --opt SOLVER.MAX_ITER 100)")
    p.set_defaults(func=_cmd_detectron2)

    p = sub.add_parser("sweep", help="run a notebook over a grid of parameters (params/sweeps/NAME.yaml) into runs/")
    p.add_argument("sweep_file", help="sweep YAML: notebook, optional preset, grid, optional fixed")
    p.add_argument("--preset", default=None,
                   help="run the grid on this preset (params/PRESET/<notebook>.yaml) instead of the file's")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--force", action="store_true", help="rerun complete runs too, from scratch (without it, "
                   "an unfinished or failed run of the same code continues where it stopped)")
    p.add_argument("--point", type=int, action="append", default=None, metavar="K",
                   help="run only point K (0-based, the order --dry-run lists; repeatable): one point per "
                        "Slurm array task, e.g. --point $SLURM_ARRAY_TASK_ID")
    p.add_argument("--seed", type=int, action="append", default=None, metavar="S",
                   help="run only the points at seed S (a transfer sweep: the trunks of seed S; repeatable, "
                        "adds to --point): a sweep a seed at a time, e.g. --preset gpu --seed 0")
    p.add_argument("--of", action="append", default=None, metavar="SWEEP",
                   help="a transfer sweep: only the trunks of this one of its checkpoints_of sweeps (repeatable), "
                        "e.g. the table sweeps a build ran: --of table1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="run nothing: list every point (with --point, those), its run id and what a run would do "
                        "(complete, new, stale, failed, waiting for its pretraining run), and any missing input")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("book", help="the book: run its notebooks into runs/ and book/generated/, then build the HTML")
    book = p.add_subparsers(dest="book_command", required=True)
    q = book.add_parser("run", help="execute the notebooks with a preset into runs/ and book/generated/")
    q.add_argument("--preset", default="quick", help="folder under params/ (smoke | quick | ...)")
    q.add_argument("--notebook", action="append", help="only this notebook (e.g. 01_crops); repeatable")
    q.add_argument("--all", action="store_true", help="every notebooks/NN_topic.py, not only those the book "
                   "shows (the book/generated/ pages of _toc.yml, the default)")
    q.add_argument("--force", action="store_true", help="rerun even when a complete run of the same "
                   "parameters and code exists")
    q.add_argument("--root", default=".", help="project root (holds notebooks/ and params/)")
    q = book.add_parser("build", help="jupyter-book build of the project root into _build/html (every page, "
                        "warnings fail the build)")
    q.add_argument("--root", default=".", help="project root (holds _config.yml and _toc.yml)")
    p.set_defaults(func=_cmd_book)

    p = sub.add_parser("tables", help="the book's tables: export complete table runs as reference results")
    tables = p.add_subparsers(dest="tables_command", required=True)
    q = tables.add_parser("export", help="copy complete table runs of a preset into results/<preset>/")
    q.add_argument("--preset", default="cpu-full")
    q.add_argument("--from", dest="source", default=".", help="project root whose runs/ to read")
    p.set_defaults(func=_cmd_tables)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "pretrain" and not any(e.startswith("-") for e in extra):
        try:  # argparse takes a positional list once: key=value after --resume or --quiet is an override too
            args.overrides = [*(args.overrides or []), *map(_key_value, extra)]
        except argparse.ArgumentTypeError as err:
            parser.error(f"pretrain: {err}")
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"coarsecrop {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional dependency not installed (detectron2, timm): its install hint
        if err.name is not None:  # a module that failed to import: the traceback is the help
            raise
        print(f"coarsecrop {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback through the workers
        print(f"coarsecrop {args.command}: interrupted{AFTER_INTERRUPT.get(args.command, '')}", file=sys.stderr)
        return 130
