"""The transfer study (notebooks/03_transfer.py, ``coarsecrop evaluate``): transfer tasks over seeds, with a
random-init row beside the checkpoint, into metrics.json; their tables and figures.

    record = evaluate("objects", checkpoint="runs/.../backbone.pt", backbone="resnet10_w16",
                      scenes="data/scenes", n_seeds=3, out="runs/eval")

Each task (``coarsecrop.evaluate.TASKS``) is a pair (prepare_data, run) from its module; ``params`` are split
between the two by their keyword names, and a name neither takes fails with the valid ones. A table has
one row per checkpoint (seeds vary the new layers and the data order) and a ``random`` row (a new random
trunk per seed, the paper's Table 5 baseline), each with every run's metrics and their mean / std over
seeds. Metrics are in percent, as the paper's tables.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import time
import typing
from dataclasses import dataclass, field
from typing import ClassVar
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from coarsecrop.data.synthetic import write_scenes
from coarsecrop.device import resolve_device
from coarsecrop.evaluate import ENGINE, HEADLINE, d2
from coarsecrop.evaluate import TASKS as TASK_MODULES
from coarsecrop.evaluate.checkpoints import infer_backbone, make_trunk
from coarsecrop.evaluate.data import open_split, require_disjoint, require_labels, require_same_classes, with_masks
from coarsecrop.evaluate.metrics import summarise
from coarsecrop.io import file_sha256, write_json
from coarsecrop.params import check_value, default_run_dir
from coarsecrop.runs.provenance import provenance


def _functions(module: str, prepare: str, run: str, fixed: dict) -> tuple:
    task = importlib.import_module(f"coarsecrop.evaluate.{module}")
    prepare_fn = getattr(task, prepare)
    return (partial(prepare_fn, **fixed) if fixed else prepare_fn), getattr(task, run)


# task -> (prepare_data(train, val, **p) or prepare_data(root, **p), run(trunk, data, seed, device, **p)), for
# every task of coarsecrop.evaluate.TASKS, loaded once (tasks sharing a prepare function share its data)
TASKS = {name: _functions(*where) for name, where in TASK_MODULES.items()}


def task_parameters(task: str) -> dict[str, dict[str, object]]:
    """{"prepare": {name: default}, "run": {name: default}}: what ``params`` may set for ``task``."""
    prepare, run = _task(task)
    fixed = {"train", "val", "root", "trunk", "data", "seed", "device", "masks"}

    def kw(fn) -> dict[str, object]:
        return {n: p.default for n, p in inspect.signature(fn).parameters.items() if n not in fixed}

    return {"prepare": kw(prepare), "run": kw(run)}


# the numbers a task takes that may be 0; every other one (epochs, sizes, batch, lr, iterations, ...) must be > 0
MAY_BE_ZERO = ("workers", "weight_decay", "warmup")


def split_params(task: str, params: dict) -> tuple[dict, dict]:
    """(prepare kwargs, run kwargs); ValueError naming an unknown key and the valid ones, a value that is not
    of the type the task's function declares for it (an int for a float is converted), or a number out of
    range (``MAY_BE_ZERO``)."""
    valid = task_parameters(task)
    names = sorted(set(valid["prepare"]) | set(valid["run"]))
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for task {task!r}; valid: {', '.join(names)}")
    hints = {k: v for fn in _task(task) for k, v in typing.get_type_hints(getattr(fn, "func", fn)).items()}
    checked = {}
    for key, value in params.items():
        try:
            checked[key] = check_value(value, hints[key]) if key in hints else value
        except TypeError as err:
            raise ValueError(f"parameter {key} = {value!r} for task {task!r}: {err}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                not (value >= 0 if key in MAY_BE_ZERO else value > 0):
            raise ValueError(f"parameter {key} = {value!r} for task {task!r} must be "
                             f"{'>= 0' if key in MAY_BE_ZERO else '> 0'}")
    return ({k: v for k, v in checked.items() if k in valid["prepare"]},
            {k: v for k, v in checked.items() if k in valid["run"]})


def prepare_task(task: str, scenes: str | Path, images: str | Path | None = None, train_split: str | None = "train",
                 val_split: str | None = "val", val_scenes: str | Path | None = None,
                 val_images: str | Path | None = None, **prepare_kw) -> object:
    """Read and decode the data ``task`` needs (labels checked first, with a clear error).

    Both splits come from ``scenes`` (COCO "split" keys, VOC ImageSets), or the val split from a second
    data set ``val_scenes`` (e.g. COCO's instances_val2017.json; a split of None takes every image)."""
    prepare, _ = _task(task)
    if task == "classify":
        return prepare(scenes, **prepare_kw)
    train = open_split(scenes, train_split, images)
    val = open_split(val_scenes, val_split, val_images) if val_scenes else open_split(scenes, val_split, images)
    require_labels(train, task, scenes)
    require_labels(val, task, val_scenes or scenes)
    require_same_classes(train, val, scenes, val_scenes or scenes)
    require_disjoint(train, val, scenes, val_scenes or scenes)
    train, val = with_masks(train, task, scenes), with_masks(val, task, val_scenes or scenes)
    return prepare(train, val, **prepare_kw)


def evaluate(task: str, checkpoint: str | Path | None = None, backbone: str | None = None,
             scenes: str | Path | None = None, images: str | Path | None = None, train_split: str | None = "train",
             val_split: str | None = "val", n_seeds: int = 1, random_init: bool = True, device: str = "auto",
             params: dict | None = None, out: str | Path | None = None,
             val_scenes: str | Path | None = None, val_images: str | Path | None = None) -> dict:
    """Run ``task`` for ``checkpoint`` (row "checkpoint") and a random init (row "random") over ``n_seeds``
    seeds; write ``out/metrics.json``. Returns the record written (see ``evaluate_rows``)."""
    rows = {"checkpoint": checkpoint} if checkpoint is not None else {}
    if random_init or checkpoint is None:
        rows["random"] = None
    record = evaluate_rows(task, rows, backbone, scenes, images, train_split, val_split, n_seeds, device,
                           params, val_scenes=val_scenes, val_images=val_images)
    if out is not None:
        write_json(Path(out) / "metrics.json", record)
    return record


def evaluate_rows(task: str, rows: dict[str, str | Path | None], backbone: str | None = None,
                  scenes: str | Path | None = None, images: str | Path | None = None,
                  train_split: str | None = "train", val_split: str | None = "val", n_seeds: int = 1,
                  device: str = "auto", params: dict | None = None, data: object = None,
                  val_scenes: str | Path | None = None, val_images: str | Path | None = None,
                  first_seed: int = 0) -> dict:
    """One table: ``rows`` maps a row label to a checkpoint (None = random init), each run ``n_seeds`` times
    (seeds first_seed, first_seed + 1, ...: a sweep gives each pretraining seed its own transfer seed).

    A row's architecture is ``backbone``, or read from its checkpoint; a random row without ``backbone``
    takes the first checkpoint's. ``data``: already prepared data for this task (the notebook shares it
    between tasks); else read from ``scenes``. Checkpoints are checked before any data is read.
    Returns {task, headline, rows: {label: {checkpoint, backbone, sha256, runs, summary}}, ...}."""
    t0 = time.perf_counter()
    _task(task)
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    if first_seed < 0:
        raise ValueError(f"first_seed must be >= 0, got {first_seed}")
    if not rows:
        raise ValueError("nothing to evaluate: give a checkpoint or ask for the random-init row")
    archs = {label: backbone or infer_backbone(ckpt) for label, ckpt in rows.items() if ckpt is not None}
    for label, ckpt in rows.items():
        if ckpt is None:
            archs[label] = backbone or next(iter(archs.values()), None)
            if archs[label] is None:
                raise ValueError("give a backbone for the random-init row (no checkpoint to read it from)")
        else:
            make_trunk(archs[label], ckpt)  # a wrong or unreadable checkpoint fails before any data work
    prepare_kw, run_kw = split_params(task, dict(params or {}))
    if data is None:
        if scenes is None:
            raise ValueError(f"task {task!r} needs a data set (--scenes)")
        data = prepare_task(task, scenes, images, train_split, val_split, val_scenes, val_images, **prepare_kw)
    dev = resolve_device(device)
    _, run = _task(task)
    out_rows = {}
    for label, ckpt in rows.items():
        runs = []
        for seed in range(first_seed, first_seed + n_seeds):
            trunk = make_trunk(archs[label], ckpt, seed=seed)
            runs.append({"seed": seed, **run(trunk, data, seed=seed, device=dev, **run_kw)})
        out_rows[label] = {"checkpoint": str(ckpt) if ckpt is not None else None, "backbone": archs[label],
                           "sha256": file_sha256(ckpt) if ckpt is not None else None,
                           "runs": runs, "summary": summarise(runs)}
    return {
        "task": task, "headline": HEADLINE[task], "engine": ENGINE.get(task, "coarsecrop"), "rows": out_rows,
        "scenes": str(scenes) if scenes else None, "val_scenes": str(val_scenes) if val_scenes else None,
        "splits": [train_split, val_split], "n_seeds": n_seeds, "params": dict(params or {}),
        "provenance": provenance(dev, time.perf_counter() - t0),
    }


# Toy-scale settings for the built-in 128-px scenes and a 16-wide ResNet-10 with the small (stride-8) stem
# on a CPU: the notebook's defaults. Each task's run function has the paper-scale defaults (e.g.
# detection: 800-px images, 512 RoIs per image, 2000 / 1000 proposals).
_TOY_DETECTION = {"head": "c4", "iterations": 100, "batch_size": 8, "base_lr": 0.16, "warmup": 20,
                  "min_size": 128, "max_size": 128, "anchor_sizes": [16, 32, 64, 96, 128],
                  "rois_per_image": 32, "proposals_train": 200, "proposals_test": 100}
DEFAULT_TASK_PARAMS: dict[str, dict] = {
    "objects": {"crop_size": 32},
    "linear": {"image_size": 64},
    "multilabel": {"image_size": 64, "epochs": 15, "batch_size": 32, "lr": 0.05},
    "detection": dict(_TOY_DETECTION),
    "instance": dict(_TOY_DETECTION),
    "semantic": {"image_size": 64, "epochs": 10, "batch_size": 16, "lr": 0.02},
}


@dataclass
class TransferParams:
    """The parameters of notebooks/03_transfer.py (its ``parameters`` cell mirrors these defaults)."""

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASK_PARAMS))
    checkpoints: dict[str, str] = field(default_factory=dict)  # row label -> checkpoint file or run folder
    random_init: bool = True  # the random-init row
    backbone: str | None = "resnet10_w16_cifar"  # None: read from each checkpoint
    scenes: str | None = None  # None: built-in synthetic scenes generated into the run folder
    images: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    num_images: int = 200
    scene_size: int = 128
    scene_seed: int = 0
    scene_version: int = 1  # the built-in scenes' generator (1, 2 or 3; coarsecrop.data.synthetic)
    n_seeds: int = 3
    first_seed: int = 0  # seeds first_seed .. first_seed + n_seeds - 1
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    task_params: dict[str, dict] = field(default_factory=lambda: copy.deepcopy(DEFAULT_TASK_PARAMS))
    classify_root: str | None = None  # an ImageFolder root (train/, val/) for the "classify" task
    out: str | None = None  # run folder; None = runs/03_transfer/<hash of the parameters>
    preset: str = ""

    MINIMUM: ClassVar[dict] = {"num_images": 1, "scene_size": 32, "n_seeds": 1, "first_seed": 0,
                               "threads": 0}  # checked by load_params


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint file, or the newest ``backbone.pt`` below a folder (e.g. runs/02_pretrain), not in a
    hidden folder (a sweep's runs/02_pretrain/.replaced/, the runs it made again)."""
    path = Path(spec)
    if path.is_dir():
        found = sorted((p for p in path.rglob("backbone.pt")
                        if not any(part.startswith(".") for part in p.relative_to(path).parts)),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise ValueError(f"{path}: no backbone.pt below this folder (run notebooks/02_pretrain.py or "
                             "`coarsecrop pretrain` first, or give a checkpoint file)")
        return found[-1]
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file does not exist")
    return path


def run_transfer(p: TransferParams, write: bool = True) -> dict:
    """Every task of ``p``, one table each (a row per checkpoint, plus random init), into the run folder.

    Returns {"tasks": {task: record}, "params", "run_dir", "scenes", "provenance"}; ``write`` puts it in
    run_dir/metrics.json (the notebook writes it itself, last, after its figures)."""
    t0 = time.perf_counter()
    if p.threads:
        torch.set_num_threads(p.threads)
    for task in list(p.tasks) + list(p.task_params):  # fail on a typo before any work
        _task(task)
        split_params(task, p.task_params.get(task, {}))
    if "detectron2" in p.tasks and not d2.available():
        raise ImportError(d2.INSTALL_HINT)
    rows: dict[str, str | Path | None] = {label: resolve_checkpoint(spec) for label, spec in p.checkpoints.items()}
    if p.random_init or not rows:
        rows["random"] = None
    run_dir = Path(p.out) if p.out else default_run_dir("03_transfer", p)
    run_dir.mkdir(parents=True, exist_ok=True)
    scenes = p.scenes
    if scenes is None:
        if not (run_dir / "scenes" / "annotations.json").is_file():
            write_scenes(run_dir / "scenes", num_images=p.num_images, seed=p.scene_seed, size=p.scene_size,
                         progress=False, version=p.scene_version)
        scenes = str(run_dir / "scenes")
    records, prepared = {}, {}
    for task in p.tasks:
        source = p.classify_root if task == "classify" else scenes
        if source is None:
            raise ValueError("task 'classify' needs classify_root (an ImageFolder with train/ and val/)")
        params = p.task_params.get(task, {})
        prepare_kw, _ = split_params(task, params)
        key = (id(TASKS[task][0]), source, repr(sorted(prepare_kw.items())))  # linear and multilabel share data
        if key not in prepared:
            prepared[key] = prepare_task(task, source, p.images, p.train_split, p.val_split, **prepare_kw)
        records[task] = evaluate_rows(task, rows, p.backbone, source, p.images, p.train_split, p.val_split,
                                      p.n_seeds, p.device, params, data=prepared[key], first_seed=p.first_seed)
    result = {"notebook": "03_transfer", "tasks": records, "params": dataclasses.asdict(p),
              "run_dir": str(run_dir), "scenes": scenes,
              "provenance": provenance(resolve_device(p.device), time.perf_counter() - t0)}
    if write:
        write_json(run_dir / "metrics.json", result)
    return result


def _task(task: str):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    return TASKS[task]


# ---------------------------------------------------------------- tables and figures

def headline_table(records: dict) -> pd.DataFrame:
    """One line per (task, row): the headline metric's mean and std over seeds, and n."""
    out = []
    for task, rec in records.items():
        for label, row in rec["rows"].items():
            s = row["summary"].get(rec["headline"], {})
            out.append({"task": task, "metric": rec["headline"], "row": label, "mean": s.get("mean"),
                        "std": s.get("std"), "n": s.get("n")})
    return pd.DataFrame(out)


def runs_table(records: dict, task: str) -> pd.DataFrame:
    """Every run of one task: a line per (row, seed), its scalar metrics as columns."""
    rec = records[task]
    lines = [{"row": label, **{k: v for k, v in run.items() if not isinstance(v, (dict, list))}}
             for label, row in rec["rows"].items() for run in row["runs"]]
    return pd.DataFrame(lines).set_index(["row", "seed"])


def plot_headlines(records: dict) -> plt.Figure:
    """One panel per task: the headline metric per row (checkpoints, random init), mean +- std over seeds,
    seeds as dots."""
    tasks = list(records)
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rec = records[task]
        labels = list(rec["rows"])
        for i, label in enumerate(labels):
            row = rec["rows"][label]
            summary = row["summary"].get(rec["headline"], {})
            values = [r[rec["headline"]] for r in row["runs"] if r.get(rec["headline"]) is not None]
            ax.bar(i, summary.get("mean", 0) or 0, yerr=summary.get("std", 0) or 0, capsize=3,
                   color="0.75" if label == "random" else "tab:blue")
            ax.plot([i] * len(values), values, "k.", ms=4)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(f"{task}: {rec['headline']}", fontsize=9)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig
