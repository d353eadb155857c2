"""The crop manifest: a folder per crop job, written in shards so a job can be killed and resumed.

Layout of a manifest folder::

    config.json          the job's configuration and code version, written when the job starts
    shard-00000.jsonl    one JSON line per scene, keys sorted, in scene order (``shard_size`` scenes)
    shard-00001.jsonl    ...
    manifest.json        configuration, code version, counts and shard checksums, written when all
                         shards exist (its presence means the job is complete)
    timing.jsonl         one line per process run (rank, wall time, images/s, the main loop's
                         stages: coarsecrop.crops.job.STAGES); the only file that
                         differs between a resumed and an uninterrupted job

A line is ``{"id", "file", "width", "height", "boxes", "scores"}`` (boxes 2 decimals, rounded outwards
so they still contain the crop and stay >= 1 px; scores 6 decimals) or ``{"id", "file", "skipped"}``
with a one-line reason. ``file`` is relative to the scene set root recorded in the configuration.

Every file except ``timing.jsonl`` is written to a temporary name in the same folder, fsync'ed and
``os.replace``'d, so a reader never sees a partial file, and nothing in them depends on time, host,
rank or batch order: a resumed job ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import coarsecrop
from coarsecrop.io import TMP_MARK, write_text

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"
TIMING_NAME = "timing.jsonl"


# ---------------------------------------------------------------- names and atomic files

def shard_name(k: int) -> str:
    """File name of shard ``k``: ``shard-00000.jsonl``."""
    return f"shard-{k:05d}.jsonl"


def num_shards(num_images: int, shard_size: int) -> int:
    """Shards of ``shard_size`` scenes that cover ``num_images`` (at least one, even for no images)."""
    return max(1, math.ceil(num_images / shard_size))


def shard_range(k: int, shard_size: int, num_images: int) -> range:
    """The scene indices of shard ``k``."""
    return range(k * shard_size, min((k + 1) * shard_size, num_images))


def remove_stale_temporaries(folder: str | Path, shards: list[int], min_age_s: float = 60.0) -> list[Path]:
    """Delete temporary files left by a killed run.

    Temporaries of the given shards (owned by the caller's rank, so nobody else writes them) go at
    once; temporaries of the shared files (config, manifest) only when older than ``min_age_s``, so a
    rank that is writing one right now is not disturbed."""
    folder = Path(folder)
    own = {shard_name(k) for k in shards}
    removed = []
    for tmp in folder.glob(f"*{TMP_MARK}*"):
        target = tmp.name.split(TMP_MARK, 1)[0]
        try:
            stale = target in own or (target in (CONFIG_NAME, MANIFEST_NAME)
                                      and time.time() - tmp.stat().st_mtime > min_age_s)
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # another rank removed or renamed it meanwhile
            pass
    return removed


# ---------------------------------------------------------------- lines

SNAP = 0.05  # in hundredths of a pixel: a value within 0.0005 px of a 2-decimal number is that number
# (float32 boxes carry ~1e-4 px of noise at a few thousand pixels; it must not push a box out by 0.01)


def _floor2(x: float) -> float:
    return math.floor(x * 100 + SNAP) / 100


def _ceil2(x: float) -> float:
    return math.ceil(x * 100 - SNAP) / 100


def round_boxes(boxes: torch.Tensor) -> list[list[float]]:
    """Boxes ``[M, 4]`` -> lists with 2 decimals, rounded outwards (x1, y1 down; x2, y2 up).

    Outward rounding keeps a clipped box inside integer image bounds and never shrinks it below 1 px
    (both ends land on multiples of 0.01 and move inwards by at most 0.0005 px)."""
    out = []
    for x1, y1, x2, y2 in boxes.detach().to("cpu", torch.float64).tolist():
        out.append([_floor2(x1), _floor2(y1), _ceil2(x2), _ceil2(y2)])
    return out


def round_scores(scores: torch.Tensor) -> list[float]:
    """Scores ``[M]`` -> list with 6 decimals."""
    return [round(s, 6) for s in scores.detach().to("cpu", torch.float64).tolist()]


def crop_line(scene_id, file: str, width: int, height: int, boxes: torch.Tensor,
              scores: torch.Tensor) -> dict:
    """The manifest record of an image that got crops (boxes in original pixels, already clipped)."""
    return {"id": scene_id, "file": file, "width": int(width), "height": int(height),
            "boxes": round_boxes(boxes), "scores": round_scores(scores)}


def skipped_line(scene_id, file: str, reason: str) -> dict:
    """The manifest record of an image that could not be used, with a one-line reason."""
    return {"id": scene_id, "file": file, "skipped": " ".join(str(reason).split())}


def dumps_line(record: dict) -> str:
    """One JSON line, keys sorted, compact."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def write_shard(folder: str | Path, k: int, records: list[dict]) -> Path:
    """Write shard ``k`` atomically (all its records, in scene order)."""
    path = Path(folder) / shard_name(k)
    write_text(path, "".join(dumps_line(r) for r in records))
    return path


class ShardWriter:
    """One background thread that turns results into lines and writes the shards, so the caller's loop
    (decode, crop) never waits for JSON formatting or an fsync.

    ``put(items)`` hands over ``[(scene index, payload)]`` through a bounded queue (at most ``max_pending``
    hand-overs wait; a caller that runs ahead blocks). The thread makes each line with
    ``make_line(index, payload)`` and writes shard ``k`` of ``shards`` with ``write_shard`` (atomic) as
    soon as all its lines are in and every shard before it in ``shards`` is written: shards appear in
    order, each whole, holding the same bytes whatever order the lines came in.

    Use it as a context manager. Leaving normally waits until the queue is drained and every shard is
    written (a shard still missing lines then is a RuntimeError). An exception in the thread is raised
    again in the caller's thread, the same exception object with its message, at the next ``put`` or at
    the exit. Leaving with an exception stops the thread; shards it had not completed are not written
    (a resumed job redoes them)."""

    def __init__(self, folder: str | Path, shards: list[int], shard_size: int, num_images: int,
                 make_line: Callable[[int, Any], dict], max_pending: int = 8):
        self.folder = Path(folder)
        self.shards = list(shards)
        self.shard_size = shard_size
        self.num_images = num_images
        self.make_line = make_line
        self.queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.error: BaseException | None = None
        self.written: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crop-shard-writer", daemon=True)
        self.seconds = {"lines": 0.0, "files": 0.0}  # the thread's busy time: make_line, write_shard

    def _range(self, k: int) -> range:
        return shard_range(k, self.shard_size, self.num_images)

    def __enter__(self) -> "ShardWriter":
        self._thread.start()
        return self

    def put(self, items: list[tuple[int, Any]]) -> None:
        """Hand over one batch of results; blocks while the queue is full; raises the thread's error."""
        self._hand_over(list(items))

    def _hand_over(self, obj) -> None:
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("the shard writer thread is not running")
            try:
                self.queue.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._stop.set()
            self._thread.join()
            return
        self._hand_over(None)  # the end: the thread drains the queue, writes, and stops
        self._thread.join()
        self._raise_error()

    def _run(self) -> None:
        try:
            missing = {k: len(self._range(k)) for k in self.shards}
            owner = {i: k for k in self.shards for i in self._range(k)}
            lines: dict[int, dict] = {}
            next_shard = 0
            while not self._stop.is_set():
                try:
                    items = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if items is None:
                    if next_shard < len(self.shards):
                        k = self.shards[next_shard]
                        raise RuntimeError(f"shard {k} is missing {missing[k]} of {len(self._range(k))} "
                                           "lines at the end of the job")
                    return
                t0 = time.perf_counter()
                for i, payload in items:
                    if i not in owner or i in lines or missing[owner[i]] == 0:
                        raise RuntimeError(f"scene {i} handed to the shard writer twice or outside its shards")
                    lines[i] = self.make_line(i, payload)
                    missing[owner[i]] -= 1
                t1 = time.perf_counter()
                while next_shard < len(self.shards) and missing[self.shards[next_shard]] == 0:
                    k = self.shards[next_shard]
                    write_shard(self.folder, k, [lines.pop(i) for i in self._range(k)])
                    self.written.append(k)
                    next_shard += 1
                self.seconds["lines"] += t1 - t0
                self.seconds["files"] += time.perf_counter() - t1
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            self.error = err


def skip_kind(reason: str) -> str:
    """A short category of a skip reason for the summary histogram (the line keeps the full reason)."""
    text = reason.lower()
    for kind, words in (
        ("crop strategy failed", ("crop strategy failed",)),
        ("missing file", ("missing", "no such file", "not found", "does not exist")),
        ("empty file", ("empty", "0 bytes", "zero bytes")),
        ("truncated image", ("truncated", "premature", "incomplete")),
        ("not an image", ("not an image", "cannot identify", "unidentified", "unrecognised",
                          "unrecognized", "unreadable image header", "is a directory")),
        ("corrupt image", ("corrupt", "broken")),
        ("too large", ("too large", "decompression-bomb")),
    ):
        if any(w in text for w in words):
            return kind
    return "other"


# ---------------------------------------------------------------- configuration and counts

def code_version() -> dict:
    """Package version and git commit of the code that runs (commit None unless the package is imported
    from a git checkout of coarsecrop itself, not merely installed inside some other repository)."""
    package = Path(coarsecrop.__file__).resolve().parent
    commit = None
    try:
        res = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package,
                             capture_output=True, text=True, timeout=10)
        lines = res.stdout.split()
        if res.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() / "coarsecrop" == package:
            commit = lines[1]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": "coarsecrop", "version": coarsecrop.__version__, "git_commit": commit}


def dumps_json(obj) -> str:
    """Pretty JSON with sorted keys: the form of config.json and manifest.json."""
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two configurations, one per key."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            diffs.append(f"{key}: {old.get(key, '<absent>')!r} there, {new.get(key, '<absent>')!r} now")
    return diffs


# Request keys a strategy with a backbone records: its scores can differ in the 6th decimal between batch
# compositions (coarsecrop.crops.job), so a resume with other values is warned about and the hint keeps them.
BATCH_KEYS = ("batch_size", "size_window")


def open_job_folder(out: str | Path, config: dict, code: dict, request: dict | None = None) -> dict:
    """Create the job folder or check that it holds the same job; returns the stored code version.

    ``config`` is the fingerprint (everything that changes the output); ``request`` (the arguments as
    given, for the resume hint) is stored beside it but not compared. A folder holding a job with a
    different configuration is refused (ValueError naming the keys that differ); the same
    configuration resumes. JSON round-trips the config first so tuples and lists compare equal."""
    out = Path(out)
    config = json.loads(json.dumps(config))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder for the crop manifest")
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / CONFIG_NAME
    if not cfg_path.exists():
        others = [p.name for p in out.iterdir() if not p.name.startswith(".") and TMP_MARK not in p.name]
        if others:
            raise ValueError(f"--out {out} is not empty and holds no crop job ({CONFIG_NAME} missing; "
                             f"found {', '.join(sorted(others)[:5])}); choose an empty or new folder")
        request = json.loads(json.dumps(request or {}, default=str))
        write_text(cfg_path, dumps_json({"config": config, "code": code, "format_version": FORMAT_VERSION,
                                            "request": request}))
    stored = json.loads(cfg_path.read_text(encoding="utf-8"))
    diffs = config_differences(stored.get("config", {}), config)
    if diffs:
        raise ValueError(
            f"{out} already holds a crop job with a different configuration:\n  " + "\n  ".join(diffs)
            + f"\nUse another --out for this configuration (or delete {out} to start over); "
              "rerunning with the same configuration resumes the job.")
    started = stored.get("request") or {}
    changed = [f"--{k.replace('_', '-')} {started[k]} (now {request[k]})" for k in BATCH_KEYS
               if started.get(k) is not None and (request or {}).get(k) not in (None, started[k])]
    if changed:
        warnings.warn(f"{out} was started with {', '.join(changed)}: phi's scores depend on the batch, so the "
                      "shards written now may differ from an uninterrupted run's in the 6th decimal (the "
                      "manifest stays valid); resume with the values the job was started with for the same bytes")
    return stored.get("code", code)


def shard_summary(folder: Path, k: int) -> dict:
    """Counts and checksum of a finished shard, read back from disk."""
    data = (folder / shard_name(k)).read_bytes()
    done = skipped = boxes = 0
    reasons: dict[str, int] = {}
    for line in data.decode("utf-8").splitlines():
        rec = json.loads(line)
        if "skipped" in rec:
            skipped += 1
            kind = skip_kind(rec["skipped"])
            reasons[kind] = reasons.get(kind, 0) + 1
        else:
            done += 1
            boxes += len(rec["boxes"])
    return {"name": shard_name(k), "sha256": hashlib.sha256(data).hexdigest(),
            "images": done + skipped, "done": done, "skipped": skipped, "boxes": boxes,
            "skip_reasons": reasons}


def missing_shards(folder: str | Path, total: int) -> list[int]:
    """Indices of the shards not yet written."""
    folder = Path(folder)
    return [k for k in range(total) if not (folder / shard_name(k)).exists()]


def _sum_counts(shards: list[dict]) -> dict:
    reasons: dict[str, int] = {}
    for s in shards:
        for kind, c in s["skip_reasons"].items():
            reasons[kind] = reasons.get(kind, 0) + c
    return {"images": sum(s["images"] for s in shards), "done": sum(s["done"] for s in shards),
            "skipped": sum(s["skipped"] for s in shards), "boxes": sum(s["boxes"] for s in shards),
            "skip_reasons": dict(sorted(reasons.items()))}


def folder_counts(folder: str | Path, total: int) -> dict:
    """Counts over the shards finished so far (a partial job, e.g. while other ranks still run)."""
    folder = Path(folder)
    done = [k for k in range(total) if (folder / shard_name(k)).exists()]
    return {**_sum_counts([shard_summary(folder, k) for k in done]), "shards": len(done)}


def write_manifest(folder: str | Path) -> dict:
    """Write manifest.json from config.json and the finished shards (all must exist); returns it.

    Every number is read back from the shards, so whichever process writes it (the last rank, a
    resumed run) writes the same bytes."""
    folder = Path(folder)
    stored = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    config = stored["config"]
    total = num_shards(config["num_images"], config["shard_size"])
    missing = missing_shards(folder, total)
    if missing:
        raise RuntimeError(f"cannot write {MANIFEST_NAME}: {len(missing)} of {total} shards missing")
    shards = [shard_summary(folder, k) for k in range(total)]
    counts = {**_sum_counts(shards), "shards": total}
    if counts["images"] != config["num_images"]:
        raise RuntimeError(f"shards in {folder} hold {counts['images']} images, the configuration "
                           f"{config['num_images']}; the folder was modified by hand? rerun into a new --out")
    manifest = {"format_version": stored.get("format_version", FORMAT_VERSION), "config": config,
                "code": stored["code"], "counts": counts,
                "shards": [{k: v for k, v in s.items() if k != "skip_reasons"} for s in shards]}
    write_text(folder / MANIFEST_NAME, dumps_json(manifest))
    return manifest


def append_timing(folder: str | Path, record: dict) -> None:
    """Append one line of wall time / throughput (kept out of the reproducible files)."""
    with open(Path(folder) / TIMING_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


# ---------------------------------------------------------------- reader

def resume_command(folder: Path, request: dict) -> str:
    """The ``coarsecrop crops`` command line that resumes a job, from the arguments it was started with."""
    parts = ["coarsecrop crops"]
    for key in ("scenes", "images", "split", "strategy", "n", "backbone", "checkpoint", "shard_size",
                "max_side", "device", "decode", *BATCH_KEYS):
        if request.get(key) is not None:
            parts.append(f"--{key.replace('_', '-')} {request[key]}")
    for k, v in sorted((request.get("strategy_params") or {}).items()):
        parts.append(f"--param {k}={json.dumps(v, separators=(',', ':'))}")
    parts.append(f"--out {folder}")
    return " ".join(parts)


@dataclass
class Manifest:
    """A finished crop job: configuration, counts and the per-image records."""

    folder: Path
    config: dict
    code: dict
    counts: dict
    shards: list[dict]
    root: Path

    def records(self) -> Iterator[dict]:
        """Every line in scene order, ``file`` resolved to an absolute path, boxes as lists."""
        for s in self.shards:
            with open(self.folder / s["name"], encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    rec["file"] = os.path.abspath(os.path.join(self.root, rec["file"]))
                    yield rec

    def crops(self) -> Iterator[tuple[str, list[float]]]:
        """``(absolute file, [x1, y1, x2, y2])`` for every crop of every usable image."""
        for rec in self.records():
            for box in rec.get("boxes", ()):
                yield rec["file"], box

    def __len__(self) -> int:
        return self.counts["images"]


def read_manifest(folder: str | Path, root: str | Path | None = None) -> Manifest:
    """Open a finished manifest folder. ``root`` overrides the recorded scene set root (data moved).

    Raises FileNotFoundError for a folder that is no crop manifest, and RuntimeError for an unfinished
    job (how many shards are missing and the command that resumes it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no crop manifest at {folder}: not a folder")
    man_path, cfg_path = folder / MANIFEST_NAME, folder / CONFIG_NAME
    if not man_path.exists():
        if not cfg_path.exists():
            raise FileNotFoundError(f"{folder} is not a crop manifest (no {MANIFEST_NAME} or {CONFIG_NAME}); "
                                    "make one with `coarsecrop crops --out DIR ...`")
        stored = json.loads(cfg_path.read_text(encoding="utf-8"))
        config = stored["config"]
        total = num_shards(config["num_images"], config["shard_size"])
        missing = missing_shards(folder, total)
        state = (f"{len(missing)} of {total} shards missing" if missing
                 else f"all {total} shards written but {MANIFEST_NAME} not yet")
        raise RuntimeError(f"the crop job in {folder} is unfinished ({state}); resume it with the same "
                           f"configuration (finished shards are kept; under torchrun, on every rank):\n  "
                           f"{resume_command(folder, stored.get('request', {}))}")
    manifest = json.loads(man_path.read_text(encoding="utf-8"))
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise RuntimeError(f"{man_path} has format {manifest['format_version']}, newer than this coarsecrop "
                           f"reads ({FORMAT_VERSION}); update coarsecrop")
    config = manifest["config"]
    return Manifest(folder=folder, config=config, code=manifest["code"], counts=manifest["counts"],
                    shards=manifest["shards"], root=Path(root if root is not None else config["root"]))
