"""The book's tables: the runs of a table sweep (params/sweeps/tableN.yaml) read back, summarised over
seeds, set beside the paper's values, and the paper's claims checked against them.

Two sources per sweep, each labelled with its preset:
- *this build*: runs/02_pretrain/<run id>/ made by ``coarsecrop sweep ... --preset P`` (``make book``
  runs the table sweeps at its preset, quick by default);
- *reference*: results/<preset>/02_pretrain/<run id>/ (metrics.json and run.json only), the committed
  results of a longer sweep (cpu-full), written by ``python -m coarsecrop.tables export``.

A run belongs to a sweep when its id is one the sweep definition produces at that preset (the id hashes
every effective parameter), so a changed sweep or notebook default silently drops nothing: its old
results no longer match, and tests/test_results.py says so.

The accuracy measures: the object probe of notebooks/02_pretrain.py (frozen trunk, GT object crops of
the val split, linear and kNN top-1), beside the same probe on a random init with BN statistics of the
data; and, where the transfer sweep (params/sweeps/transfer.yaml) has run, mAP^l: the paper's linear
multi-label probe (notebooks/03_transfer.py, task "linear"), on each trunk's own scene set, beside a
random init. The paper's columns are detection AP and multi-label mAP / mAP^l on VOC / COCO. Only the
direction of a difference is compared with the paper, never the numbers.

    python -m coarsecrop.tables export --preset cpu-full [--from /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from coarsecrop.io import write_atomic, write_json, write_text
from coarsecrop.params import project_root, run_id_of
from coarsecrop.runs.notebook import read_record
from coarsecrop.runs.sweep import plan_sweep

NOTEBOOK = "02_pretrain"
TRANSFER_NOTEBOOK, TRANSFER_SWEEP = "03_transfer", "transfer"
TRANSFER_SWEEPS = (TRANSFER_SWEEP, "transfer_finetune")  # mAP^l of every trunk; finetuned mAP / AP50 of Table 1
TABLE_SWEEPS = ("table1", "table2", "table10", "table11", "table12_13", "table14", "table15")
REFERENCE_PRESET = "cpu-full"
# What the chapters show, from a run's metrics.json (dotted paths).
MEASURES = {"linear": "metrics.probe_linear_top1", "knn": "metrics.probe_knn_top1",
            "gain_linear": "metrics.gain_bn_linear_top1", "gain_knn": "metrics.gain_bn_knn_top1",
            "objectness": "crops.objectness", "poor": "crops.poor", "precise": "crops.precise",
            "crops_per_image": "crops.crops_per_image", "median_side": "crops.median_side",
            "steps": "metrics.steps", "train_wall_s": "metrics.train_wall_s"}
# From a transfer run's metrics.json: measure -> (task, metric), in % there, fractions here.
TRANSFER_MEASURES = {"mAP_l": ("linear", "mAP_l"), "mAP": ("multilabel", "mAP"), "AP50": ("detection", "AP50_bbox")}
LABELS = {"linear": "linear top-1", "knn": "kNN top-1", "gain_linear": "linear - init (BN)",
          "gain_knn": "kNN - init (BN)", "objectness": "objectness", "mAP_l": "mAP^l",
          "mAP": "mAP (finetuned)", "AP50": "AP50"}
MEASURE_NAMES = {"linear": "object probe, linear top-1", "knn": "object probe, kNN top-1",
                 "mAP_l": "mAP^l (linear multi-label probe)", "mAP": "mAP (finetuned multi-label)",
                 "AP50": "detection AP50"}
METHOD_NAMES = {"byol": "BYOL", "moco_v2": "MoCo-v2", "densecl": "DenseCL", "mae": "MAE"}


# ---------------------------------------------------------------- reading runs

def _dig(obj: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def sweep_points(sweep: str, preset: str, root: Path | None = None) -> list[dict]:
    """The points of params/sweeps/<sweep>.yaml at ``preset``: [{"run_id", "params"(effective), "point"}]."""
    root = Path(root or project_root()).resolve()
    plan = plan_sweep(root / "params" / "sweeps" / f"{sweep}.yaml", root, preset)
    return [{"run_id": p["run_dir"].name, "params": p["task"]["record"]["parameters"], "point": p["point"]}
            for p in plan["points"]]


def results_dir(preset: str, root: Path | None = None, notebook: str = NOTEBOOK) -> Path:
    return Path(root or project_root()) / "results" / preset / notebook


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
               "budget": ("full" if p["epochs"] == full else "half" if 2 * p["epochs"] == full
                          else f"{p['epochs']} epochs"),
               "multi_crop": int((p.get("method_params") or {}).get("local_views", 0)),
               "rrc": bool((p.get("method_params") or {}).get("random_resized_crop", True)),
               "preset": preset, "source": source, "commit": (prov.get("git_commit") or "")[:10],
               "date": (run["record"].get("finished") or run["record"].get("started") or "")[:10]}
        row.update({k: _dig(m, path) for k, path in MEASURES.items()})
        row.update({k: transfer.get(point["run_id"], {}).get(k) for k in TRANSFER_MEASURES})
        rows.append(row)
    return pd.DataFrame(rows)


def preset_epochs(preset: str, root: Path | None = None) -> int | None:
    """The pretraining epochs of a preset (its params/<preset>/02_pretrain.yaml, else the notebook's)."""
    import yaml

    from coarsecrop.train.study import PretrainStudyParams

    path = Path(root or project_root()) / "params" / preset / f"{NOTEBOOK}.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return (values or {}).get("epochs", PretrainStudyParams().epochs)


# ---------------------------------------------------------------- rows, summaries, the paper

@dataclass(frozen=True)
class Row:
    """A table row: its label, the parameter values that select its runs, and the paper's key for it."""

    label: str
    where: dict
    paper: dict | None = None  # e.g. {"method": "BYOL", "crops": "ours"} in the paper's table

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        if df.empty:
            return df
        mask = pd.Series(True, index=df.index)
        for key, value in self.where.items():
            mask &= df[key] == value
        return df[mask]


def summarise(df: pd.DataFrame, rows: list[Row],
              measures=("linear", "knn", "gain_linear", "objectness", *TRANSFER_MEASURES)) -> pd.DataFrame:
    """Per row: mean and standard deviation over seeds of each measure, and the number of seeds."""
    out = []
    for row in rows:
        sel = row.select(df)
        rec = {"row": row.label, "seeds": len(sel)}
        for m in measures:
            rec.update(_stats(sel, m))
        out.append(rec)
    return pd.DataFrame(out)


INIT_ROW = "random init"


def init_summary(df: pd.DataFrame, inits: pd.DataFrame) -> dict:
    """The random-init row of a source, mean and sd over seeds: the object probe of a random init with BN
    statistics of the data (every pretraining run records it for its seed) and the transfer measures of
    the random-init transfer runs."""
    per_seed = pd.DataFrame({"seed": df["seed"], **{m: df[m] - df[f"gain_{m}"] for m in ("linear", "knn")}}) \
        .groupby("seed").mean() if len(df) else pd.DataFrame(columns=["linear", "knn"])
    rec = {"row": INIT_ROW, "seeds": max(len(per_seed), len(inits))}
    for m in ("linear", "knn", *TRANSFER_MEASURES):
        rec.update(_stats(per_seed if m in ("linear", "knn") else inits, m))
    return rec


def _stats(df: pd.DataFrame, m: str) -> dict:
    """{m: mean, m_sd: sample sd, m_n: count} of column ``m`` (NaN / 0 where there are no values)."""
    values = df[m].dropna().astype(float) if m in df else pd.Series(dtype=float)
    return {m: values.mean() if len(values) else math.nan,
            f"{m}_sd": values.std(ddof=1) if len(values) > 1 else math.nan, f"{m}_n": len(values)}


def fmt(mean: float, sd: float, scale: float = 100.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean * scale:.1f}"
    return text + (f" ± {sd * scale:.1f}" if sd is not None and not math.isnan(sd) else "")


def paper_table(key: str) -> pd.DataFrame:
    from coarsecrop.crops.study import paper_tables

    return pd.DataFrame(paper_tables()[key]["rows"])


def paper_value(key: str, match: dict | None, column: str) -> float:
    if not match:
        return math.nan
    df = paper_table(key)
    for k, v in match.items():
        if k not in df:
            return math.nan
        df = df[df[k] == v]
    return float(df[column].iloc[0]) if len(df) and column in df and pd.notna(df[column].iloc[0]) else math.nan


def side_by_side(summaries: dict[str, pd.DataFrame], rows: list[Row], paper_key: str, paper_columns: list[str],
                 measures=("linear", "objectness")) -> pd.DataFrame:
    """The book's table: per row, the paper's columns (labelled as the paper's), then ours per source
    (mean ± sd over seeds, in %, with the number of seeds): ``measures`` and every transfer measure the
    source has runs of; last, the random-init row where a summary has one (``chapter`` adds it)."""
    table = []
    if any((s["row"] == INIT_ROW).any() for s in summaries.values()):
        rows = [*rows, Row(INIT_ROW, {})]
    for row in rows:
        rec = {"row": row.label}
        for col in paper_columns:
            value = paper_value(paper_key, row.paper, col)
            rec[f"paper {col}"] = "–" if math.isnan(value) else f"{value:.1f}"
        for name, summary in summaries.items():
            s = summary[summary["row"] == row.label]
            if s.empty:
                continue
            s = s.iloc[0]
            have = [m for m in TRANSFER_MEASURES if m not in measures and summary[m].notna().any()]
            for m in (*measures, *have):
                text = fmt(s[m], s[f"{m}_sd"])
                n = s.get(f"{m}_n", s["seeds"])
                rec[f"{name}: {LABELS.get(m, m)}"] = text + (f" (n={int(n)})" if 0 < n < s["seeds"] else "")
            rec[f"{name}: seeds"] = int(s["seeds"])
        table.append(rec)
    return pd.DataFrame(table).set_index("row")


# ---------------------------------------------------------------- the paper's claims, checked

@dataclass(frozen=True)
class Claim:
    """"``better`` beats ``worse``" in the paper (by its column ``paper_column``), checked on our ``measure``."""

    text: str
    better: Row
    worse: Row
    paper_key: str
    paper_column: str


def claims(rows: dict[str, Row], paper_key: str, paper_column: str, pairs) -> list[Claim]:
    """Claims from pairs of row labels, each written the way the paper's numbers point ("a > b" when the
    paper has a above b, else "b > a"); a pair without paper values keeps its order ("a > b, ours only")."""
    out = []
    for a, b in pairs:
        diff = paper_value(paper_key, rows[a].paper, paper_column) - paper_value(paper_key, rows[b].paper, paper_column)
        if math.isnan(diff):
            out.append(Claim(f"{a} > {b} (no paper value)", rows[a], rows[b], paper_key, paper_column))
        elif diff >= 0:
            out.append(Claim(f"{a} > {b}", rows[a], rows[b], paper_key, paper_column))
        else:
            out.append(Claim(f"{b} > {a}", rows[b], rows[a], paper_key, paper_column))
    return out


def check_claim(claim: Claim, df: pd.DataFrame, measure: str = "linear") -> dict:
    """The paper's difference, ours (mean over seeds), the spread, and a verdict.

    Verdicts, with at least two seeds per row: "agrees" (same sign, and the difference exceeds twice its
    standard error), "same direction, within noise", "opposite direction, within noise", "disagrees"
    (opposite sign beyond twice the standard error). With one seed the spread is unknown, and only the
    direction is reported: "same direction (one seed)" / "opposite direction (one seed)". "no runs" when
    a row has none."""
    paper = paper_value(claim.paper_key, claim.better.paper, claim.paper_column) - \
        paper_value(claim.paper_key, claim.worse.paper, claim.paper_column)
    a, b = claim.better.select(df), claim.worse.select(df)
    rec = {"claim": claim.text, "paper Δ (paper's units)": paper, "measure": LABELS.get(measure, measure)}
    x = a[measure].dropna().astype(float) if not a.empty and measure in a else pd.Series(dtype=float)
    y = b[measure].dropna().astype(float) if not b.empty and measure in b else pd.Series(dtype=float)
    if not len(x) or not len(y):
        return {**rec, "ours Δ": math.nan, "± 2 SE": math.nan, "seeds": 0, "verdict": "no runs"}
    diff = (x.mean() - y.mean()) * 100
    same = (diff > 0) == (paper > 0) if not math.isnan(paper) else diff > 0
    if len(x) < 2 or len(y) < 2:
        verdict = f"{'same' if same else 'opposite'} direction (one seed)"
        return {**rec, "ours Δ": diff, "± 2 SE": math.nan, "seeds": 1, "verdict": verdict}
    se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)) * 100
    if abs(diff) > 2 * se:
        verdict = "agrees" if same else "disagrees"
    else:
        verdict = "same direction, within noise" if same else "opposite direction, within noise"
    return {**rec, "ours Δ": diff, "± 2 SE": 2 * se, "seeds": int(min(len(x), len(y))), "verdict": verdict}


def claims_table(claims: list[Claim], df: pd.DataFrame, measure: str = "linear") -> pd.DataFrame:
    return pd.DataFrame([check_claim(c, df, measure) for c in claims])


def verdict_paragraph(checked: pd.DataFrame, source_label: str) -> str:
    """One paragraph saying how many of the paper's claims our runs bear out, and how firmly."""
    if checked.empty or (checked["verdict"] == "no runs").all():
        return f"**{source_label}:** no complete runs yet, so nothing can be said."
    counts = checked["verdict"].value_counts()
    parts = [f"{counts[v]} {v}" for v in ("agrees", "same direction, within noise",
                                          "opposite direction, within noise", "disagrees",
                                          "same direction (one seed)", "opposite direction (one seed)", "no runs")
             if v in counts]
    firm = [r["claim"] for _, r in checked.iterrows() if r["verdict"] == "agrees"]
    against = [r["claim"] for _, r in checked.iterrows() if r["verdict"] == "disagrees"]
    text = f"**{source_label}:** of {len(checked)} claim{'s' if len(checked) != 1 else ''}: {', '.join(parts)}."
    if firm:
        text += " Borne out beyond the spread over seeds: " + "; ".join(firm) + "."
    if against:
        text += " Contradicted beyond the spread: " + "; ".join(against) + "."
    if not firm and not against:
        one_seed = checked["verdict"].str.contains("one seed").any()
        text += (" With one seed per row only directions can be read, none is settled." if one_seed else
                 " None is settled either way at this budget: the differences are inside the noise.")
    return text


def source_line(df: pd.DataFrame, points: list[dict], preset: str, source: str) -> str:
    """'preset quick (this build): 28 of 28 runs, commit abc, 2026-11-26' for the runs ``df`` that
    ``collect`` found among the sweep's ``points``."""
    done, total = len(df), len({p["run_id"] for p in points})
    where = "this build, runs/" if source == "build" else f"committed, results/{preset}/"
    commits = ", ".join(sorted(set(df["commit"]) - {""})) if len(df) else "–"
    dates = ", ".join(sorted(set(df["date"]) - {""})) if len(df) else "–"
    return f"preset **{preset}** ({where}): {done} of {total} runs complete; commit {commits}; date {dates}"


# ---------------------------------------------------------------- a chapter

@dataclass
class ChapterParams:
    """Parameters of a table chapter (notebooks/1N_*.py); the parameters cell mirrors these fields.

    runs_preset: the preset of this build's table sweeps (make book: quick; the tests: smoke).
    reference_preset: the committed reference results shown beside them (results/<preset>/).
    measure: the object probe the claims are checked on: linear | knn (top-1); where the transfer sweep
    has run, the claims are also checked on mAP^l.
    out: the run folder (set by coarsecrop.book); preset: the preset file used (set by coarsecrop.book).
    """

    runs_preset: str = "quick"
    reference_preset: str = REFERENCE_PRESET
    measure: str = "linear"
    out: str | None = None
    preset: str = ""


def chapter(sweep: str, rows: list[Row], claims: list[Claim], params: ChapterParams,
            root: Path | None = None) -> dict:
    """Everything a chapter shows, from both sources: runs, summaries, the claims checked, headers."""
    if params.measure not in ("linear", "knn"):
        raise ValueError(f"measure must be 'linear' or 'knn', got {params.measure!r}")
    sources = {"this build": (params.runs_preset, "build"), "reference": (params.reference_preset, "reference")}
    out = {"sweep": sweep, "runs": {}, "summaries": {}, "claims": {}, "claims_transfer": {}, "init": {},
           "headers": {}}
    for name, (preset, source) in sources.items():
        label = f"{name} ({preset})"
        points = sweep_points(sweep, preset, root)  # plans the sweep once (converts the notebook)
        trunks, inits = collect_transfer(preset, source, root)
        df = collect(sweep, preset, source, root, points, transfer=trunks)
        out["runs"][label] = df
        seeds = sorted(set(df["seed"])) if len(df) else []
        inits = inits[inits["seed"].isin(seeds)]
        out["summaries"][label] = pd.concat([summarise(df, rows), pd.DataFrame([init_summary(df, inits)])],
                                            ignore_index=True)
        out["claims"][label] = claims_table(claims, df, params.measure)
        if len(df) and df["mAP_l"].notna().any():
            out["claims_transfer"][label] = claims_table(claims, df, "mAP_l")
        out["init"][label] = inits
        out["headers"][label] = source_line(df, points, preset, source)
    return out


def write_chapter_metrics(result: dict, params: ChapterParams) -> Path | None:
    """The chapter's numbers as out/metrics.json (atomic): summaries and claims per source."""
    if not params.out:
        return None

    def records(df):
        return json.loads(df.to_json(orient="records"))  # NaN -> null

    record = {"sweep": result["sweep"], "params": {"runs_preset": params.runs_preset,
                                                   "reference_preset": params.reference_preset,
                                                   "measure": params.measure},
              "headers": result["headers"],
              "summaries": {k: records(v) for k, v in result["summaries"].items()},
              "claims": {k: records(v) for k, v in result["claims"].items()},
              "claims_mAP_l": {k: records(v) for k, v in result["claims_transfer"].items()},
              "init_mAP_l": {k: records(v) for k, v in result["init"].items()}}
    path = Path(params.out) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return path


def show_claims(result: dict, params: ChapterParams) -> None:
    """The verdict paragraph and the claims table of each source, on the object probe and (where the
    transfer sweep has run) on mAP^l; then the chapter's metrics.json."""
    from IPython.display import Markdown, display

    for label, checked in result["claims"].items():
        display(Markdown(verdict_paragraph(checked, f"{label}, {MEASURE_NAMES[params.measure]}")))
        display(checked.round(2))
        if label in result["claims_transfer"]:
            display(Markdown(verdict_paragraph(result["claims_transfer"][label], f"{label}, {MEASURE_NAMES['mAP_l']}")))
            display(result["claims_transfer"][label].round(2))
        else:
            display(Markdown(f"**{label}, {MEASURE_NAMES['mAP_l']}:** no transfer runs (run "
                             f"`coarsecrop sweep params/sweeps/{TRANSFER_SWEEP}.yaml --preset "
                             f"{label.split('(')[-1].rstrip(')')}` after the table sweeps)."))
    write_chapter_metrics(result, params)


def init_comparison(result: dict, rows: list[Row], measures=tuple(TRANSFER_MEASURES)) -> str:
    """Per source and transfer measure: how many rows beat the random init, and by how much at best and
    worst (mean over seeds, percentage points); the line says so when one seed makes it a direction only."""
    lines = []
    for label, summary in result["summaries"].items():
        s = summary.set_index("row")
        if INIT_ROW not in s.index:
            continue
        for m in measures:
            init, table = s.loc[INIT_ROW, m], s.reindex([r.label for r in rows])
            ours = table[m].dropna()
            if pd.isna(init) or ours.empty:
                continue
            gaps = (ours - init) * 100
            seeds = int(table[f"{m}_n"].min() if f"{m}_n" in table else table["seeds"].min())
            lines.append(f"- {label}, {MEASURE_NAMES[m]}: {int((gaps > 0).sum())} of {len(gaps)} rows above the "
                         f"random init ({init * 100:.1f}); best {gaps.idxmax()} {gaps.max():+.1f}, worst "
                         f"{gaps.idxmin()} {gaps.min():+.1f} points"
                         + (" (one seed: a direction only)" if seeds < 2 else f" ({seeds} or more seeds per row)"))
    return "\n".join(lines) if lines else "No transfer runs with a random-init baseline yet."


def header_markdown(result: dict) -> str:
    lines = ["**The runs behind this chapter.** Two accuracies, in %, mean ± sd over seeds: the *object "
             "probe* of notebooks/02_pretrain.py (a classifier on frozen features of the val split's GT "
             "objects, top-1), and *mAP^l*, the paper's own linear probe (notebooks/03_transfer.py: a linear "
             "multi-label classifier on frozen pooled features of whole scenes, train split -> val split, "
             "mean AP over classes), run by params/sweeps/transfer.yaml."]
    for label, text in result["headers"].items():
        init = result["init"].get(label)
        if init is not None and len(init) and "mAP_l" in init and init["mAP_l"].notna().any():
            values = init["mAP_l"].dropna().astype(float)
            sd = values.std(ddof=1) if len(values) > 1 else math.nan
            text += (f"; mAP^l of a random init {fmt(values.mean(), sd)} ({len(values)} "
                     f"seed{'s' if len(values) != 1 else ''})")
        else:
            text += "; no mAP^l runs"
        lines.append(f"- {label}: {text}")
    return "\n".join(lines)


def figure(fig, params: ChapterParams, name: str):
    """The figure as a PNG image for the page (independent of the matplotlib backend), also saved as
    out/figures/<name>.png when the chapter has a run folder."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    png = buffer.getvalue()
    if params.out:
        folder = Path(params.out) / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(png)
    return Image(data=png, format="png")


def plot_rows(result: dict, rows: list[Row], measure: str = "linear"):
    """Bars per row (mean over seeds, sd as error bar), one colour per source, the seeds as dots, and the
    random-init level of each source as a dashed line; one panel for the object probe ``measure`` and,
    where the transfer sweep has run, one for mAP^l."""
    import matplotlib.pyplot as plt

    panels = [measure] + (["mAP_l"] if any(s["mAP_l"].notna().any() for s in result["summaries"].values()) else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(5.5, 0.9 * len(rows) + 2), 3.4 * len(panels)),
                             squeeze=False)
    for ax, m in zip(axes[:, 0], panels):
        _bars(ax, result, rows, m)
    fig.tight_layout()
    return fig


def _init_level(result: dict, label: str, measure: str) -> float:
    """The random-init level of ``measure`` in source ``label`` (%): BN-recomputed init for the object
    probe, the random-init transfer runs for mAP^l; NaN when unknown."""
    df = result["runs"][label]
    if measure in TRANSFER_MEASURES:
        init = result["init"].get(label)
        if init is None or not len(init) or measure not in init:
            return math.nan
        return float(init[measure].dropna().astype(float).mean()) * 100
    if len(df) and f"gain_{measure}" in df and measure in df:
        return float((df[measure] - df[f"gain_{measure}"]).median()) * 100
    return math.nan


def _bars(ax, result: dict, rows: list[Row], measure: str) -> None:
    import numpy as np

    labels = list(result["summaries"])
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(rows))
    for i, label in enumerate(labels):
        s = result["summaries"][label].set_index("row").reindex([r.label for r in rows])
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, s[measure] * 100, width, yerr=s[f"{measure}_sd"].fillna(0) * 100, capsize=3, label=label,
               alpha=0.8)
        df = result["runs"][label]
        for j, row in enumerate(rows):
            sel = row.select(df)
            if len(sel) and measure in sel:
                ax.scatter(np.full(len(sel), pos[j]), sel[measure].astype(float) * 100, color="k", s=8, zorder=3)
        init = _init_level(result, label, measure)
        if not math.isnan(init):
            kind = "random init" if measure in TRANSFER_MEASURES else "random init (BN)"
            ax.axhline(init, ls="--", lw=1, color=f"C{i}", label=f"{label}: {kind}")
    values = [v for label in labels for v in (result["summaries"][label][measure] * 100).dropna()]
    values += [v for v in (_init_level(result, label, measure) for label in labels) if not math.isnan(v)]
    if values:
        ax.set_ylim(max(0, min(values) - 8), min(100, max(values) + 5))
    ax.set_xticks(x, [r.label for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{MEASURE_NAMES.get(measure, measure)} (%)", fontsize=8)
    ax.legend(fontsize=7)


def plot_objectness(result: dict, rows: list[Row], measure: str = "linear", paper_key: str | None = None,
                    paper_column: str | None = None):
    """Fig. 5: accuracy against the objectness of the pseudo-images, one point per row and source: a
    panel for the object probe, one for mAP^l where the transfer sweep has run, and the paper's points
    (in its own units) on the last panel."""
    import matplotlib.pyplot as plt

    ours = [measure] + (["mAP_l"] if any(s["mAP_l"].notna().any() for s in result["summaries"].values()) else [])
    panels = len(ours) + (1 if paper_key else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    for ax, m in zip(axes[0], ours):
        for i, (label, summary) in enumerate(result["summaries"].items()):
            s = summary.set_index("row")
            for row in rows:
                if row.label not in s.index or pd.isna(s.loc[row.label, m]):
                    continue
                sd = s.loc[row.label, f"{m}_sd"]
                ax.errorbar(s.loc[row.label, "objectness"] * 100, s.loc[row.label, m] * 100,
                            yerr=sd * 100 if pd.notna(sd) else None, fmt="o", color=f"C{i}", capsize=3)
                ax.annotate(row.label, (s.loc[row.label, "objectness"] * 100, s.loc[row.label, m] * 100),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.plot([], [], "o", color=f"C{i}", label=label)
        ax.set(xlabel="objectness of the pseudo-images (%)", ylabel=f"{MEASURE_NAMES.get(m, m)} (%)",
               title="ours")
        ax.legend(fontsize=7)
    if paper_key:
        bx = axes[0][-1]
        df = paper_table(paper_key)
        bx.scatter(df["objectness"], df[paper_column], color="C3")
        for _, r in df.iterrows():
            bx.annotate(r["crops"], (r["objectness"], r[paper_column]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        bx.set(xlabel="objectness (%), the paper's", ylabel=f"{paper_column}, the paper's",
               title="the paper (VOC07, BYOL)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- exporting reference results

def export_results(preset: str, source_root: Path, root: Path | None = None, sweeps=TABLE_SWEEPS) -> list[str]:
    """Copy metrics.json and run.json of every complete run of the table sweeps at ``preset``, and of the
    transfer sweep's runs on them, from source_root/runs/ to results/<preset>/ (small files: no
    checkpoints, no notebooks). Returns the run ids copied."""
    root = Path(root or project_root()).resolve()
    copied = []
    todo = [(NOTEBOOK, point) for sweep in sweeps for point in sweep_points(sweep, preset, root)]
    todo += [(TRANSFER_NOTEBOOK, point) for point in transfer_points(preset, root)]
    for notebook, point in todo:
        src = Path(source_root) / "runs" / notebook / point["run_id"]
        if read_run(src) is None:
            continue
        dst = results_dir(preset, root, notebook) / point["run_id"]
        dst.mkdir(parents=True, exist_ok=True)
        record = read_record(src)
        if "finished" not in record:  # runs made before run.json recorded it
            record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                               time.localtime((src / "metrics.json").stat().st_mtime))
        write_atomic(dst / "metrics.json", lambda f: f.write((src / "metrics.json").read_bytes()))
        write_text(dst / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
        copied.append(point["run_id"])
    return sorted(set(copied))


def committed_run_ids(preset: str, root: Path | None = None, notebook: str = NOTEBOOK) -> list[str]:
    folder = results_dir(preset, root, notebook)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def recomputed_run_id(folder: Path) -> str:
    """The id the parameters recorded in a committed run hash to (must equal its folder name)."""
    params = read_record(folder)["parameters"]
    return run_id_of(params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coarsecrop.tables", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="copy complete table runs of a preset into results/<preset>/")
    p.add_argument("--preset", default=REFERENCE_PRESET)
    p.add_argument("--from", dest="source", default=".", help="project root whose runs/ to read")
    args = parser.parse_args(argv)
    try:
        ids = export_results(args.preset, Path(args.source).resolve())
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{parser.prog} export: error: {err}\n")
    print(f"{len(ids)} run(s) in {results_dir(args.preset).parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
