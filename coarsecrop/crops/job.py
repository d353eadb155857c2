"""A crop job: one strategy over a whole scene set, into a sharded, resumable manifest.

    scenes --open_scenes--> sorted scene list --shard_size--> shards --window w to rank w % world--> this process
      --windows of consecutive pending shards, batched by image size--> batch sampler
      --DataLoader(workers decode, max_side)--> decoded batch [(index, uint8 [3, H, W] | None, scale | reason)]
      --strategy (CPU tensors, one host copy per batch)--> results
      --bounded queue--> writer thread: lines in original pixels (JSON), shard files (atomic, fsync, in order)

The main loop only decodes (in workers), runs the strategy and hands its CPU tensors over; formatting
and fsyncs happen on the writer thread (``manifest.ShardWriter``), so on a GPU the next batch is
uploaded while the last one is written. ``finish`` runs after the writer has drained. Each run's line
in timing.jsonl says where the main loop's wall time went (``STAGES``: waiting for the loader, the GPU
decode, the strategy, the hand-over, the final drain) and the writer thread's busy time.

Batches that fill: images of equal recorded size share one backbone forward, so batches are formed
by size across a window of W = ``ceil(size_window / shard_size)`` shards, not inside one shard. Windows
are fixed: window w holds shards [w W, (w + 1) W), whatever the rank count or the shards already
written, so every image meets the same batch companions in an uninterrupted job, a resumed one and any
number of ranks. A resumed job crops every image of each window that still has a missing shard (so
the missing shards get the bytes they would have had) but writes only the missing shards; at most one
window of work is redone per window a kill interrupted. Lines of at most one window wait in memory; a
shard is written as soon as it is complete and every earlier shard of this process is written.

What the batches may change: a network's float results can depend on the batch they were computed in
(on CPU, oneDNN takes another path for fewer than 4 images of one size; scores then differ in the 6th
decimal). So ``ours`` writes the same bytes for the same ``--batch-size`` and ``--size-window`` (resume
with the values the job was started with); strategies that crop image by image (grid, random, gt,
selective_search, ...) write the same bytes for any batch size and window. Workers and ranks never
change the bytes.

With ``decode="gpu"`` the workers pass baseline JPEGs on undecoded and one batched nvJPEG call decodes
them on the job's device (coarsecrop.crops.decode); the configuration then records ``"decode": "gpu"``.

Many processes (``torchrun``: RANK / WORLD_SIZE / LOCAL_RANK) split one data set with no coordination
but the file system: window w (its shards) belongs to rank w % world_size, every shard is written
atomically, and
whoever finds all shards present writes ``manifest.json`` (see coarsecrop.crops.manifest). On M
machines of K GPUs each (no process group is needed; the ranks only share the --out folder)::

    torchrun --nnodes=M --nproc_per_node=K --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT \\
        -m coarsecrop crops --scenes ... --strategy ours --out SHARED/crops-ours

Bad images never stop a job: they become ``skipped`` lines with the reason. Two things that are no bad
image stop it instead: the first ``FAIL_FAST`` images (in scene order) all missing, checked before any
work (``check_images_found``: the image root is wrong, ValueError suggesting ``--images``), and the
strategy failing on each of the first ``FAIL_FAST`` images it gets (a ValueError when it refused its input,
a RuntimeError otherwise: likely a bug).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm  # the text bar: tqdm.auto warns in every kernel without ipywidgets (not a dependency)

from coarsecrop.boxes import clip_boxes
from coarsecrop.crops import manifest as mf
from coarsecrop.crops.decode import BatchDecoder, cpu_item, resolve_decode, worker_item
from coarsecrop.crops.fingerprint import annotations_sha256, masks_sha256, relative_file, scene_list_sha256
from coarsecrop.crops.strategies import STRATEGIES, make_strategy
from coarsecrop.data.images import BadImage, image_size
from coarsecrop.data.scenes import open_scenes
from coarsecrop.device import resolve_device
from coarsecrop.io import file_sha256

DEFAULT_MAX_SIDE = 1333  # detectron2's default max size: bounds memory for any input image
DEFAULT_SIZE_WINDOW = 4096  # images batched by size together (whole shards, at least one)
FAIL_FAST = 8  # the first images all missing, or all failing in the strategy: stop, that is no bad image
STRATEGY_OPTIONS = ("n", "backbone", "checkpoint", "device")  # job options, never strategy params
# where the main loop's wall time goes (seconds, host clock), and the writer thread's busy time
STAGES = ("loader", "decode", "strategy", "hand_over", "drain", "writer_lines", "writer_files")
STAGE_NOTES = {
    "loader": "waiting for the DataLoader (workers decode; the pin thread)",
    "decode": "BatchDecoder: nvJPEG and the upload (GPU path), counting",
    "strategy": "the strategy: stack, upload, phi, map, scoring, selection, the device-to-host copy",
    "hand_over": "counts and the hand-over to the writer (blocks while its queue is full)",
    "drain": "after the last batch: the writer finishing the last shards",
    "writer_lines": "writer thread: lines in original pixels (JSON-ready), overlapping the loop",
    "writer_files": "writer thread: shard files (JSON, fsync), overlapping the loop",
}


# ---------------------------------------------------------------- setup

def check_job_args(n: int, batch_size: int, workers: int, shard_size: int, max_side: int,
                   size_window: int = DEFAULT_SIZE_WINDOW) -> None:
    """Fail at once, with the option's name, on values that cannot work."""
    for name, value, least in (("n", n, 1), ("batch_size", batch_size, 1), ("shard_size", shard_size, 1),
                               ("workers", workers, 0), ("max_side", max_side, 32),
                               ("size_window", size_window, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")


def default_workers(device: torch.device) -> int:
    """Decoding workers when --workers is not given. CUDA: one per CPU but one, at most 8 (the GPU waits
    for pixels). CPU: only the cores phi's threads leave free, so 0 on a machine where torch uses every
    core: there workers steal phi's cores (2 cores, ResNet-18 ``ours``: the job ran at 0.76 of pure phi with
    2 workers, 0.90 with 1 and 0.95 with 0; ResNet-50 lost nothing either way)."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return max(0, cpus - torch.get_num_threads())


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return rank, world, local


def _takes(cls, option: str) -> bool:
    """Does strategy class ``cls`` take ``option`` (n, backbone, checkpoint)?

    The class's ``defaults`` (the strategies' parameter contract) decide; for a class without them,
    its constructor's named parameters."""
    defaults = getattr(cls, "defaults", None)
    if isinstance(defaults, dict):
        return option in defaults
    try:
        return option in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def strategy_takes(name: str, option: str) -> bool:
    """Does the strategy called ``name`` take the job option ``option``? (False for an unknown name: the job
    names the valid strategies when it starts.)"""
    return name in STRATEGIES and _takes(STRATEGIES[name], option)


def build_strategy(name: str, device: torch.device, n: int, backbone: str | None, checkpoint: str | None,
                   params: dict | None):
    """make_strategy with the job's options passed only to strategies that take them.

    Unknown names and parameters fail here (ValueError listing the valid ones), before any work."""
    params = dict(params or {})
    clash = [k for k in STRATEGY_OPTIONS if k in params]
    if clash:
        raise ValueError(f"{clash[0]} is an option of the job itself: give --{clash[0]} ..., "
                         f"not --param {clash[0]}=...")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(sorted(STRATEGIES))}")
    cls = STRATEGIES[name]
    options: dict = {}
    if _takes(cls, "n"):
        options["n"] = n
    if _takes(cls, "backbone"):
        options["backbone"] = backbone
    if checkpoint is not None:
        if not _takes(cls, "checkpoint"):
            users = sorted(k for k, c in STRATEGIES.items() if _takes(c, "checkpoint"))
            raise ValueError(f"strategy {name!r} uses no backbone, so --checkpoint does not apply "
                             f"(strategies with a backbone: {', '.join(users)})")
        options["checkpoint"] = os.path.abspath(checkpoint)
    return make_strategy(name, device=device, **options, **params)


def sorted_scenes(scene_set) -> list:
    """Scenes in a fixed order (relative file, then id) whatever order the reader produced."""
    root = scene_set.root
    return sorted(scene_set.scenes, key=lambda s: (relative_file(s.file, root), str(s.id)))


def job_config(scene_set, scenes: list, source, images, split, strategy, n: int, backbone, checkpoint,
               shard_size: int, max_side: int, device: torch.device, decode: str = "cpu") -> dict:
    """Everything that decides the manifest's bytes (and nothing that does not: workers, batch size,
    rank count, timing). Two runs with equal configs resume each other. The decode path is recorded
    only when it is not the CPU's, so configs written before it existed stay the same; likewise
    ``annotations_sha256`` only for strategies that crop from the annotations (``needs_annotations``) and
    ``masks_sha256`` only for those that read the masks (``needs_masks``; ``crops.fingerprint``)."""
    params = {k: v for k, v in dict(strategy.params).items() if k != "device"}
    uses_backbone = _takes(type(strategy), "backbone")
    return {
        "source": os.path.abspath(source),
        "images": None if images is None else os.path.abspath(images),
        "format": scene_set.format,
        "root": os.path.abspath(scene_set.root),
        "split": split,
        "num_images": len(scenes),
        "scenes_sha256": scene_list_sha256(scenes, scene_set.root),
        "strategy": strategy.name,
        "params": json.loads(json.dumps(params, default=str)),
        "n": n,
        "backbone": strategy.params["backbone"] if uses_backbone else None,  # as the strategy resolved it
        "checkpoint": None if checkpoint is None else {"path": os.path.abspath(checkpoint),
                                                       "sha256": file_sha256(checkpoint)},
        "shard_size": shard_size,
        "max_side": max_side,
        "device_type": device.type,  # CPU float32 and CUDA bf16 scores may differ in the last digits
        **({} if decode == "cpu" else {"decode": decode}),  # nvJPEG's pixels differ slightly from PIL's
        **({"annotations_sha256": annotations_sha256(scenes)} if getattr(strategy, "needs_annotations", False)
           else {}),
        **({"masks_sha256": masks_sha256(scenes)} if getattr(strategy, "needs_masks", False) else {}),
    }


# ---------------------------------------------------------------- decoding (DataLoader workers)

class DecodeScenes(torch.utils.data.Dataset):
    """Scene index -> (index, uint8 [3, H, W] tensor, scale) or (index, None, reason) for a bad image.

    ``keep_jpeg`` (the GPU decode path): baseline JPEGs come back undecoded, as decode.worker_item says.
    Holds only file names (cheap to send to worker processes)."""

    def __init__(self, files: list[str], max_side: int, keep_jpeg: bool = False):
        self.files = files
        self.max_side = max_side
        self.keep_jpeg = keep_jpeg

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return (worker_item if self.keep_jpeg else cpu_item)(i, self.files[i], self.max_side)


def _as_list(batch):
    return batch


def window_shards(size_window: int, shard_size: int) -> int:
    """Shards per batching window: enough to hold ``size_window`` images, at least one."""
    return max(1, math.ceil(size_window / shard_size))


def shard_batches(shards: list[int], sizes: list[tuple[int, int]], shard_size: int, batch_size: int,
                  window: int = 1) -> list[list[int]]:
    """Batches of the scene indices of ``shards``, grouped by recorded size (height, width) within each
    window (shards ``k`` with equal ``k // window``); a batch never crosses a window.

    Images of one size meet in one batch and share one backbone forward (the strategies group equal
    sizes), also when they sit in neighbouring shards; the scenes of a window are ordered by (size,
    index) and cut into batches of ``batch_size``, so only a window's last batch is short. Lines are
    still written in scene order."""
    windows: dict[int, list[int]] = {}
    for k in shards:
        windows.setdefault(k // window, []).extend(mf.shard_range(k, shard_size, len(sizes)))
    batches = []
    for w in sorted(windows):
        idx = sorted(windows[w], key=lambda i: (sizes[i], i))
        batches += [idx[j:j + batch_size] for j in range(0, len(idx), batch_size)]
    return batches


def window_cover(shards: list[int], window: int, total: int) -> list[int]:
    """Every shard of each window that holds one of ``shards`` (what must be cropped so ``shards`` get
    the batches of an uninterrupted job)."""
    return [k for w in sorted({k // window for k in shards}) for k in range(w * window, min((w + 1) * window, total))]


def job_batches(scenes: list, shards: list[int], shard_size: int, batch_size: int, window: int) -> list[list[int]]:
    """The batches (scene indices, in the job's order) of a job that writes ``shards`` of the sorted
    ``scenes``: every shard of their windows, batched by recorded size (``shard_batches``)."""
    cover = window_cover(shards, window, mf.num_shards(len(scenes), shard_size))
    return shard_batches(cover, [(s.height or 0, s.width or 0) for s in scenes], shard_size, batch_size, window)


# ---------------------------------------------------------------- cropping

@dataclass(frozen=True)
class Cropped:
    """A strategy's checked output for one image, on its way to the writer thread (CPU tensors only;
    the decoded image itself is not kept)."""

    decoded_hw: tuple[int, int]  # (H, W) of the decoded image the boxes refer to
    scale: float  # original long side / decoded long side (1.0: decoded at full size)
    boxes: torch.Tensor  # [M, 4] decoded pixels
    scores: torch.Tensor  # [M]


def checked(image: torch.Tensor, scale: float, boxes: torch.Tensor, scores: torch.Tensor) -> Cropped:
    """The strategy's boxes and scores for ``image`` checked (CPU, as many scores as boxes, finite).

    Strategies return CPU tensors after one device-to-host copy per batch; a tensor still on a device
    is refused rather than copied here image by image."""
    for name, t in (("boxes", boxes), ("scores", scores)):
        if t.device.type != "cpu":
            raise ValueError(f"strategy returned {name} on {t.device}; strategies return CPU tensors")
    boxes, scores = boxes.detach().reshape(-1, 4), scores.detach().reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"strategy returned {len(boxes)} boxes but {len(scores)} scores")
    if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
        raise ValueError("strategy returned non-finite boxes or scores")
    h, w = image.shape[-2:]
    return Cropped((int(h), int(w)), float(scale), boxes, scores)


def original_size(scene, decoded_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(width, height) of the original image: the decoded size; when the image was decoded smaller, the
    recorded size where it agrees, else the file's header (decoded size x scale is exact along the long side
    only: a 2048 x 1024 image decoded at 1333 px would come back 2048 x 1023)."""
    h, w = decoded_hw
    if scale == 1.0:
        return int(w), int(h)
    width, height = round(w * scale), round(h * scale)
    if scene.width and scene.height and abs(scene.width - width) <= scale + 1 \
            and abs(scene.height - height) <= scale + 1:
        return int(scene.width), int(scene.height)
    try:
        return image_size(scene.file)  # header only; the file was decoded a moment ago
    except BadImage:
        return int(width), int(height)


def crop_record(scene, file: str, cropped: Cropped) -> dict:
    """Strategy output (decoded pixels) -> manifest line (original pixels, clipped, rounded); runs on
    the writer thread.

    An image decoded smaller is a resize of the whole original, so each axis maps back by its own
    factor (original size / decoded size): exact on both axes, where one ``scale`` is exact only
    along the long side."""
    width, height = original_size(scene, cropped.decoded_hw, cropped.scale)
    boxes = cropped.boxes.to(torch.float64)
    if cropped.scale != 1.0:
        h, w = cropped.decoded_hw
        boxes = boxes * torch.tensor([width / w, height / h, width / w, height / h], dtype=torch.float64)
    return mf.crop_line(scene.id, file, width, height, clip_boxes(boxes, width, height), cropped.scores)


def manifest_line(scenes: list, files: list[str], i: int, result: "Cropped | dict") -> dict:
    """The line of scene ``i``: a skipped line as it is, a crop made into one (writer thread)."""
    return result if isinstance(result, dict) else crop_record(scenes[i], files[i], result)


def crop_batch(strategy, items: list, scenes: list, files: list[str]) -> dict[int, Cropped | dict]:
    """Run the strategy on one batch of decoded images; returns scene index -> Cropped (CPU tensors,
    made into a line by the writer thread) or a skipped line.

    When the batch fails, each image is retried alone, and an image the strategy cannot handle becomes
    a skipped line (one strange image must not cost the whole job)."""
    try:
        results = strategy([img for _, img, _ in items], [scenes[i] for i, _, _ in items])
        return {i: checked(img, s, b, sc) for (i, img, s), (b, sc) in zip(items, results, strict=True)}
    except Exception as err:  # noqa: BLE001
        if len(items) == 1:
            i = items[0][0]
            warnings.warn(f"crop strategy failed on {scenes[i].file}: {type(err).__name__}: {err}")
            return {i: mf.skipped_line(scenes[i].id, files[i], f"crop strategy failed: {type(err).__name__}: {err}")}
    lines = {}
    for item in items:
        lines.update(crop_batch(strategy, [item], scenes, files))
    return lines


# ---------------------------------------------------------------- the job

def run_crop_job(scenes, images=None, split=None, out=None, strategy="ours", n=5, strategy_params=None,
                 checkpoint=None, backbone=None, device="auto", batch_size=8, workers=None,
                 shard_size=256, progress=True, max_side=DEFAULT_MAX_SIDE, size_window=None,
                 decode="cpu") -> dict:
    """Run ``strategy`` over the scene set at ``scenes`` into the manifest folder ``out``; resumable.

    ``size_window`` (images, default DEFAULT_SIZE_WINDOW): images batched by size together, in whole
    shards; it changes speed and memory, never the manifest's bytes. ``workers`` None: ``default_workers``.
    ``backbone`` (phi's architecture, for the strategies that run one; the others ignore it) None: the
    checkpoint's, else resnet50.

    Returns a JSON-able summary: ``done`` / ``skipped`` / ``boxes`` / ``skip_reasons`` over all finished
    shards (the whole data set once ``complete``), this process's ``images_per_s`` and ``seconds``,
    shard counts, ``decode`` (the path that ran: cpu or gpu, see coarsecrop.crops.decode) and ``this_run``
    (the same counts for the images this process cropped now, and ``decoded``: images per decode path)."""
    if out is None:
        raise ValueError("--out is required: the folder of the crop manifest")
    size_window = DEFAULT_SIZE_WINDOW if size_window is None else size_window
    check_job_args(n, batch_size, 0 if workers is None else workers, shard_size, max_side, size_window)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    t_start = time.perf_counter()
    rank, world, local_rank = dist_env()
    dev = resolve_device(device, local_rank)
    workers = default_workers(dev) if workers is None else workers
    strat = build_strategy(strategy, dev, n, backbone, checkpoint, strategy_params)
    getattr(strat, "phi", None)  # build phi now (strategies build it lazily): a checkpoint that does not
    # fit fails before any work, and the crop time below does not include building the model
    decode_path = resolve_decode(decode, dev, strategy, _takes(type(strat), "backbone"))

    scene_set = open_scenes(scenes, images=images, split=split)
    check_annotations(strat, scene_set, scenes)
    ordered = sorted_scenes(scene_set)
    if not ordered:
        raise ValueError(f"no images in {scenes}" + (f" (split {split!r})" if split else ""))
    check_images_found(ordered, scenes)
    files = [relative_file(s.file, scene_set.root) for s in ordered]

    out = Path(out)
    config = job_config(scene_set, ordered, scenes, images, split, strat, n, backbone, checkpoint,
                        shard_size, max_side, dev, decode_path)
    request = {"scenes": os.path.abspath(scenes), "images": None if images is None else os.path.abspath(images),
               "split": split, "strategy": strategy, "n": n, "backbone": config["backbone"],
               "checkpoint": None if checkpoint is None else os.path.abspath(checkpoint),
               "shard_size": shard_size, "max_side": None if max_side == DEFAULT_MAX_SIDE else max_side,
               "device": None if str(device) == "auto" else str(device),
               "strategy_params": dict(strategy_params or {}),
               **({} if decode_path == "cpu" else {"decode": decode_path}),
               # phi's float results depend on the batch: resume hint and check (mf.BATCH_KEYS)
               **({"batch_size": batch_size, "size_window": size_window} if config["backbone"] else {})}
    code = mf.code_version()
    started_with = mf.open_job_folder(out, config, code, request)
    if started_with != code:
        warnings.warn(f"{out} was started by {started_with} and resumes with {code}; shards written "
                      "by each may differ")

    total = mf.num_shards(len(ordered), shard_size)
    window = window_shards(size_window, shard_size)
    mine = [k for k in range(total) if (k // window) % world == rank]
    windows = -(-total // window)
    if windows < world and rank == 0:  # window w is rank w % world's: the ranks past the last window sit idle
        warnings.warn(f"{len(ordered)} images make {windows} window(s) of --size-window {size_window} images for "
                      f"{world} ranks: {world - windows} rank(s) have nothing to do; a --size-window of at most "
                      f"{max(shard_size, len(ordered) // world // shard_size * shard_size)} would give every rank work "
                      "(start the job with it: a resume takes the value it was started with)")
    mf.remove_stale_temporaries(out, mine)
    pending = mf.missing_shards(out, total)
    pending = [k for k in pending if (k // window) % world == rank]
    setup_s = time.perf_counter() - t_start

    t0 = time.perf_counter()
    decoder = BatchDecoder(decode_path, dev, max_side)
    stats = process_shards(strat, ordered, files, out, pending, shard_size, batch_size, workers, max_side,
                           dev, progress and rank == 0, f"crops {strat.name}", window, decoder, source=scenes)
    seconds = time.perf_counter() - t0

    manifest = finish(out, total)
    this_run = {**stats, "seconds": round(seconds, 3), "setup_seconds": round(setup_s, 3),
                "decode": decode_path, "decoded": decoder.counts,
                "images_per_s": round(stats["processed"] / seconds, 3) if seconds > 0 and stats["processed"] else 0.0}
    mf.append_timing(out, {"rank": rank, "world_size": world, "device": str(dev), "batch_size": batch_size,
                           "workers": workers, "window_shards": window, "shards_written": len(pending), "unix_time": round(time.time()),
                           **this_run})
    totals = manifest["counts"] if manifest is not None else mf.folder_counts(out, total)
    return {"out": str(out), "strategy": strat.name, "complete": manifest is not None,
            "images": len(ordered), "done": totals["done"], "skipped": totals["skipped"],
            "boxes": totals["boxes"], "skip_reasons": totals["skip_reasons"],
            "images_per_s": this_run["images_per_s"], "seconds": this_run["seconds"],
            "shards": total, "shards_written": len(pending), "shards_already_done": len(mine) - len(pending),
            "rank": rank, "world_size": world, "device": str(dev), "decode": decode_path, "this_run": this_run}


def check_annotations(strategy, scene_set, source) -> None:
    """An annotated-only strategy (gt, gtpad, poor) on images without annotations fails at once."""
    if not getattr(strategy, "needs_annotations", False):
        return
    if scene_set.format == "folder" or not all(s.annotated for s in scene_set.scenes):
        free = sorted(k for k, c in STRATEGIES.items() if not getattr(c, "needs_annotations", False))
        what = "a Cityscapes root (pixel labels, no boxes)" if scene_set.format == "cityscapes" else \
            "a plain image folder"
        raise ValueError(f"strategy {strategy.name!r} needs annotated scenes (GT boxes or masks), but "
                         f"{source} is {what}; use a COCO file, a VOC root or a "
                         f"`coarsecrop scenes` folder, or one of: {', '.join(free)}")


def check_images_found(scenes: list, source) -> None:
    """The first ``FAIL_FAST`` scenes in job order (all of them, in a smaller data set) all naming missing
    files fail at once (ValueError naming ``source`` and the first path): the image root is wrong (a COCO
    json away from its images), and the job would only write a manifest of skipped lines. Fewer missing
    files are bad images: skipped lines, as usual."""
    first = scenes[:FAIL_FAST]
    if first and not any(os.path.exists(s.file) for s in first):
        raise ValueError(f"{source}: the first {len(first)} images are all missing files (e.g. {first[0].file}); "
                         "if the images live in another folder, give it with --images (the image root their "
                         "file names are relative to)")


def process_shards(strategy, scenes: list, files: list[str], out: Path, shards: list[int], shard_size: int,
                   batch_size: int, workers: int, max_side: int, device: torch.device, progress: bool,
                   desc: str, window: int, decoder: BatchDecoder, source: str | Path = "the data set") -> dict:
    """Decode (DataLoader workers) and crop the given shards, batched by size within windows of
    ``window`` shards (all images of their windows are cropped; see the module docstring); the writer
    thread writes each of ``shards``, in order, when complete. Returns the counts of the images of
    ``shards`` (when it returns, every shard is written) and ``stages``: where the wall time went (``STAGES``,
    seconds). ``decoder``: the GPU path's batched decode
    (JPEG bytes -> images on the device) and the path counts (on the CPU path it only counts).

    Stops early when the strategy fails on each of the first ``FAIL_FAST`` decoded images: ValueError when it
    refused them with a ValueError (bad input; ``source``, the scene set as given, names the data set), else
    RuntimeError (likely a bug)."""
    stages = dict.fromkeys(STAGES, 0.0)
    stats = {"processed": 0, "done": 0, "skipped": 0, "boxes": 0, "skip_reasons": {}, "stages": stages}
    wanted = {i for k in shards for i in mf.shard_range(k, shard_size, len(scenes))}
    batches = job_batches(scenes, shards, shard_size, batch_size, window)
    if not batches:
        return stats
    loader = torch.utils.data.DataLoader(
        DecodeScenes([s.file for s in scenes], max_side, keep_jpeg=decoder.path == "gpu"),
        batch_sampler=batches, collate_fn=_as_list,
        num_workers=workers, pin_memory=device.type == "cuda")
    failed_before_success = 0  # a strategy that fails on the first images is broken, not the images
    bar = tqdm(total=sum(len(b) for b in batches), unit="img", desc=desc, disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    writer = mf.ShardWriter(out, shards, shard_size, len(scenes),
                            lambda i, result: manifest_line(scenes, files, i, result))
    lap = time.perf_counter()
    with bar, writer:
        for batch in loader:  # the decoded batch: [(scene index, uint8 [3, H, W] or None, scale or reason)]
            lap = _lap(stages, "loader", lap)
            batch = decoder(batch)  # GPU path: JPEG bytes -> images on the device; counts per path
            lap = _lap(stages, "decode", lap)
            results = {i: mf.skipped_line(scenes[i].id, files[i], reason)
                       for i, image, reason in batch if image is None}
            good = [item for item in batch if item[1] is not None]
            if good:
                cropped = crop_batch(strategy, good, scenes, files)
                failed = sum(isinstance(r, dict) for r in cropped.values())
                if failed_before_success >= 0:
                    failed_before_success = failed_before_success + failed if failed == len(good) else -1
                if failed_before_success >= FAIL_FAST:
                    first = next(iter(cropped.values()))["skipped"]
                    if first.startswith("crop strategy failed: ValueError:"):  # the strategy refused the input
                        raise ValueError(f"the crop strategy refused each of the first {failed_before_success} "
                                         f"images of {source} ({first}); fix the data or the setting it names")
                    raise RuntimeError(f"the crop strategy failed on each of the first {failed_before_success} "
                                       f"images ({first}); that is a bug or a bad setting, not bad images")
                results.update(cropped)
            lap = _lap(stages, "strategy", lap)
            mine = [i for i, _, _ in batch if i in wanted]  # not the images of shards already written
            for i in mine:
                count(stats, results[i])
            writer.put([(i, results[i]) for i in mine])
            bar.update(len(batch))
            bar.set_postfix(skipped=stats["skipped"], refresh=False)
            lap = _lap(stages, "hand_over", lap)
    _lap(stages, "drain", lap)
    stages.update(writer_lines=writer.seconds["lines"], writer_files=writer.seconds["files"])
    stats["stages"] = {k: round(v, 4) for k, v in stages.items()}
    return stats


def _lap(stages: dict, name: str, since: float) -> float:
    """Add the time since ``since`` to ``stages[name]``; returns now. On a GPU the host clock charges the
    device's work to the stage that waits for it (the strategy's one copy to the host, nvJPEG)."""
    now = time.perf_counter()
    stages[name] += now - since
    return now


def count(stats: dict, result: Cropped | dict) -> None:
    """Add one image's result (a Cropped or a skipped line) to the counts."""
    stats["processed"] += 1
    if isinstance(result, dict):
        stats["skipped"] += 1
        kind = mf.skip_kind(result["skipped"])
        stats["skip_reasons"][kind] = stats["skip_reasons"].get(kind, 0) + 1
    else:
        stats["done"] += 1
        stats["boxes"] += len(result.boxes)


def finish(out: Path, total: int) -> dict | None:
    """Write manifest.json once every shard exists; returns it, or None while shards are missing.

    With a torch.distributed process group: barrier, then rank 0 writes. Without one: every process
    that finds all shards present writes (the same bytes, atomically), so the last rank to finish does."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        if dist.get_rank() == 0 and not mf.missing_shards(out, total):
            mf.write_manifest(out)
        dist.barrier()
        path = out / mf.MANIFEST_NAME
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if mf.missing_shards(out, total):
        return None
    return mf.write_manifest(out)
