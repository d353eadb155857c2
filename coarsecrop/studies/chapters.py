"""The book's table chapters (notebooks/1N_*.py): the runs of a table sweep (params/sweeps/tableN.yaml)
read back (``coarsecrop.studies.results``), summarised over seeds, set beside the paper's values and the
paper's claims checked against them (``coarsecrop.studies.claims``), then rendered: markdown, tables,
figures and the chapter's metrics.json.

The accuracy measures: the object probe of notebooks/02_pretrain.py (frozen trunk, GT object crops of
the val split, linear and kNN top-1), beside the same probe on a random init with BN statistics of the
data; and, where the transfer sweep (params/sweeps/transfer.yaml) has run, mAP^l: the paper's linear
multi-label probe (notebooks/03_transfer.py, task "linear"), on each trunk's own scene set, beside a
random init.

A chapter notebook imports this module as ``T`` and calls ``T.chapter``, ``T.side_by_side``, ``T.claims`` ...;
the names of ``results`` and ``claims`` it uses are importable from here too.

    coarsecrop tables export --preset cpu-full [--from /path/to/other/checkout]   # runs/ -> results/


"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from coarsecrop.io import write_json
from coarsecrop.params import project_root
from coarsecrop.studies.claims import (FEW_SEEDS, INIT_ROW, LABELS, MIN_SEEDS, Claim, Row, chance_rate, check_claim,
                                       claims, claims_table, fmt, init_summary, missing, paper_value, side_by_side,
                                       summarise, verdict_paragraph)


from coarsecrop.studies.figures import save_figure
from coarsecrop.studies.reference import paper_table
from coarsecrop.studies.results import (NOTEBOOK, REFERENCE_PRESETS, TABLE_SWEEPS, TRANSFER_MEASURES,
                                        TRANSFER_NOTEBOOK, TRANSFER_SWEEP, collect, collect_transfer,
                                        committed_presets, committed_run_ids, read_run, recomputed_run_id,
                                        results_dir, source_line, sweep_points, transfer_points, export_results)

__all__ = ["ChapterParams", "chapter", "show_claims", "write_chapter_metrics", "init_comparison", "header_markdown",
           "crop_quality", "latest_chapters", "claims_overview", "claim_counts", "count_sentence",
           "write_claims_metrics", "glue_key", "quoted_numbers",
           "figure", "plot_rows", "plot_objectness", "MEASURE_NAMES", "METHOD_NAMES",
           # statistics and claims (coarsecrop.studies.claims)
           "Row", "Claim", "INIT_ROW", "LABELS", "claims", "check_claim", "claims_table", "fmt", "paper_value",
           "side_by_side", "summarise", "verdict_paragraph", "chance_rate",
           # reading runs (coarsecrop.studies.results)
           "NOTEBOOK", "TRANSFER_NOTEBOOK", "TABLE_SWEEPS", "REFERENCE_PRESETS", "committed_presets", "sweep_points",
           "transfer_points",
           "results_dir", "read_run", "committed_run_ids", "recomputed_run_id", "export_results"]

MEASURE_NAMES = {"linear": "object probe, linear top-1", "knn": "object probe, kNN top-1",
                 "mAP_l": "mAP^l (linear multi-label probe)", "mAP": "mAP (finetuned multi-label)",
                 "AP50": "detection AP50 (torchvision's Faster R-CNN C4, toy scale)",
                 "AP50_d2": "detection AP50 (detectron2, a shipped config)"}


METHOD_NAMES = {"byol": "BYOL", "moco_v2": "MoCo-v2", "densecl": "DenseCL", "mae": "MAE"}


@dataclass
class ChapterParams:
    """Parameters of a table chapter (notebooks/1N_*.py); the parameters cell mirrors these fields.

    runs_preset: the preset of this build's table sweeps (make book: quick; the tests: smoke).
    reference_presets: the committed reference results shown beside them (results/<preset>/), in this order,
      each where its folder exists (default: cpu-full, the remake on scenes v3; gpu, the same on one GPU;
      cpu-full-v1, the first results, on scenes v1).
    measure: the object probe the claims are checked on: linear | knn (top-1); where the transfer sweep
    has run, the claims are also checked on mAP^l.
    out: the run folder (set by coarsecrop.book); preset: the preset file used (set by coarsecrop.book).
    """

    runs_preset: str = "quick"
    reference_presets: list = field(default_factory=lambda: list(REFERENCE_PRESETS))
    measure: str = "linear"
    out: str | None = None
    preset: str = ""


def chapter(sweep: str, rows: list[Row], claims: list[Claim], params: ChapterParams,
            root: Path | None = None) -> dict:
    """Everything a chapter shows, from both sources: runs, summaries, the claims checked, headers."""
    if params.measure not in ("linear", "knn"):
        raise ValueError(f"measure must be 'linear' or 'knn', got {params.measure!r}")
    sources = [("this build", params.runs_preset, "build"),
               *(("reference", preset, "reference") for preset in committed_presets(params.reference_presets, root))]
    out = {"sweep": sweep, "runs": {}, "summaries": {}, "claims": {}, "claims_transfer": {}, "init": {},
           "headers": {}}
    for name, preset, source in sources:
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


def _records(df: pd.DataFrame) -> list[dict]:
    """A frame as JSON-ready records (NaN -> null)."""
    return json.loads(df.to_json(orient="records"))


def write_chapter_metrics(result: dict, params: ChapterParams) -> Path | None:
    """The chapter's numbers as out/metrics.json (atomic): summaries and claims per source."""
    if not params.out:
        return None

    record = {"sweep": result["sweep"], "params": {"runs_preset": params.runs_preset,
                                                   "reference_presets": params.reference_presets,
                                                   "measure": params.measure},
              "headers": result["headers"],
              "summaries": {k: _records(v) for k, v in result["summaries"].items()},
              "claims": {k: _records(v) for k, v in result["claims"].items()},
              "claims_mAP_l": {k: _records(v) for k, v in result["claims_transfer"].items()},
              "init_mAP_l": {k: _records(v) for k, v in result["init"].items()}}
    path = Path(params.out) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return path


RECORD_ONLY = ["comparison", "seeds better", "seeds worse"]  # in metrics.json for the landing page, not shown


def show_claims(result: dict, params: ChapterParams) -> None:
    """The verdict paragraph and the claims table of each source, on the object probe and (where the
    transfer sweep has run) on mAP^l; then the chapter's metrics.json."""
    from IPython.display import Markdown, display  # IPython: the book extra (optional dependency)

    for label, checked in result["claims"].items():
        display(Markdown(verdict_paragraph(checked, f"{label}, {MEASURE_NAMES[params.measure]}")))
        display(checked.drop(columns=RECORD_ONLY, errors="ignore").round(2))
        if label in result["claims_transfer"]:
            display(Markdown(verdict_paragraph(result["claims_transfer"][label], f"{label}, {MEASURE_NAMES['mAP_l']}")))
            display(result["claims_transfer"][label].drop(columns=RECORD_ONLY, errors="ignore").round(2))
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


def crop_quality(result: dict, rows: list[Row]) -> pd.DataFrame:
    """What each row trained on, measured on its own crops (mean over seeds, per source): mean objectness,
    the Poor and Precise shares (Fig. 3's buckets) and the median crop side in px."""
    lines = []
    for label, df in result["runs"].items():
        for row in rows:
            sel = row.select(df) if len(df) else df
            if not len(sel):
                continue
            lines.append({"source": label, "row": row.label, "seeds": len(sel),
                          **{k: round(float(sel[k].mean()), 3) if k in sel and sel[k].notna().any() else None
                             for k in ("objectness", "poor", "precise", "median_side")}})
    return pd.DataFrame(lines).set_index(["source", "row"]) if lines else pd.DataFrame()


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
    """The figure as a PNG image for the page, also saved as out/figures/<name>.png when the chapter has a
    run folder."""
    return save_figure(fig, Path(params.out) / "figures" if params.out else None, name)


def plot_rows(result: dict, rows: list[Row], measure: str = "linear"):
    """Bars per row (mean over seeds, sd as error bar), one colour per source, the seeds as dots, and the
    random-init level of each source as a dashed line; one panel for the object probe ``measure`` and,
    where the transfer sweep has run, one for mAP^l."""
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


# ---------------------------------------------------------------- the claims of every chapter, counted

DECIDED = ("agrees", "disagrees")  # beyond twice the standard error over seeds, either way
MAP_L = "mAP^l"
EITHER = "either measure"  # a claim decided on at least one of them


def latest_chapters(runs_preset: str, measure: str = "linear", root: Path | None = None) -> dict[str, dict]:
    """The latest metrics.json of each table chapter (runs/1N_*/<id>/metrics.json, written by ``show_claims``)
    made with this build's ``runs_preset`` and the object probe ``measure``, by sweep, in TABLE_SWEEPS order."""
    root = Path(root or project_root())
    latest: dict[str, tuple[float, dict]] = {}
    for path in root.glob("runs/1[0-9]_*/*/metrics.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable chapter metrics.json ({err}); delete the folder and run the "
                             "chapter again") from err
        made_with = record.get("params") or {}
        if record.get("sweep") not in TABLE_SWEEPS or made_with.get("runs_preset") != runs_preset \
                or made_with.get("measure", "linear") != measure:
            continue
        stamp = path.stat().st_mtime
        if record["sweep"] not in latest or stamp > latest[record["sweep"]][0]:
            latest[record["sweep"]] = (stamp, record)
    return {sweep: latest[sweep][1] for sweep in TABLE_SWEEPS if sweep in latest}


def claims_overview(chapters: dict[str, dict], measure: str = "linear") -> pd.DataFrame:
    """Every claim the table chapters checked, from their latest runs (``latest_chapters``, checked on the
    object probe ``measure``): one row per chapter sweep, source, measure (the object probe; mAP^l) and claim,
    with the verdict. A source without mAP^l runs has its claims listed as "no runs" on mAP^l, so every source
    and measure counts the same claims."""
    rows, probe = [], f"object probe ({LABELS[measure]})"
    for sweep, record in chapters.items():
        for source, checked in record["claims"].items():
            transfer = {c["claim"]: c for c in record.get("claims_mAP_l", {}).get(source, [])}
            for claim in checked:
                # the runs compared; a chapter run by older code recorded none: its (sweep, claim) stands alone
                key = claim.get("comparison") or f"{sweep}: {claim['claim']}"
                other = transfer.get(claim["claim"], {"verdict": "no runs", "ours Δ": None, "± 2 SE": None})
                for measure, c in ((probe, claim), (MAP_L, other)):
                    rows.append({"sweep": sweep, "source": source, "measure": measure, "claim": claim["claim"],
                                 "verdict": c["verdict"], "ours Δ": c["ours Δ"], "± 2 SE": c["± 2 SE"],
                                 "comparison": key, **_seeds(c)})
    return pd.DataFrame(rows, columns=["sweep", "source", "measure", "claim", "verdict", "ours Δ", "± 2 SE",
                                       "comparison", "seeds better", "seeds worse"])


def _seeds(checked: dict) -> dict:
    """The seeds of a checked claim's two rows (a chapter run by older code recorded only the smaller)."""
    fewer = int(checked.get("seeds") or 0)
    return {"seeds better": int(checked.get("seeds better", fewer)), "seeds worse": int(checked.get("seeds worse", fewer))}


def _by_chance(group: pd.DataFrame) -> pd.Series:
    """Per claim-measure row: how likely the rule decides it if its two rows did not differ (``chance_rate``)."""
    return pd.Series([chance_rate(int(b), int(w)) if v != "no runs" else 0.0
                      for b, w, v in zip(group["seeds better"], group["seeds worse"], group["verdict"])],
                     index=group.index, dtype=float)


def claim_counts(overview: pd.DataFrame) -> pd.DataFrame:
    """Per source and measure: the claims, how many have runs, how many agree or disagree beyond twice the
    standard error (decided) and how many sit within the noise or rest on fewer than three seeds per row (a
    direction only). Then, per source, a row for EITHER (the issue's target counts these): a claim is decided
    when it is on at least one measure; it agrees when no measure disagrees, disagrees when none agrees, and
    is "split" when one measure agrees and the other disagrees. "distinct" counts the decided claims again
    with each comparison once (a claim two tables share, on the same runs, is one piece of evidence). "by
    chance" is how many the rule would decide if no row differed from another (``chance_rate`` summed over
    the claims with runs; on either measure as if the two measures were independent, which over-counts: they
    are measured on the same trunks)."""
    out = []
    for source, mine in overview.groupby("source", sort=False):
        mine = mine.assign(chance=_by_chance(mine))  # once per claim and measure; summed two ways below
        for measure, group in mine.groupby("measure", sort=False):
            verdict = group["verdict"]
            out.append({"source": source, "measure": measure, "claims": len(group),
                        "with runs": int((verdict != "no runs").sum()),
                        "agrees": int((verdict == "agrees").sum()), "disagrees": int((verdict == "disagrees").sum()),
                        "decided": int(verdict.isin(DECIDED).sum()),
                        "distinct": int(group.loc[verdict.isin(DECIDED), "comparison"].nunique()),
                        "by chance": round(float(group["chance"].sum()), 1),
                        "within noise": int(verdict.str.contains("within noise").sum()),
                        "too few seeds": int(verdict.str.contains(FEW_SEEDS).sum())})
        verdict = mine["verdict"]
        flags = (mine.assign(agree=verdict == "agrees", disagree=verdict == "disagrees", runs=verdict != "no runs",
                             undecided=1 - mine["chance"])
                 .groupby(["sweep", "claim"], sort=False)
                 .agg(agree=("agree", "any"), disagree=("disagree", "any"), runs=("runs", "any"),
                      comparison=("comparison", "first"), undecided=("undecided", "prod")))
        agree, disagree = flags["agree"], flags["disagree"]
        out.append({"source": source, "measure": EITHER, "claims": len(flags), "with runs": int(flags["runs"].sum()),
                    "agrees": int((agree & ~disagree).sum()), "disagrees": int((disagree & ~agree).sum()),
                    "split": int((agree & disagree).sum()), "decided": int((agree | disagree).sum()),
                    "distinct": int(flags.loc[agree | disagree, "comparison"].nunique()),
                    "by chance": round(float((1 - flags["undecided"]).sum()), 1)})
    columns = ["source", "measure", "claims", "with runs", "agrees", "disagrees", "split", "decided", "distinct",
               "by chance", "within noise", "too few seeds"]
    return pd.DataFrame(out, columns=columns).astype({c: "Int64" for c in columns[2:] if c != "by chance"})


def count_sentence(counts: pd.DataFrame, source: str) -> str:
    """'of 40 claims, 31 have runs; decided beyond twice the standard error: 12 on the object probe (linear
    top-1) (10 agree, 2 disagree), 9 on mAP^l (...) and 15 on either measure (11 agree, 3 disagree, 1 split)'
    for one source of ``claim_counts``."""
    mine = counts[counts["source"] == source].set_index("measure")
    if mine.empty:
        return f"{source}: no chapter has checked its claims yet"
    total, with_runs = int(mine["claims"].max()), int(mine["with runs"].max())
    parts = []
    for m in mine.index:
        split = f", {int(mine.loc[m, 'split'])} split" if m == EITHER else ""
        parts.append(f"{int(mine.loc[m, 'decided'])} on {'' if m in (MAP_L, EITHER) else 'the '}{m} "
                     f"({int(mine.loc[m, 'agrees'])} agree, {int(mine.loc[m, 'disagrees'])} disagree{split})")
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    text = f"of {total} claims, {with_runs} have runs; decided beyond twice the standard error: {listed}"
    if EITHER in mine.index and mine.loc[EITHER, "distinct"] < mine.loc[EITHER, "decided"]:
        text += (f"; {int(mine.loc[EITHER, 'distinct'])} distinct comparisons among the {int(mine.loc[EITHER, 'decided'])} "
                 "(claims that several tables make about the same runs counted once)")
    if with_runs:
        chance = [f"{'at most ' if m == EITHER else ''}{mine.loc[m, 'by chance']:.1f} on "
                  f"{'' if m in (MAP_L, EITHER) else 'the '}{m}" for m in mine.index]
        text += (". If no row differed from another, chance alone would decide about "
                 f"{', '.join(chance[:-1]) + ' and ' + chance[-1] if len(chance) > 1 else chance[0]} "
                 f"(twice the standard error over a few seeds is no 5% test: it decides about "
                 f"{100 * chance_rate(MIN_SEEDS, MIN_SEEDS):.0f}% of claims with {MIN_SEEDS} seeds per row and "
                 "nothing to find)")
    return text


def glue_key(*parts: str) -> str:
    """A glue key from names: lower case, every run of other characters than letters and digits one '_', and
    '>' as '_vs_' ('table2', 'GTPad > GT', 'probe' -> 'table2_gtpad_vs_gt_probe')."""
    text = "_".join(parts).replace(">", " vs ").lower()
    return "_".join("".join(c if c.isascii() and c.isalnum() else " " for c in text).split())


def quoted_numbers(chapters: dict[str, dict], reference: str, measure: str = "linear") -> dict[str, str]:
    """The numbers of one source that the landing page quotes (book/intro.md pastes each with
    ``{glue:text}`generated/18_claims.ipynb::KEY:s```), from ``chapters``, the latest run of every table chapter
    (``latest_chapters``), so the page follows the results instead of repeating them by hand. Keys
    (``glue_key``), with M = probe (the object probe's ``measure``) or mapl (mAP^l), in percent or points:

    - ``<preset>_<sweep>_<row>_M``: the row's mean over seeds ('26.6'); ``..._M_sd``: its standard deviation;
      ``<preset>_<sweep>_<row>_probe_init``: the object probe of the same trunks before training (random weights,
      as the trainer measures it) and ``..._probe_best``: the best reading of the trainer's monitor during
      training, both means over seeds; ``<preset>_<sweep>_<row>_seeds``: its seeds;
    - ``<preset>_<sweep>_<row>_objectness``, ``..._poor`` and ``..._precise``: its crops' mean objectness and
      shares of the paper's Poor and Precise buckets (%), ``..._median_side``: their median side (px, rounded);
    - ``<preset>_<sweep>_<claim>_M``: our difference, better row minus worse row, with twice its standard
      error ('+3.7 ± 3.9'); ``..._M_abs``: its size alone ('3.7'), for prose that says the direction in words;
      ``..._M_verdict``: the verdict ('agrees', 'same direction, within noise', ...);
    - ``<preset>_probe``: what the object probe's numbers are ('linear top-1'; the smoke preset checks kNN).

    ``reference`` is a committed preset ('cpu-full'); a row or claim without runs on a measure has no key."""
    source, prefix = f"reference ({reference})", reference
    out: dict[str, str] = {}

    def put(value, *name, digits=1, scale=1.0):
        if not missing(value):
            out[glue_key(prefix, *name)] = f"{scale * value:.{digits}f}"

    for sweep, record in chapters.items():
        for row in record.get("summaries", {}).get(source, []):
            for key, name in ((measure, "probe"), ("mAP_l", "mapl")):
                if row.get(f"{key}_n"):
                    put(row.get(key), sweep, row["row"], name, scale=100)
                    put(row.get(f"{key}_sd"), sweep, row["row"], name, "sd", scale=100)
            for key, name in ((f"init_{measure}", "init"), (f"best_{measure}", "best")):
                if row.get(f"{key}_n"):
                    put(row.get(key), sweep, row["row"], "probe", name, scale=100)
            for key in ("objectness", "poor", "precise", "median_side"):
                if row.get(f"{key}_n"):
                    put(row.get(key), sweep, row["row"], key, digits=0, scale=1 if key == "median_side" else 100)
            put(row.get("seeds"), sweep, row["row"], "seeds", digits=0)
        for key, name in (("claims", "probe"), ("claims_mAP_l", "mapl")):
            for claim in record.get(key, {}).get(source, []):
                delta, spread = claim.get("ours Δ"), claim.get("± 2 SE")
                if missing(delta):
                    continue
                base = glue_key(prefix, sweep, claim["claim"], name)
                out[base + "_abs"] = f"{abs(delta):.1f}"
                out[base + "_verdict"] = claim["verdict"]
                out[base] = f"{delta:+.1f}" + ("" if missing(spread) else f" ± {spread:.1f}")
    if out:
        out[glue_key(prefix, "probe")] = LABELS[measure]  # what M = probe measured: 'linear top-1' or 'kNN top-1'
    return out


def write_claims_metrics(overview: pd.DataFrame, counts: pd.DataFrame, params: ChapterParams) -> Path | None:
    """The counted claims (notebooks/18_claims.py) as out/metrics.json (atomic)."""
    if not params.out:
        return None
    path = Path(params.out) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"params": {"runs_preset": params.runs_preset, "reference_presets": params.reference_presets},
                      "counts": _records(counts), "claims": _records(overview)})
    return path
