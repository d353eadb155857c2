"""The table sweeps' runs read back (the reading part of the book's chapters, ``coarsecrop.studies.chapters``).

Two sources per sweep, each labelled with its preset:
- *this build*: runs/02_pretrain/<run id>/ made by ``coarsecrop sweep ... --preset P`` (``make book``
  runs the table sweeps at its preset, quick by default);
- *reference*: results/<preset>/02_pretrain/<run id>/ (metrics.json and run.json only), the committed
  results of a longer sweep (REFERENCE_PRESETS: cpu-full on scenes v3, gpu where committed, cpu-full-v1 on
  scenes v1), written by ``coarsecrop tables export`` (``export_results``).

A run belongs to a sweep when its id is one the sweep definition produces at that preset (the id hashes
every effective parameter), so a changed sweep or notebook default silently drops nothing: its old
results no longer match, and tests/test_tables.py says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from coarsecrop.io import read_yaml, write_atomic
from coarsecrop.params import project_root, run_id_of
from coarsecrop.runs.notebook import code_fingerprint, read_record, write_record
from coarsecrop.runs.sweep import plan_sweep
from coarsecrop.studies.pretrain import PretrainStudyParams

NOTEBOOK = "02_pretrain"
TRANSFER_NOTEBOOK, TRANSFER_SWEEP = "03_transfer", "transfer"
TRANSFER_SWEEPS = (TRANSFER_SWEEP, "transfer_finetune")  # mAP^l of every trunk; finetuned mAP / AP50 of Table 1
TABLE_SWEEPS = ("table1", "table2", "table10", "table11", "table12_13", "table14", "table15")
# The committed reference results the chapters show, in this order, each where results/<preset>/ exists: cpu-full,
# the remake on scenes v3 (issue 13); gpu, the same tables on one GPU at params/gpu/'s scale (none committed
# yet); cpu-full-v1, the first reference results, made on the v1 scenes where colour names the class.
REFERENCE_PRESETS = ("cpu-full", "gpu", "cpu-full-v1")
# What the chapters show, from a run's metrics.json (dotted paths).
MEASURES = {"linear": "metrics.probe_linear_top1", "knn": "metrics.probe_knn_top1",
            "gain_linear": "metrics.gain_bn_linear_top1", "gain_knn": "metrics.gain_bn_knn_top1",
            # the same trunk before training (random weights, BN statistics as initialised) and the best reading
            # of the trainer's monitor during training (the final one is "linear" / "knn")
            "init_linear": "metrics.init_linear_top1", "init_knn": "metrics.init_knn_top1",
            "best_linear": "metrics.probe_best_linear_top1", "best_knn": "metrics.probe_best_knn_top1",
            "objectness": "crops.objectness", "poor": "crops.poor", "precise": "crops.precise",
            "crops_per_image": "crops.crops_per_image", "median_side": "crops.median_side",
            "steps": "metrics.steps", "train_wall_s": "metrics.train_wall_s"}


# From a transfer run's metrics.json: measure -> (task, metric), in % there, fractions here. Detection has a
# measure per engine (evaluate.ENGINE), so a table never mixes them: "AP50" is torchvision's Faster R-CNN at toy
# scale, "AP50_d2" detectron2's (the task "detectron2", e.g. a GPU machine's transfer sweep), shown where present.
TRANSFER_MEASURES = {"mAP_l": ("linear", "mAP_l"), "mAP": ("multilabel", "mAP"), "AP50": ("detection", "AP50_bbox"),
                     "AP50_d2": ("detectron2", "AP50_bbox")}


def _dig(obj: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def sweep_points(sweep: str, preset: str, root: Path | None = None) -> list[dict]:
    """The points of params/sweeps/<sweep>.yaml at ``preset``: [{"run_id", "params"(effective), "point",
    "sweep", "index" (its K for ``coarsecrop sweep --point K``)}]."""
    root = Path(root or project_root()).resolve()
    plan = plan_sweep(root / "params" / "sweeps" / f"{sweep}.yaml", root, preset)
    return [{"run_id": p["run_dir"].name, "params": p["task"]["record"]["parameters"], "point": p["point"],
             "sweep": sweep, "index": k} for k, p in enumerate(plan["points"])]


def results_dir(preset: str, root: Path | None = None, notebook: str = NOTEBOOK) -> Path:
    return Path(root or project_root()) / "results" / preset / notebook


def committed_presets(presets, root: Path | None = None) -> list[str]:
    """Those of ``presets`` with committed results (a results/<preset>/ folder), in their order: a reference
    preset whose sweeps have not been run yet (gpu, until a GPU session commits it) is left out, not shown
    as an empty source."""
    return [preset for preset in presets if results_dir(preset, root).parent.is_dir()]


def transfer_points(preset: str, root: Path | None = None) -> list[dict]:
    """The points of the transfer sweeps at ``preset`` (those of the project's TRANSFER_SWEEPS files)."""
    root = Path(root or project_root()).resolve()
    return [point for sweep in TRANSFER_SWEEPS if (root / "params" / "sweeps" / f"{sweep}.yaml").is_file()
            for point in sweep_points(sweep, preset, root)]


def collect_transfer(preset: str, source: str = "build", root: Path | None = None,
                     points: list[dict] | None = None) -> tuple[dict[str, dict], pd.DataFrame]:
    """The transfer sweeps' complete runs at ``preset``: {pretraining run id: {measure: value}} for the
    trunks, and a frame of the random-init runs (one row per seed and backbone, the measures of every
    transfer sweep merged). Values are fractions (mAP^l 0.64)."""
    root = Path(root or project_root()).resolve()
    base = root / "runs" / TRANSFER_NOTEBOOK if source == "build" else results_dir(preset, root, TRANSFER_NOTEBOOK)
    trunks, inits = {}, []
    for point in points if points is not None else transfer_points(preset, root):
        run = read_run(base / point["run_id"])
        if run is None:
            continue
        checkpoint = (point["params"].get("checkpoints") or {}).get("pretrained")
        row = "pretrained" if checkpoint else "random"
        values = {}
        for measure, (task, metric) in TRANSFER_MEASURES.items():
            value = _dig(run["metrics"], f"tasks.{task}.rows.{row}.summary.{metric}.mean")
            if value is not None:
                values[measure] = value / 100
        if checkpoint:  # runs/02_pretrain/<run id>/train/backbone.pt
            trunks.setdefault(Path(checkpoint).parts[2], {}).update(values)
        else:
            inits.append({"seed": point["params"]["first_seed"], "backbone": point["params"]["backbone"], **values})
    if not inits:
        return trunks, pd.DataFrame(columns=["seed", "backbone"])
    return trunks, pd.DataFrame(inits).groupby(["seed", "backbone"], as_index=False).first()


def read_run(folder: Path) -> dict | None:
    """metrics.json + run.json of a complete run, or None."""
    metrics = folder / "metrics.json"
    if not metrics.is_file() or read_record(folder).get("status") != "ok":
        return None
    return {"metrics": json.loads(metrics.read_text(encoding="utf-8")), "record": read_record(folder)}


def collect(sweep: str, preset: str, source: str = "build", root: Path | None = None,
            points: list[dict] | None = None, transfer: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per point of the sweep at ``preset`` that has a complete run: its parameters, the
    MEASURES, the TRANSFER_MEASURES of its transfer run where there is one, and provenance.
    source: "build" (runs/) or "reference" (results/<preset>/). points: the sweep's points when the
    caller has planned them already (``sweep_points``); transfer: ``collect_transfer``'s first value."""
    root = Path(root or project_root()).resolve()
    if transfer is None:
        transfer = collect_transfer(preset, source, root)[0]
    base = root / "runs" / NOTEBOOK if source == "build" else results_dir(preset, root)
    full = preset_epochs(preset, root)
    rows = []
    for point in points if points is not None else sweep_points(sweep, preset, root):
        run = read_run(base / point["run_id"])
        if run is None:
            continue
        m, p = run["metrics"], point["params"]
        prov = m.get("provenance") or {}
        row = {"run_id": point["run_id"], "strategy": p["strategy"], "method": p["method"], "seed": p["seed"],
               "n": p["n"], "epochs": p["epochs"], "phi": p.get("phi", "random"),
               # phi of the pretraining trunk's architecture (s6's, or s5's at the paper's presets), or another
               "phi_as_trunk": p.get("phi") == "ssl" or p.get("crop_backbone") == p.get("backbone"),
               "budget": ("full" if p["epochs"] == full else "half" if 2 * p["epochs"] == full
                          else f"{p['epochs']} epochs"),
               "multi_crop": int((p.get("method_params") or {}).get("local_views", 0)),
               "rrc": bool((p.get("method_params") or {}).get("random_resized_crop", True)),
               "preset": preset, "source": source, "commit": (prov.get("git_commit") or "")[:10],
               "code": run["record"].get("code", ""),
               "date": (run["record"].get("finished") or run["record"].get("started") or "")[:10]}
        row.update({k: _dig(m, path) for k, path in MEASURES.items()})
        row.update({k: transfer.get(point["run_id"], {}).get(k) for k in TRANSFER_MEASURES})
        rows.append(row)
    return pd.DataFrame(rows)


def preset_epochs(preset: str, root: Path | None = None) -> int | None:
    """The pretraining epochs of a preset (its params/<preset>/02_pretrain.yaml, else the notebook's)."""
    path = Path(root or project_root()) / "params" / preset / f"{NOTEBOOK}.yaml"
    values = read_yaml(path.read_text(encoding="utf-8"), path) if path.is_file() else {}
    return (values or {}).get("epochs", PretrainStudyParams().epochs)


def source_line(df: pd.DataFrame, points: list[dict], preset: str, source: str) -> str:
    """'preset quick (this build, runs/), built-in scenes v1: 28 of 28 runs complete; commit abc; date
    2026-11-26' for the runs ``df`` that ``collect`` found among the sweep's ``points``."""
    done, total = len(df), len({p["run_id"] for p in points})
    where = "this build, runs/" if source == "build" else f"committed, results/{preset}/"
    builtin = sorted({p["params"].get("scene_version", 1) for p in points if not p["params"].get("scenes")})
    if builtin:
        where += f"; built-in scenes {', '.join(f'v{v}' for v in builtin)}"
    commits = ", ".join(sorted(set(df["commit"]) - {""})) if len(df) else "–"
    dates = ", ".join(sorted(set(df["date"]) - {""})) if len(df) else "–"
    line = f"preset **{preset}** ({where}): {done} of {total} runs complete; commit {commits}; date {dates}"
    sweep = points[0].get("sweep") if points else None
    if source == "build" and not done and sweep:  # make book runs Table 1's sweep unless told more
        make = "make book" + ("" if preset == "quick" else f" PRESET={preset}")
        line += (f"; this build did not run this sweep: `coarsecrop sweep params/sweeps/{sweep}.yaml --preset "
                 f"{preset}` runs it, `{make} TABLES=all` every table's")
    if source == "reference" and len(df):
        code = code_fingerprint(project_root() / "notebooks" / f"{NOTEBOOK}.py")
        older = int((df["code"] != code).sum())
        if older:
            line += (f"; {older} of {done} made by other code than this build's (a code fingerprint that differs: "
                     "their parameters give the same run ids, their numbers may not be what this code gives)")
    return line


def export_results(preset: str, source_root: Path, root: Path | None = None, sweeps=TABLE_SWEEPS) -> list[str]:
    """Copy metrics.json and run.json of every complete run of the table sweeps at ``preset``, and of the
    transfer sweep's runs on them, from source_root/runs/ to results/<preset>/ (small files: no
    checkpoints, no notebooks). Every committed run.json, copied now or before, then names the point that
    remakes it in the sweep files as they are now (``rerun_record``): a point added to a sweep moves the
    transfer sweep's indices, and a run committed earlier must follow. Returns the run ids copied."""
    root = Path(root or project_root()).resolve()
    copied = []
    plan = {}  # (notebook, run id) -> the point that remakes it (the last sweep that plans it)
    for sweep in sweeps:
        plan.update({(NOTEBOOK, point["run_id"]): point for point in sweep_points(sweep, preset, root)})
    plan.update({(TRANSFER_NOTEBOOK, point["run_id"]): point for point in transfer_points(preset, root)})
    for (notebook, rid), point in plan.items():
        src = Path(source_root) / "runs" / notebook / rid
        dst = results_dir(preset, root, notebook) / rid
        if read_run(src) is None:
            if (dst / "run.json").is_file():  # committed before: only where it is planned may have moved
                record, rerun = read_record(dst), rerun_record(point, preset)
                if {k: record.get(k) for k in rerun} != rerun:
                    write_record(dst, {**record, **rerun})
            continue
        dst.mkdir(parents=True, exist_ok=True)
        record = read_record(src)
        record.update(rerun_record(point, preset))
        if "finished" not in record:  # runs made before run.json recorded it
            record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                               time.localtime((src / "metrics.json").stat().st_mtime))
        write_atomic(dst / "metrics.json", lambda f: f.write((src / "metrics.json").read_bytes()))
        write_record(dst, record)
        copied.append(rid)
    return sorted(copied)


def rerun_record(point: dict, preset: str) -> dict:
    """What a committed run.json says to rerun its point from the repository alone: the sweep file of the
    repository that plans it, its index at ``preset`` and the command (the sweep that made the run, when
    another, stays as "made_by_sweep")."""
    sweep = f"params/sweeps/{point['sweep']}.yaml"
    return {"sweep": sweep, "point": point["index"],
            "rerun": f"coarsecrop sweep {sweep} --preset {preset} --point {point['index']}"}


def committed_run_ids(preset: str, root: Path | None = None, notebook: str = NOTEBOOK) -> list[str]:
    folder = results_dir(preset, root, notebook)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def recomputed_run_id(folder: Path) -> str:
    """The id the parameters recorded in a committed run hash to (must equal its folder name)."""
    params = read_record(folder)["parameters"]
    return run_id_of(params)
