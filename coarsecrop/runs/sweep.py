"""Sweeps: run one experiment notebook over a grid of parameters, ``coarsecrop sweep params/sweeps/NAME.yaml``.

A sweep file (YAML) names a notebook, an optional base preset, a grid and optional fixed values:

    notebook: 01_crops
    preset: smoke                  # optional: params/smoke/01_crops.yaml is the base
    grid: {n: [1, 3, 5], backbone: [resnet18]}
    fixed: {num_images: 4}         # optional
    # grid: {cases: [{method: byol, method_params: {}}, {method: moco_v2, method_params: {queue_size: 1024}}]}
    #   an axis whose values are several parameters that go together
    presets:                       # optional: grid entries added for one preset (seeds, epoch budgets)
      quick: {seed: [0]}
      cpu-full: {seed: [0, 1, 2], n: [3, 5]}  # an axis the grid has too: this preset's values replace it
      # extra_points: more points at this preset after the grid's (each entry a grid of its own), e.g. more
      # seeds for the rows a comparison needs: cpu-full: {..., extra_points: [{seed: [3, 4], n: [3]}]}

A transfer sweep (notebook 03_transfer) may take its checkpoints from pretraining sweeps instead of a grid:

    notebook: 03_transfer
    checkpoints_of: [table1, table2]   # every run of these 02_pretrain sweeps, at the same preset
    fixed: {tasks: [linear], n_seeds: 1}

gives one transfer point per pretraining run (its trunk, its backbone, its seed as the first transfer
seed, and the very scene set it was pretrained on) and one random-init point per scene set, backbone and
seed; see ``checkpoint_cases``. ``--of table1`` (``plan_sweep(of=...)``) plans it on some of those sweeps
only, e.g. the ones a build ran (``make book`` runs Table 1's), with the same run ids.

``coarsecrop sweep FILE --preset NAME`` runs the same grid on another preset (params/NAME/<notebook>.yaml):
the tables of the book are one set of sweep files run at the ``quick`` or the ``cpu-full`` preset.

Each grid point's effective parameters = the notebook's ``parameters`` cell, updated by the preset, the
fixed values and the point. The run id is ``coarsecrop.params.run_id_of`` of them, as for the book's own
runs, so a point shared with another sweep (or with the book's run) is computed once: runs/<notebook>/<run id>/.
Each run executes through ``coarsecrop.runs.notebook.execute``.
A complete run made by the same code is skipped; a failed one is recorded (run.json status "failed",
FAILED.txt with the traceback) and the others still run; an unfinished or failed run of the same code is
continued in its folder next time (the notebooks resume their crop job and trainer); a complete run of other
code (stale) is made again and the old one kept in runs/<notebook>/.replaced/<run id>/. The summary, one row
per point, is runs/<notebook>/sweep-<NAME>.csv. Before anything runs, every data set the points read
must exist (``missing_inputs``); ``plan_table`` is the dry run, and ``run_sweep(only=[k])`` runs one point
(a Slurm array task).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import sys
from multiprocessing.connection import wait
from pathlib import Path

import pandas as pd
from tqdm import tqdm  # the text bar: tqdm.auto warns in every kernel without ipywidgets (not a dependency)

from coarsecrop.data.synthetic import shared_scenes_name
from coarsecrop.io import file_sha256, write_atomic
from coarsecrop.params import NOT_HASHED, project_root
from coarsecrop.train.children import stop_with_parent
from coarsecrop.runs.notebook import (REPLACED, code_fingerprint, execute, is_complete, notebook_defaults,
                                      notebook_task, read_preset, read_record, runner_notebook, write_record,
                                      yaml_mapping)

SWEEP_KEYS = ("notebook", "preset", "grid", "fixed", "presets", "checkpoints_of")
EXTRA = "extra_points"  # a preset's points beyond its grid: a list of grids, planned after the grid's points
PRETRAIN, TRANSFER = "02_pretrain", "03_transfer"  # checkpoints_of: the notebook that makes them, that reads them
CASES = "cases"  # a grid axis whose values are mappings of several parameters
# Parameters that name files or folders a run reads (relative paths: from the project root, the kernel's cwd).
INPUT_PATHS = ("scenes", "images", "manifest", "crop_checkpoint", "classify_root")


# ---------------------------------------------------------------- the sweep file


def read_sweep(sweep_file: Path) -> dict:
    """The sweep file as a dict with keys notebook, preset (or None), grid (dict of lists), fixed (dict)."""
    spec = yaml_mapping(sweep_file, f"no sweep file {sweep_file}",
                        f"a sweep file must be a YAML mapping with keys {', '.join(SWEEP_KEYS)}", SWEEP_KEYS,
                        ("key(s)", "a sweep file has"))
    if not isinstance(spec.get("notebook"), str):
        raise ValueError(f"{sweep_file}: 'notebook' must name a notebook, e.g. notebook: 01_crops")
    grid, fixed = spec.get("grid") or {}, spec.get("fixed") or {}
    if not isinstance(grid, dict) or not isinstance(fixed, dict):
        raise ValueError(f"{sweep_file}: 'grid' and 'fixed' must be mappings of parameter: value(s)")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{sweep_file}: grid value of {key!r} must be a non-empty list, e.g. {key}: "
                             f"[{values!r}]")
    both = sorted(set(grid_keys(sweep_file, grid)) & set(fixed))
    if both:
        raise ValueError(f"{sweep_file}: {', '.join(both)} both in grid and fixed; keep each in one")
    presets = spec.get("presets") or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ValueError(f"{sweep_file}: 'presets' must map a preset name to grid entries, e.g. "
                         "presets: {quick: {seed: [0]}}")
    for preset, extra in presets.items():
        for key, values in extra.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{sweep_file}: presets.{preset}.{key} must be a non-empty list")
        for k, more in enumerate(extra.get(EXTRA, [])):
            if not isinstance(more, dict) or not more or not all(isinstance(v, list) and v for v in more.values()):
                raise ValueError(f"{sweep_file}: presets.{preset}.{EXTRA}[{k}] must be a grid (a mapping of "
                                 "parameter: non-empty list), e.g. - {seed: [3, 4], strategy: [gt]}")
        for where, keys in [("", grid_keys(sweep_file, preset_grid(grid, extra)))] + [
                (f".{EXTRA}[{k}]", grid_keys(sweep_file, more)) for k, more in enumerate(extra.get(EXTRA, []))]:
            clash = sorted(set(keys) & set(fixed))
            if clash:
                raise ValueError(f"{sweep_file}: presets.{preset}{where} sets {', '.join(clash)}, which 'fixed' sets "
                                 "too; keep each in one")
    of = spec.get("checkpoints_of") or []
    if not isinstance(of, list) or not all(isinstance(name, str) for name in of):
        raise ValueError(f"{sweep_file}: 'checkpoints_of' must list pretraining sweeps, e.g. checkpoints_of: [table1]")
    if of and spec["notebook"] != TRANSFER:
        raise ValueError(f"{sweep_file}: 'checkpoints_of' feeds {TRANSFER}; this sweep runs {spec['notebook']!r}")
    if of and (CASES in grid or any(CASES in extra or EXTRA in extra for extra in presets.values())):
        raise ValueError(f"{sweep_file}: 'checkpoints_of' makes the grid's cases; leave 'cases' out of the grid "
                         f"and 'cases' and '{EXTRA}' out of every preset's entry")
    return {"notebook": spec["notebook"], "preset": spec.get("preset"), "grid": grid, "fixed": fixed,
            "presets": presets, "checkpoints_of": of}


def expand_grid(grid: dict) -> list[dict]:
    """Cartesian product of the grid, keys in file order, the last key varying fastest; {} -> [{}].
    The key ``cases`` holds a list of mappings, each several parameters that go together (a method and
    its hyperparameters; a table row's settings): each case is one value of that axis, merged into the point."""
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = {}
        for key, value in zip(keys, values):
            point.update(value if key == CASES else {key: value})
        points.append(point)
    return points


def preset_grid(grid: dict, extra: dict) -> dict:
    """The grid at one preset: the preset's new entries (seeds, budgets) first, so they vary slowest (a partly
    run sweep has every point at seed 0 first); an entry the grid has too (``cases``, ``strategy``) replaces
    the grid's values in the grid's place, so the other presets' points and their order stay as they are.
    The preset's EXTRA points are not part of it (``preset_points``)."""
    return {**{k: v for k, v in extra.items() if k not in grid and k != EXTRA},
            **{k: extra.get(k, v) for k, v in grid.items()}}


def preset_points(sweep_file: Path, grid: dict, extra: dict) -> list[dict]:
    """Every point at one preset: those of ``grid`` (the grid at the preset, ``preset_grid``), then those of
    each of the preset's EXTRA grids in turn, so a point's index (``--point K``, a committed run.json's
    "point") does not move when extra points are added. An extra point equal to an earlier one is refused
    (it would be the same run twice)."""
    points = expand_grid(grid)
    for k, more in enumerate(extra.get(EXTRA, [])):
        for point in expand_grid(more):
            if point in points:
                raise ValueError(f"{sweep_file}: {EXTRA}[{k}] repeats the point {point}, which the sweep has "
                                 f"already (point {points.index(point)}); leave it out")
            points.append(point)
    return points


def grid_keys(sweep_file: Path, grid: dict) -> list[str]:
    """Every parameter the grid sets (the keys of its cases too)."""
    axes = [k for k in grid if k != CASES]
    keys = list(axes)
    for case in grid.get(CASES, []):
        if not isinstance(case, dict) or not case:
            raise ValueError(f"{sweep_file}: each entry of 'cases' must be a mapping of parameters, e.g. "
                             "- {method: byol, method_params: {}}")
        clash = sorted(set(case) & set(axes))
        if clash:
            raise ValueError(f"{sweep_file}: {', '.join(clash)} both in a case and in the grid; keep each in one")
        keys += [k for k in case if k not in keys]
    return keys


def check_keys(sweep_file: Path, keys, defaults: dict) -> None:
    """Every swept / fixed key must be a parameter of the notebook (and not one that says where a run goes)."""
    unknown = sorted(set(keys) - set(defaults))
    if unknown:
        raise ValueError(f"{sweep_file}: unknown parameter(s) {', '.join(unknown)}; the notebook's parameters "
                         f"cell has: {', '.join(sorted(defaults))}")
    placed = sorted(set(keys) & set(NOT_HASHED))
    if placed:
        raise ValueError(f"{sweep_file}: {', '.join(placed)} is set by the sweep runner (the run folder and the "
                         "sweep file); leave it out of grid and fixed")


def checkpoint_cases(sweep_file: Path, names: list[str], root: Path, preset: str | None, base: dict) -> list[dict]:
    """The ``checkpoints_of`` axis of a transfer sweep: for every run of the pretraining sweeps ``names`` at
    ``preset`` (each shared run once), a transfer point on its trunk (runs/02_pretrain/<id>/train/backbone.pt)
    with that run's backbone and its seed as ``first_seed``; and, before them, one random-init point per
    scene set, backbone and seed. A run on the built-in scenes is evaluated on the very set it was pretrained on (its
    train split -> val split, as the paper pretrains and finetunes on VOC trainval and tests on test); a run
    on a real data set is evaluated on the data set of the transfer preset (``base``), which must name one."""
    cases, inits, seen = [], {}, set()
    for name in names:
        other = root / "params" / "sweeps" / f"{name}.yaml"
        if not other.is_file():
            raise FileNotFoundError(f"{sweep_file}: checkpoints_of names {name!r}, but {other} does not exist")
        plan = plan_sweep(other, root, preset)
        if plan["notebook"] != PRETRAIN:
            raise ValueError(f"{sweep_file}: checkpoints_of names {name!r}, a sweep of {plan['notebook']!r}; "
                             f"it must be a sweep of {PRETRAIN}")
        for p in plan["points"]:
            rid = p["run_dir"].name
            if rid in seen:
                continue
            seen.add(rid)
            q = p["task"]["record"]["parameters"]
            folder = p["run_dir"].relative_to(root)  # runs/02_pretrain/<id>; its scenes sit beside it
            if q["scenes"] is None:
                data = {"scenes": (folder.parent / "_scenes" /
                                   shared_scenes_name(q["num_images"], q["scene_size"], q["scene_seed"],
                                                      q.get("scene_version", 1))).as_posix(),
                        "images": None, "train_split": "train", "val_split": "val"}
            elif base.get("scenes"):
                data = {}
            else:
                raise ValueError(f"{sweep_file}: the {preset} runs of {name} pretrain on {q['scenes']}; say which "
                                 f"data set evaluates them in params/{preset}/{TRANSFER}.yaml (scenes, images, "
                                 "train_split, val_split)")
            common = {"backbone": q["backbone"], "first_seed": q["seed"], **data}
            cases.append({"checkpoints": {"pretrained": (folder / "train" / "backbone.pt").as_posix()},
                          "random_init": False, **common, "_requires": (name, rid)})
            init = {"checkpoints": {}, "random_init": True, **common}
            # one per scene set, backbone and seed; built-in scenes come with the first run that has them
            needs = (name, rid) if q["scenes"] is None else None
            inits.setdefault(json.dumps(init, sort_keys=True), {**init, "_requires": needs})
    return [*inits.values(), *cases]  # the baselines first: a partly run sweep has them


# ---------------------------------------------------------------- one run


def missing_pretraining(task: dict) -> str:
    """For a checkpoints_of point whose pretraining run is not complete: what to run first; else "". A
    random-init point on built-in scenes needs only the scene set, which any run on it writes (a sweep
    run in part, e.g. only its MoCo-v2 rows, still gets its baselines)."""
    if not task.get("requires"):
        return ""
    sweep, rid = task["requires"]
    preset = task["record"]["preset"]
    if "pretrained" not in task["inject"]["checkpoints"]:
        scenes = Path(task["root"]) / task["inject"]["scenes"]
        if (scenes / "annotations.json").is_file():
            return ""
        return (f"the scenes {scenes} are not written yet; any run of `coarsecrop sweep params/sweeps/{sweep}.yaml"
                f"{f' --preset {preset}' if preset else ''}` on them writes them")
    run_dir = Path(task["root"]) / "runs" / PRETRAIN / rid
    if read_record(run_dir).get("status") == "ok" and (run_dir / "train" / "backbone.pt").is_file():
        return ""
    return (f"pretraining run {run_dir} is not complete; run `coarsecrop sweep params/sweeps/{sweep}.yaml"
            f"{f' --preset {preset}' if preset else ''}` first")


def stale_checkpoint(task: dict) -> bool:
    """A complete checkpoints_of run whose pretraining trunk has changed since (that run was made again):
    the checkpoint's sha256 recorded in its metrics.json differs from the file's now."""
    if not task.get("requires") or "pretrained" not in task["inject"]["checkpoints"]:
        return False

    checkpoint = Path(task["root"]) / task["inject"]["checkpoints"]["pretrained"]
    try:
        metrics = json.loads((Path(task["run_dir"]) / "metrics.json").read_text(encoding="utf-8"))
        said = {rec["rows"]["pretrained"]["sha256"] for rec in metrics["tasks"].values()}
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return not checkpoint.is_file() or said != {file_sha256(checkpoint)}


def execute_point(task: dict) -> dict:
    """Execute one point (``coarsecrop.runs.notebook.execute``): an unfinished or failed run of the same code
    and parameters is continued in place unless ``task["resume"]`` is False (``--force``); a checkpoints_of
    point whose pretraining run is not complete is recorded as failed, saying what to run first. Never
    raises for a failing notebook: returns {"status", "wall_time_s", "error"}. A point another sweep completed
    since this one planned it (two sweeps sharing a row) is reused, checked under the run's lock."""
    resume = task.get("resume", True)
    point = {"run_dir": Path(task["run_dir"]), "task": task}
    return execute(task, resume=resume, blocked=missing_pretraining(task),
                   done_meanwhile=(lambda: point_state(point, task["record"]["code"]) == "complete") if resume else None)


# ---------------------------------------------------------------- the summary table


def flatten(obj: dict, prefix: str = "") -> dict:
    """Nested dicts -> {"a.b.c": scalar}; lists and other non-scalars are left out."""
    flat = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
    return flat


def summary_row(point: dict, run_dir: Path, root: Path, reused: bool) -> dict:
    """One CSV row: run id, status, wall time, the swept values (lists as JSON) and metrics.json's scalars."""
    record = read_record(run_dir)
    row = {"run_id": run_dir.name, "status": record.get("status", "missing"), "reused": reused,
           "wall_time_s": record.get("wall_time_s"), "error": record.get("error", ""),
           "run_dir": run_dir.relative_to(root).as_posix()}
    row.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in point.items()})
    metrics_path = run_dir / "metrics.json"
    if row["status"] == "ok" and metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        row.update({k: v for k, v in flatten(metrics).items() if k not in row})
    return row


# ---------------------------------------------------------------- before anything runs


def missing_inputs(plan: dict, root: Path) -> list[str]:
    """What the points read that is not there: one line per missing path (data sets above all), naming the
    parameter, the path, and the file that sets it. What a checkpoints_of point takes from its pretraining
    run (the trunk; the built-in scenes that run wrote) is not checked here: ``missing_pretraining`` records
    a point whose pretraining run is missing, as failed, when the point's turn comes."""
    lines = {}
    for p in plan["points"]:
        params = p["task"]["record"]["parameters"]
        for key in INPUT_PATHS:
            value = params.get(key)
            if not isinstance(value, str) or not value or value in lines:
                continue
            if p["task"]["requires"] and key in p["point"]:
                continue
            path = Path(value) if Path(value).is_absolute() else root / value
            if not path.exists():
                where = (f"params/{plan['preset']}/{plan['notebook']}.yaml" if key in plan["base"]
                         else f"the sweep file (or the parameters cell of notebooks/{plan['notebook']}.py)")
                lines[value] = f"{key}: {value} does not exist (set in {where})"
    return list(lines.values())


def point_state(p: dict, code: str) -> str:
    """What running the sweep does with this point (``run_sweep`` reuses exactly the complete ones):
    complete, stale (made again: other code, or its trunk has changed), failed or unfinished (a crash or a
    run in progress: run again), waiting (its pretraining run is not complete) or new."""
    run_dir = p["run_dir"]
    complete = is_complete(run_dir, code)
    if complete and not stale_checkpoint(p["task"]):
        return "complete"
    if missing_pretraining(p["task"]):
        return "waiting"
    if complete:
        return "stale"
    status = read_record(run_dir).get("status")
    return {"ok": "stale", "failed": "failed", "running": "unfinished"}.get(status, "new")


def plan_table(plan: dict):
    """The dry run: one row per point (indexed by its number, for ``only``) with its run id, state
    (``point_state``) and swept values."""
    rows = [{"run_id": p["run_dir"].name, "state": point_state(p, plan["code"]),
             **{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in p["point"].items()}}
            for p in plan["points"]]
    return pd.DataFrame(rows).rename_axis("point")


# ---------------------------------------------------------------- the sweep


def sweep_root(sweep_file: Path, root=None) -> Path:
    """The project root a sweep runs in: ``root``, else the folder above the sweep file holding pyproject.toml."""
    return Path(root).resolve() if root else project_root(Path(sweep_file).resolve().parent)


def plan_sweep(sweep_file: Path, root: Path, preset: str | None = None, of: list[str] | None = None) -> dict:
    """Read and check the sweep, convert the notebook and work out every point's run (nothing runs).
    ``preset`` replaces the sweep file's preset (and selects its ``presets`` grid entries). ``of``: a transfer
    sweep planned on the trunks of these of its ``checkpoints_of`` sweeps only (and the random-init points
    their scenes need), e.g. the tables a build ran; the points keep the run ids the whole sweep gives them."""
    spec = read_sweep(sweep_file)
    if preset:
        spec["preset"] = preset
    if of:
        unknown = [name for name in of if name not in spec["checkpoints_of"]]
        if unknown:
            raise ValueError(f"{sweep_file}: --of {', '.join(unknown)}: not among its checkpoints_of "
                             f"({', '.join(spec['checkpoints_of']) or 'none: it is not a transfer sweep'})")
        spec["checkpoints_of"] = [name for name in spec["checkpoints_of"] if name in of]
    at_preset = spec["presets"].get(spec["preset"], {})
    spec["grid"] = preset_grid(spec["grid"], at_preset)
    name = spec["notebook"]
    source = root / "notebooks" / f"{name}.py"
    if not source.is_file():
        outside = "" if (root / "pyproject.toml").is_file() else (
            f"; {root} is no project root (no pyproject.toml): a sweep runs in the project above its file, so keep "
            "it in the project's params/sweeps/")
        raise FileNotFoundError(f"{sweep_file}: notebook {name!r} not found ({source} does not exist){outside}")
    ipynb = runner_notebook(root, name)
    defaults = notebook_defaults(ipynb)
    check_keys(sweep_file, [*grid_keys(sweep_file, spec["grid"]), *spec["fixed"],
                            *(k for more in at_preset.get(EXTRA, []) for k in grid_keys(sweep_file, more))], defaults)
    base = {}
    if spec["preset"]:
        base = read_preset(root / "params" / spec["preset"] / f"{name}.yaml", defaults)
    if spec["checkpoints_of"]:
        derived = checkpoint_cases(sweep_file, spec["checkpoints_of"], root, spec["preset"], base)
        keys = {k for case in derived for k in case if k != "_requires"}
        clash = sorted(keys & (set(spec["grid"]) | set(spec["fixed"])))
        if clash:
            raise ValueError(f"{sweep_file}: checkpoints_of sets {', '.join(clash)}; leave them out of grid and fixed")
        spec["grid"] = {CASES: derived, **spec["grid"]}
    code = code_fingerprint(source)
    try:
        label = sweep_file.resolve().relative_to(root).as_posix()
    except ValueError:
        label = str(sweep_file.resolve())
    points = []
    for point in preset_points(sweep_file, spec["grid"], at_preset):
        requires = point.pop("_requires", None)  # (pretraining sweep, run id) a checkpoints_of point reads
        values = {**base, **spec["fixed"], **point}  # what is injected, besides out and preset
        task = notebook_task(root, name, values, spec["preset"], label, ipynb=ipynb, defaults=defaults, code=code,
                             sweep=label, requires=requires)
        points.append({"point": point, "run_dir": Path(task["run_dir"]), "task": task})
    return {"notebook": name, "name": sweep_file.stem, "preset": spec["preset"], "code": code, "points": points,
            "base": base}


def _worker(task: dict, parent: int) -> None:
    """One point in a process of its own (``--jobs`` > 1): it stops when the sweep dies (its kernel follows
    it, and the trainer below saves its checkpoint: coarsecrop.train.children). The run folder's record is
    its result."""
    stop_with_parent(parent)
    execute_point(task)


def run_in_workers(todo: dict, jobs: int, done) -> None:
    """Run ``todo`` ({run id: task}) in at most ``jobs`` worker processes at once, each a fresh interpreter
    (spawn: no forked threads) for one point; ``done(rid)`` after each. A worker that dies without recording
    its end (killed, out of memory) gets its run recorded as failed. Ctrl-C starts no more points and stops
    the running ones: each worker gets SIGTERM, its kernel and trainer follow (the trainer saves first), so
    the runs stay unfinished and the same command resumes them; the KeyboardInterrupt then goes on up."""
    context = multiprocessing.get_context("spawn")
    waiting, running = list(todo.items()), {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                rid, task = waiting.pop(0)
                running[rid] = context.Process(target=_worker, args=(task, os.getpid()), name=f"sweep-{rid}")
                running[rid].start()
            wait([proc.sentinel for proc in running.values()])
            for rid in [rid for rid, proc in running.items() if not proc.is_alive()]:
                proc = running.pop(rid)
                proc.join()
                if proc.exitcode != 0:
                    run_dir = Path(todo[rid]["run_dir"])
                    write_record(run_dir, {**read_record(run_dir), "status": "failed",
                                           "error": f"worker process died (exit code {proc.exitcode})"})
                done(rid)
    except KeyboardInterrupt:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.join(timeout=120)
        raise


def check_points(sweep_file, plan: dict, only: list[int] | None) -> None:
    """Raise ValueError naming every index in ``only`` that is not a point of ``plan`` (and the valid range)."""
    n = len(plan["points"])
    bad = sorted(set(only or []) - set(range(n)))
    if bad:
        raise ValueError(f"{sweep_file}: no point {', '.join(map(str, bad))}; this sweep has points 0 to {n - 1} "
                         "(--dry-run lists them)")


def point_seed(point: dict) -> int | None:
    """The seed a point runs at: 02_pretrain's ``seed``, or 03_transfer's ``first_seed`` (a transfer point
    evaluates a trunk of that seed)."""
    values = point["task"]["record"]["parameters"]
    return values.get("seed", values.get("first_seed"))


def select_points(sweep_file, plan: dict, only: list[int] | None = None, seeds: list[int] | None = None):
    """The point indices ``only`` and those of ``seeds`` (None: every point). Raises ValueError naming a bad
    index (and the valid range) or a seed no point has (and the sweep's seeds)."""
    check_points(sweep_file, plan, only)
    if not seeds:
        return only
    by_seed = {}
    for index, point in enumerate(plan["points"]):
        by_seed.setdefault(point_seed(point), []).append(index)
    bad = sorted(set(seeds) - set(by_seed))
    if bad:
        have = ", ".join(str(s) for s in sorted(s for s in by_seed if s is not None)) or "none"
        raise ValueError(f"{sweep_file}: no point at seed {', '.join(map(str, bad))} at preset {plan['preset']}; "
                         f"its seeds are {have} (--dry-run lists the points)")
    return sorted(set(only or []).union(*(by_seed[s] for s in seeds)))


def run_sweep(sweep_file, jobs: int = 1, force: bool = False, progress: bool = True, root=None,
              preset: str | None = None, only: list[int] | None = None, seeds: list[int] | None = None,
              of: list[str] | None = None):
    """Run every point of ``sweep_file`` not yet complete (all with ``force``, from scratch); returns the
    summary DataFrame, also written to runs/<notebook>/sweep-<name>.csv. ``jobs`` > 1: that many runs at
    once, each in a fresh worker process. ``root``: the project root (default: the folder above the sweep
    file holding pyproject.toml). ``only``: run just these points (indices in plan order, as the dry run
    lists them; one per Slurm array task); ``seeds``: and the points at these seeds (a sweep run a seed at a
    time); the summary still lists every point. ``of``: a transfer sweep on the trunks of these of its
    checkpoints_of sweeps only (``plan_sweep``). A failing point does not raise: its row says "failed"."""
    sweep_file = Path(sweep_file)
    root = sweep_root(sweep_file, root)
    plan = plan_sweep(sweep_file, root, preset, of)  # all checks happen here, before anything runs
    missing = missing_inputs(plan, root)
    if missing:
        raise FileNotFoundError(
            f"{sweep_file}: the runs read data that is not there (paths relative to {root}):\n  "
            + "\n  ".join(missing) + "\nPut the data set there (a symlink will do, e.g. ln -s /datasets/VOCdevkit "
            "data/VOCdevkit) or change the path in that file.")
    only = select_points(sweep_file, plan, only, seeds)
    todo, reused = {}, set()
    for index, p in enumerate(plan["points"]):
        rid = p["run_dir"].name
        if not force and point_state(p, plan["code"]) == "complete":
            reused.add(rid)
        elif only is None or index in only:
            todo.setdefault(rid, {**p["task"], "resume": not force})  # points with the same parameters run once
    chosen = [p for i, p in enumerate(plan["points"]) if only is None or i in only]
    stale = 0 if force else sum(1 for task in todo.values() if read_record(Path(task["run_dir"])).get("status") == "ok")
    if stale and progress:
        print(f"sweep {plan['name']}: {stale} finished run(s) of other code (or on a remade trunk) made again; each old "
              f"one is kept in runs/{plan['notebook']}/{REPLACED}/<run id>/ until its point is made again",
              file=sys.stderr, flush=True)
    bar = tqdm(total=len(chosen), desc=f"sweep {plan['name']}", unit="run", disable=not progress)
    bar.update(len(chosen) - sum(1 for p in chosen if p["run_dir"].name in todo))
    counts = {rid: sum(1 for p in chosen if p["run_dir"].name == rid) for rid in todo}
    if jobs <= 1:
        for rid, task in todo.items():
            execute_point(task)
            bar.update(counts[rid])
    else:
        run_in_workers(todo, jobs, lambda rid: bar.update(counts[rid]))
    bar.close()
    rows = [summary_row(p["point"], p["run_dir"], root, p["run_dir"].name in reused) for p in plan["points"]]
    table = pd.DataFrame(rows)
    suffix = f"-{plan['preset']}" if preset else ""
    out = root / "runs" / plan["notebook"] / f"sweep-{plan['name']}{suffix}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda f: table.to_csv(f, index=False), binary=False)
    table.attrs["csv"] = str(out)
    return table

