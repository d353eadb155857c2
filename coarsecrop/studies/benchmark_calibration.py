"""The calibration of the CPU pretraining on scenes v2 or v3 (issue 13): one SSL configuration on GT-Crop,
scored with the benchmark's object probe, appended as one line to a CSV that keeps every try.

    python -m coarsecrop.studies.benchmark_calibration --name "MoCo-v2 cpu-full" \\
        --config '{"method": "moco_v2", "epochs": 6, "lr": 1.2, "method_params": {"queue_size": 1024}}' \\
        --version 3 --images 1000 --seed 3 --out runs/calibration --csv results/cpu-full/17_benchmark/calibration_scenes_v3_cpu.csv
    python -m coarsecrop.studies.benchmark_calibration --baselines ...   # random init + supervised rows

A run goes through ``benchmark.ssl_row`` (the pretraining path of notebooks/02_pretrain.py: GT crop job,
trainer subprocess, the final monitor line), so a calibrated configuration is exactly what an entry of
the benchmark preset's ``ssl`` mapping runs. The CSV's first line names the commit and the machine;
each row: name, probe numbers (linear, kNN; the trainer's own random-init scores beside them), steps,
losses, wall time, the JSON config and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from coarsecrop.params import project_root
from coarsecrop.studies import benchmark as B

COLUMNS = ("name", "kind", "linear_top1", "knn_top1", "init_linear_top1", "init_knn_top1", "init_bn_linear_top1",
           "steps", "epochs", "first_loss", "final_loss", "wall_s", "scenes", "config", "command")


def header() -> str:
    """'# commit <sha>, machine <cpu count> CPUs <platform>, load <1-min load> at start'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=project_root()).stdout.strip()
    except OSError:
        sha = "unknown"
    return (f"# commit {sha or 'unknown'}; machine: {os.cpu_count()} CPUs, {platform.machine()}, "
            f"{platform.platform()}; shared with other jobs, nice 5, one torch thread per run\n")


def append(csv_path: Path, row: dict) -> None:
    """Append ``row`` (COLUMNS) to ``csv_path``, writing the header lines first when the file is new."""
    new = not csv_path.exists()
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("a", newline="", encoding="utf-8") as f:
        if new:
            f.write(header())
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def json_object(parser: argparse.ArgumentParser, option: str, text: str) -> dict:
    """``text`` read as a JSON object; anything else stops the script with a usage error naming ``option``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        parser.error(f"{option} is not JSON ({err}): {text!r}")
    if not isinstance(value, dict):
        parser.error(f"{option} must be a JSON object such as '{{\"epochs\": 6}}', got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="")
    parser.add_argument("--config", default="{}", help="JSON: PretrainStudyParams fields of the SSL row")
    parser.add_argument("--baselines", action="store_true", help="the random-init and supervised rows instead")
    parser.add_argument("--supervised", default='{"epochs": 12, "lr": 0.1, "batch_size": 64}')
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--version", type=int, default=2, choices=(2, 3), help="the scenes generator")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--min-side", type=float, default=0,
                        help="probe only objects whose GT box is at least this many px (sqrt of its area; "
                             "0 = all). The SSL pretraining still trains on every GT crop; the supervised "
                             "row trains on the probe's train objects, so on the kept ones only")
    parser.add_argument("--out", required=True)
    parser.add_argument("--csv", required=True)
    args = parser.parse_args(argv)
    config = json_object(parser, "--config", args.config)
    command = "python -m coarsecrop.studies.benchmark_calibration " + shlex.join(sys.argv[1:] if argv is None else argv)
    p = B.BenchmarkParams(num_images=args.images, scene_size=args.size, seed=args.seed, versions=[args.version], trunk_version=args.version,
                          trunk_images=args.images, image_size=args.image_size, out=args.out,
                          supervised=json_object(parser, "--supervised", args.supervised), ssl={args.name or "ssl": config})
    run_dir = Path(args.out)
    if not args.baselines:
        try:  # a misspelt or clashing key stops here, before the scenes are written
            B.ssl_study_params(p, run_dir, run_dir, config)
        except (ValueError, TypeError) as err:
            parser.error(f"--config: {err}")
    note = B.scenes_note(p.trunk_version, args.images, args.size, args.seed, args.min_side)
    scenes = B.trunk_scenes(p, run_dir)
    if args.baselines:
        rows, objects = B.baseline_rows(p, scenes, args.min_side)
        print(json.dumps({"min_side": args.min_side, "train_objects": objects[0], "val_objects": objects[1]}))
        for r in rows:
            append(Path(args.csv), {**r, "name": r["trunk"], "scenes": note, "command": command,
                                    "config": json.dumps(p.supervised if r["kind"] == "supervised" else {})})
            print(json.dumps({k: r[k] for k in ("trunk", "linear_top1", "knn_top1", "wall_s")}))
        return
    out = run_dir / "trunks" / B._slug(args.name)
    row = B.ssl_row(p, scenes, out, args.name, config, args.min_side)  # with the trainer's own init scores
    append(Path(args.csv), {**row, "name": args.name, "scenes": note, "config": json.dumps(config, sort_keys=True), "command": command})
    print(json.dumps({k: row[k] for k in ("trunk", "linear_top1", "knn_top1", "steps", "wall_s")}))


if __name__ == "__main__":
    main()
