"""Writing built-in scenes with worker processes against one process (never a unit test).

The gpu preset (params/gpu/02_pretrain.yaml) writes 5,000 scenes v3 of 256 px before its first run, with the
loader's worker processes (``write_scenes(..., workers=N)``); one process renders them one after another.
This writes the same set both ways, side by side in one run, checks that the files are the same bytes and
prints the rate of each and their ratio (the target: close to min(N, cores) times faster once the set is
large enough to pay for starting the workers).

    python benchmarks/scenes_speed.py [--num-images 400] [--size 256] [--version 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import tempfile
import time
from pathlib import Path

from coarsecrop.data.synthetic import write_scenes


def timed_write(out: Path, args: argparse.Namespace, workers: int) -> float:
    start = time.perf_counter()
    write_scenes(out, num_images=args.num_images, seed=args.seed, size=args.size, progress=False,
                 version=args.version, workers=workers)
    return time.perf_counter() - start


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = timed_write(Path(tmp) / "one", args, 1)
        many = timed_write(Path(tmp) / "many", args, args.workers)
        same = same_files(Path(tmp) / "one", Path(tmp) / "many")
    print(f"{args.num_images} scenes v{args.version} of {args.size} px on {os.cpu_count()} cores")
    print(f"  1 process:   {one:7.1f} s  {args.num_images / one:7.1f} scenes/s")
    print(f"  {args.workers} processes: {many:7.1f} s  {args.num_images / many:7.1f} scenes/s")
    print(f"  ratio {one / many:.2f}x; the same bytes: {same}")


if __name__ == "__main__":
    main()
