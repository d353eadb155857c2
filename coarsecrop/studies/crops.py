"""The crop study behind notebooks/01_crops.py (Table 2, Figs. 1, 3 and 4 of the paper).

Every strategy runs through the real crop job (``run_crop_job``) into a manifest under the run folder;
the manifests are read back and each crop is scored against the GT masks (``coarsecrop.crops.quality``).
The notebook stays thin: it validates its parameters, calls ``run_study`` and the plotting helpers here,
and glues the results for the book.

    params = CropStudyParams(num_images=8, image_size=128, backbone="resnet18", anchor_sizes=[8, 16, 32, 64])
    study = run_study(params)            # scenes, a manifest per strategy, per-crop table, per-strategy summary
    image = save_figure(plot_quality_bars(study.summary), study.run_dir / "figures", "quality_bars")  # studies.figures
    save_metrics(study)                  # run_dir/metrics.json, last: its presence marks a complete run
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.patches import Rectangle

from coarsecrop.crops.job import build_strategy, run_crop_job
from coarsecrop.crops.manifest import read_manifest
from coarsecrop.crops.quality import POOR_BELOW, PRECISE_ABOVE, crop_objectness, labelled_masks, quality_buckets
from coarsecrop.crops.strategies import STRATEGIES, strategy_parameters
from coarsecrop.data.images import load_image
from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import scenes_or_builtin
from coarsecrop.device import resolve_device
from coarsecrop.io import json_safe, write_json
from coarsecrop.params import default_run_dir
from coarsecrop.runs.provenance import provenance
from coarsecrop.studies.reference import paper_objectness

# The strategies of Table 2 and Fig. 3, in the paper's order, then the object-discovery baselines, ours
# and its two documented variants (see coarsecrop.crops.strategies for what each does).
ALL_STRATEGIES = ["image", "gt", "gtpad", "poor", "grid", "random", "selective_search", "edgebox", "ours",
                  "ours_coarse", "ours_zscore"]

# Display names (the paper's wording).
LABELS = {
    "image": "Image-Crop", "gt": "GT-Crop", "gtpad": "GTPad-Crop", "poor": "Poor-Crop", "grid": "Grid-Crop",
    "random": "Random", "selective_search": "Selective search", "edgebox": "EdgeBox", "ours": "Our-Crop",
    "ours_coarse": "Our-Crop, coarse variant", "ours_zscore": "Our-Crop, z-score variant",
}


def label(name: str) -> str:
    """Display name of a strategy; a variant of ours not listed in LABELS is named after its suffix."""
    if name in LABELS:
        return LABELS[name]
    if name.startswith("ours_"):
        return f"Our-Crop, {name[5:].replace('_', ' ')} variant"
    return name


def is_ours(name: str) -> bool:
    """Ours or one of its variants (the paper's claims about Our-Crop are checked for each)."""
    return name == "ours" or name.startswith("ours_")

# Study fields -> parameters of the anchor-based strategies (ours and its variants); passed only to the
# strategies whose parameters include them.
ANCHOR_KEYS = {"anchor_sizes": "sizes", "anchor_ratios": "ratios", "nms_iou": "nms_iou"}

PAPER_LABEL = "paper (VOC07)"


@dataclass
class CropStudyParams:
    """Parameters of the crop study; notebooks/01_crops.py's ``parameters`` cell mirrors these fields.

    scenes: a data set to read (COCO json, VOC root, plain folder, ``coarsecrop scenes`` folder);
        None generates the built-in synthetic scenes (num_images, image_size, seed; generator scene_version:
        1, 2 or 3, see coarsecrop.data.synthetic) into the run folder.
    strategies: names from coarsecrop.crops.strategies.STRATEGIES, in the order of the table rows.
    anchor_sizes / anchor_ratios / nms_iou: passed to the anchor-based strategies (ours and variants);
        the paper's sizes 32-256 were chosen for ~640-px COCO images, so scale them with the image side.
    strategy_params: extra parameters per strategy, e.g. {"gtpad": {"pad": 0.3}}.
    show_images: how many images the Fig. 1 / Fig. 4 style figures show.
    out: the run folder; None = runs/01_crops/<hash of the other parameters> under the current folder's
        project root (the folder holding pyproject.toml), else under the current folder.
    preset: the preset file the parameters came from (set by ``python -m coarsecrop.book``), for the record.
    """

    scenes: str | None = None
    images: str | None = None
    split: str | None = None
    num_images: int = 200
    image_size: int = 256
    seed: int = 0
    scene_version: int = 1
    strategies: list[str] = field(default_factory=lambda: list(ALL_STRATEGIES))
    n: int = 5
    backbone: str = "resnet50"
    checkpoint: str | None = None
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    anchor_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    nms_iou: float | None = None
    strategy_params: dict = field(default_factory=dict)
    device: str = "auto"
    batch_size: int = 8
    workers: int = 0
    show_images: int = 3
    out: str | None = None
    preset: str = ""

    MINIMUM: ClassVar[dict] = {"num_images": 1, "image_size": 32, "n": 1, "batch_size": 1, "workers": 0,
                               "show_images": 1}  # checked by load_params with the types


@dataclass
class CropStudy:
    """What ``run_study`` produces.

    crops: one row per crop: strategy, id (scene), file, x1 y1 x2 y2, score, side (sqrt of area, px),
        rel_side (side / image side), objectness (share of object pixels), bucket (poor|coarse|precise).
    summary: one row per strategy (index = strategy name), see ``summarise``.
    """

    params: CropStudyParams
    run_dir: Path
    scene_path: Path
    scenes: object  # coarsecrop.data.scenes.SceneSet
    manifests: dict[str, Path]
    jobs: dict[str, dict]
    crops: pd.DataFrame
    summary: pd.DataFrame
    metrics: dict


# ---------------------------------------------------------------- the run folder and the scenes

def resolve_run_dir(params: CropStudyParams) -> Path:
    """``params.out``, or runs/01_crops/<run id> under the project root."""
    if params.out:
        return Path(params.out).resolve()
    return default_run_dir("01_crops", params)


def prepare_scenes(params: CropStudyParams, run_dir: Path) -> Path:
    """The data set to crop: ``params.scenes``, or the built-in scenes generated into run_dir/scenes."""
    return scenes_or_builtin(params.scenes, run_dir / "scenes", params.num_images, params.seed, params.image_size,
                             version=params.scene_version)


# ---------------------------------------------------------------- running the strategies

def strategy_params_for(name: str, params: CropStudyParams) -> dict:
    """The parameters a strategy gets: the study's anchor settings when the strategy takes them (ours and
    its variants), then ``strategy_params[name]``. Unknown names fail listing the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} in 'strategies'; valid: {', '.join(STRATEGIES)}")
    accepted = strategy_parameters(name)
    out = {}
    for ours, theirs in ANCHOR_KEYS.items():
        value = getattr(params, ours)
        if theirs in accepted and value is not None:
            out[theirs] = list(value) if isinstance(value, (list, tuple)) else value
    out.update(params.strategy_params.get(name, {}))
    return out


def run_strategies(params: CropStudyParams, scene_path: Path, run_dir: Path, progress: bool = False
                   ) -> tuple[dict[str, Path], dict[str, dict]]:
    """Run every strategy through the crop job into run_dir/crops/<strategy>; a finished job is reused
    (the job resumes / skips its finished shards). Returns manifest folders and job summaries (with wall s)."""
    unknown = [k for k in params.strategy_params if k not in params.strategies]
    if unknown:
        raise ValueError(f"strategy_params names {unknown}, which are not in strategies {params.strategies}")
    manifests, jobs = {}, {}
    for name in params.strategies:
        out = run_dir / "crops" / name
        t0 = time.perf_counter()
        summary = run_crop_job(
            scenes=str(scene_path), images=params.images, split=params.split, out=str(out), strategy=name,
            n=params.n, strategy_params=strategy_params_for(name, params), checkpoint=params.checkpoint,
            backbone=params.backbone, device=params.device, batch_size=params.batch_size,
            workers=params.workers, shard_size=256, progress=progress,
        )
        summary = dict(summary or {})
        summary["study_seconds"] = time.perf_counter() - t0
        manifests[name], jobs[name] = out, summary
        print(f"crops {name}: {summary.get('done')} images, {summary.get('skipped')} skipped, "
              f"{summary.get('boxes')} boxes in {summary['study_seconds']:.1f} s", flush=True)
    return manifests, jobs


# ---------------------------------------------------------------- crop quality

def crop_table(manifests: dict[str, Path], scenes) -> pd.DataFrame:
    """One row per crop of every strategy, with its objectness against the scene's GT masks."""
    by_id = {str(s.id): s for s in scenes.scenes}
    masks: dict[str, tuple] = {}
    rows = []
    for name, folder in manifests.items():
        for rec in read_manifest(folder).records():
            if "skipped" in rec or not rec["boxes"]:
                continue
            key = str(rec["id"])
            scene = by_id.get(key)
            boxes = torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4)
            if scene is not None and scene.annotated:
                if key not in masks:
                    masks[key] = labelled_masks(scene)
                obj = crop_objectness(boxes, *masks[key]).tolist()
            else:
                obj = [float("nan")] * len(boxes)
            side_img = max(rec["width"], rec["height"])
            for (x1, y1, x2, y2), score, o in zip(rec["boxes"], rec["scores"], obj):
                side = float(np.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0)))
                rows.append({"strategy": name, "id": key, "file": rec["file"], "x1": x1, "y1": y1, "x2": x2,
                             "y2": y2, "score": score, "side": side, "rel_side": side / side_img,
                             "objectness": o})
    df = pd.DataFrame(rows, columns=["strategy", "id", "file", "x1", "y1", "x2", "y2", "score", "side",
                                     "rel_side", "objectness"])
    obj = df["objectness"]
    df["bucket"] = np.where(obj.isna(), None, np.where(obj < POOR_BELOW, "poor",
                                                        np.where(obj > PRECISE_ABOVE, "precise", "coarse")))
    return df


def summarise(crops: pd.DataFrame, jobs: dict[str, dict], strategies: list[str]) -> pd.DataFrame:
    """Per strategy: images, crops per image, mean objectness, poor/coarse/precise shares (fractions),
    crop side percentiles (px and relative to the image side), job images/s."""
    rows = []
    for name in strategies:
        df = crops[crops["strategy"] == name]
        job = jobs.get(name, {})
        images = int(job.get("done", df["id"].nunique()))
        obj = df["objectness"].dropna()
        buckets = quality_buckets(np.array(obj, dtype=np.float64)) if len(obj) else {}
        seconds = float(job.get("study_seconds", float("nan")))
        rows.append({
            "strategy": name,
            "images": images,
            "skipped": int(job.get("skipped", 0)),
            "crops": int(len(df)),
            "crops_per_image": len(df) / images if images else float("nan"),
            "mean_objectness": float(obj.mean()) if len(obj) else float("nan"),
            "poor": buckets.get("poor", float("nan")),
            "coarse": buckets.get("coarse", float("nan")),
            "precise": buckets.get("precise", float("nan")),
            **{f"side_p{q}": float(df["side"].quantile(q / 100)) if len(df) else float("nan")
               for q in (10, 50, 90)},
            "rel_side_p50": float(df["rel_side"].median()) if len(df) else float("nan"),
            "seconds": seconds,
            "images_per_s": images / seconds if images and seconds > 0 else float("nan"),
        })
    return pd.DataFrame(rows).set_index("strategy")


# ---------------------------------------------------------------- the paper's numbers

def objectness_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 2 style: ours beside the paper's objectness, plus the buckets and the median crop side."""
    paper = paper_objectness()
    table = pd.DataFrame({
        "strategy": [label(s) for s in summary.index],
        "objectness, ours (%)": (100 * summary["mean_objectness"]).round(1),
        f"objectness, {PAPER_LABEL} (%)": [paper.get(s, np.nan) for s in summary.index],
        "poor (%)": (100 * summary["poor"]).round(1),
        "coarse (%)": (100 * summary["coarse"]).round(1),
        "precise (%)": (100 * summary["precise"]).round(1),
        "median crop side (px)": summary["side_p50"].round(0),
        "crops / image": summary["crops_per_image"].round(2),
    })
    return table.set_index("strategy")


def style_table(table: pd.DataFrame):
    """The objectness table for display: one decimal, '-' where the paper has no value."""
    formats = {c: "{:.1f}" for c in table.columns if "(%)" in c}
    formats["median crop side (px)"] = "{:.0f}"
    formats["crops / image"] = "{:.2f}"
    return table.style.format(formats, na_rep="-")


def paper_claims(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims about crop quality, each checked against our numbers (holds: yes / no / n/a).

    Claims about strategies that were not run are left out. The paper's claims about Our-Crop are checked
    for ours and for each variant. Thresholds: a reported value agrees when ours is within 10 percentage
    points of it (also Grid-Crop's "about 40%" Poor); "varying sizes" holds when the 90th percentile crop
    side is at least 4x the 10th (two anchor sizes apart)."""
    paper = paper_objectness()
    s = summary
    have = set(s.index)
    rows = []

    def add(claim, paper_says, ours_says, holds):
        rows.append({"claim": claim, "paper": paper_says, "ours": ours_says,
                     "holds": "n/a" if holds is None else ("yes" if holds else "no")})

    def pct(x):
        return f"{100 * x:.1f}%"

    for name in ("gt", "gtpad", "poor", "image", "grid", "ours"):
        if name in have and name in paper:
            ours = 100 * s.loc[name, "mean_objectness"]
            add(f"mean objectness of {label(name)} (Table 2)", f"{paper[name]:.1f}%", f"{ours:.1f}%",
                bool(abs(ours - paper[name]) <= 10))
    for name in (k for k in s.index if is_ours(k)):
        lab = label(name)
        o = s.loc[name, "mean_objectness"]
        if {"grid", "image"} <= have:
            g, i = s.loc["grid", "mean_objectness"], s.loc["image", "mean_objectness"]
            add(f"{lab} has more objectness than Grid-Crop and Image-Crop (Table 2)",
                "52.6% vs 39.8% and 36.4%", f"{pct(o)} vs {pct(g)} and {pct(i)}", bool(o > g and o > i))
        if "gt" in have:
            g = s.loc["gt", "mean_objectness"]
            add(f"{lab} is coarser than GT-Crop: less objectness (Table 2)", "52.6% vs 100%",
                f"{pct(o)} vs {pct(g)}", bool(o < g))
        for other in ("selective_search", "edgebox"):
            if other in have:
                add(f"{lab} has fewer Precise crops than {label(other)} (Fig. 3)", "yes (figure)",
                    f"{pct(s.loc[name, 'precise'])} vs {pct(s.loc[other, 'precise'])}",
                    bool(s.loc[name, "precise"] < s.loc[other, "precise"]))
        p10, p50, p90 = (s.loc[name, k] for k in ("side_p10", "side_p50", "side_p90"))
        add(f"{lab} gives crops of varying sizes (Sec. 6): side p90 >= 4 x p10", "yes (text)", f"sides p10/p50/p90 = {p10:.0f}/{p50:.0f}/{p90:.0f} px",
            bool(p90 >= 4 * p10))
    if "grid" in have:
        add("about 40% of Grid-Crop's crops are Poor, < 20% objectness (Sec. 1)", "about 40%",
            pct(s.loc["grid", "poor"]), bool(abs(s.loc["grid", "poor"] - 0.4) <= 0.1))
    return pd.DataFrame(rows, columns=["claim", "paper", "ours", "holds"])


# ---------------------------------------------------------------- figures

def _load_rgb(scene) -> np.ndarray:
    image, _ = load_image(scene.file)
    return image  # uint8 [H, W, 3]


def example_scenes(study: CropStudy, k: int | None = None) -> list:
    """The first ``k`` scenes that every strategy cropped (the same images in every figure)."""
    k = study.params.show_images if k is None else k
    ids = None
    for name in study.manifests:
        got = set(study.crops.loc[study.crops["strategy"] == name, "id"])
        ids = got if ids is None else ids & got
    chosen = [s for s in study.scenes.scenes if str(s.id) in (ids or set())]
    return chosen[:k]


def _draw_boxes(ax, df: pd.DataFrame, color: str = "yellow", numbered: bool = False) -> None:
    for rank, row in enumerate(df.itertuples(), start=1):
        ax.add_patch(Rectangle((row.x1, row.y1), row.x2 - row.x1, row.y2 - row.y1, fill=False,
                               edgecolor=color, linewidth=1.8))
        if numbered:
            ax.text(row.x1 + 2, row.y1 + 2, str(rank), color="black", fontsize=7, va="top",
                    bbox=dict(facecolor=color, edgecolor="none", pad=0.5))


def _nothing_to_show(text: str) -> plt.Figure:
    """A small figure that says why a figure is empty (a run whose parameters leave it nothing to draw)."""
    fig, ax = plt.subplots(figsize=(6, 0.8))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    return fig


def plot_crops_grid(study: CropStudy, strategies: list[str] | None = None, k: int | None = None) -> plt.Figure:
    """Fig. 1 style: the crops of each strategy (rows) on the same images (columns)."""
    strategies = strategies or list(study.manifests)
    scenes = example_scenes(study, k)
    if not strategies or not scenes:
        return _nothing_to_show("no image that every strategy of this run cropped" if strategies else
                                "no strategy in this run")
    fig, axes = plt.subplots(len(strategies), len(scenes), figsize=(2.1 * len(scenes) + 0.4, 2.0 * len(strategies)),
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for c, scene in enumerate(scenes):
        image = _load_rgb(scene)
        for r, name in enumerate(strategies):
            ax = axes[r, c]
            ax.imshow(image)
            df = study.crops[(study.crops["strategy"] == name) & (study.crops["id"] == str(scene.id))]
            _draw_boxes(ax, df, color=matplotlib.colors.to_hex(colors(r % 10)), numbered=True)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label(name).replace(", ", ",\n"), fontsize=10)
            if r == 0:
                ax.set_title(f"scene {scene.id}", fontsize=10)
    fig.tight_layout()
    return fig


def objectness_strategies(study: CropStudy) -> list[str]:
    """The strategies of the study that expose ``objectness_maps`` (ours and its variants)."""
    return [n for n in study.manifests if hasattr(STRATEGIES[n], "objectness_maps")]


def make_study_strategy(name: str, params: CropStudyParams):
    """The strategy object exactly as the crop job builds it (same backbone, checkpoint, parameters)."""
    return build_strategy(name, resolve_device(params.device), params.n, params.backbone, params.checkpoint,
                          strategy_params_for(name, params))


def plot_objectness_maps(study: CropStudy, strategies: list[str] | None = None, k: int | None = None,
                         top: int = 5) -> plt.Figure:
    """Fig. 4 style: per image (rows), the normalised objectness map over the image (red high, blue low),
    then each map-based strategy's top boxes (from its manifest). Strategies whose maps are identical
    (same phi) share one map column; a strategy with a different map gets its own."""
    strategies = strategies if strategies is not None else objectness_strategies(study)
    scenes = example_scenes(study, k)
    if not strategies or not scenes:
        return _nothing_to_show("no strategy of this run scores an objectness map (ours and its variants do)"
                                if not strategies else "no image that every strategy of this run cropped")
    images = [_load_rgb(s) for s in scenes]
    tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).contiguous() for im in images]
    columns = []  # ("map", title, maps) or ("boxes", strategy name, None)
    for name in strategies:
        maps = make_study_strategy(name, study.params).objectness_maps(tensors)
        shown = [c for c in columns if c[0] == "map"]
        if not shown or not all(torch.equal(a, b) for a, b in zip(shown[-1][2], maps)):
            columns.append(("map", f"map ({label(name)})" if shown else "objectness map", maps))
        columns.append(("boxes", name, None))
    fig, axes = plt.subplots(len(scenes), len(columns), figsize=(2.5 * len(columns), 2.5 * len(scenes)),
                             squeeze=False)
    for c, (kind, what, maps) in enumerate(columns):
        for r, scene in enumerate(scenes):
            ax = axes[r, c]
            ax.imshow(images[r])
            if kind == "map":
                ax.imshow(maps[r].detach().float().cpu().numpy(), cmap="jet", alpha=0.55, vmin=0, vmax=1)
            else:
                df = study.crops[(study.crops["strategy"] == what) & (study.crops["id"] == str(scene.id))]
                _draw_boxes(ax, df.sort_values("score", ascending=False).head(top), color="yellow",
                            numbered=True)
            ax.set_xticks([]), ax.set_yticks([])
        title = what if kind == "map" else f"{label(what)}: top {top}"
        axes[0, c].set_title(title.replace(", ", ",\n"), fontsize=10)
    fig.tight_layout()
    return fig


def plot_quality_bars(summary: pd.DataFrame) -> plt.Figure:
    """Fig. 3 style: the shares of Poor (< 20%), Coarse and Precise (> 80%) crops per strategy."""
    shares = 100 * summary[["poor", "coarse", "precise"]].dropna()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shares) + 1.4))
    left = np.zeros(len(shares))
    labels = [label(s) for s in shares.index]
    colors = {"poor": "#d62728", "coarse": "#2ca02c", "precise": "#1f77b4"}
    names = {"poor": "Poor (< 20%)", "coarse": "Coarse", "precise": "Precise (> 80%)"}
    for col in ("poor", "coarse", "precise"):
        vals = shares[col].to_numpy()
        ax.barh(labels, vals, left=left, color=colors[col], label=names[col])
        for y, (x0, v) in enumerate(zip(left, vals)):
            if v >= 6:
                ax.text(x0 + v / 2, y, f"{v:.0f}", ha="center", va="center", color="white", fontsize=9)
        left += vals
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("share of crops (%)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def plot_crop_sizes(study: CropStudy) -> plt.Figure:
    """The sizes of the chosen crops per strategy (side = sqrt of area, log scale), with the anchor sizes
    marked: the rule of Sec. 3.3 taken literally picks the smallest anchors (the 'trap')."""
    df = study.crops.copy()
    order = [s for s in study.manifests if (df["strategy"] == s).any()]
    df["label"] = df["strategy"].map(label)
    labels = [label(s) for s in order]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(order) + 1.6))
    sns.boxplot(data=df, y="label", x="side", order=labels, ax=ax, color="#cfd8e3", fliersize=0, width=0.6)
    sns.stripplot(data=df, y="label", x="side", order=labels, ax=ax, size=2, alpha=0.35, color="#333333",
                  jitter=0.25)
    ax.set_xscale("log", base=2)
    for size in study.params.anchor_sizes:
        ax.axvline(size, color="#d62728", linestyle="--", linewidth=1)
    ticks = sorted({int(s) for s in study.params.anchor_sizes} | {2 ** k for k in range(1, 13)
                                                                  if df["side"].min() / 2 <= 2 ** k <= df["side"].max() * 1.5})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("crop side = sqrt(width x height), px (log scale); red dashes: anchor sizes")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- metrics

def build_metrics(study: CropStudy, wall_s: float) -> dict:
    """The content of metrics.json: metrics per strategy, the paper's values, parameters, provenance."""
    per = {name: {k: json_safe(v) for k, v in row.items()} for name, row in study.summary.iterrows()}
    strategy_config = {}
    for name, folder in study.manifests.items():
        config = read_manifest(folder).config
        strategy_config[name] = {"params": config.get("params"), "backbone": config.get("backbone"),
                                 "manifest": str(folder)}
    return json_safe({
        "notebook": "01_crops",
        "metrics": per,
        "strategies": strategy_config,
        "paper": {"table2_objectness_percent": paper_objectness(), "source": "Table 2 (VOC2007, BYOL phi)"},
        "claims": study_claims_records(study.summary),
        "params": dataclasses.asdict(study.params),
        "run_dir": str(study.run_dir),
        "scenes": str(study.scene_path),
        "provenance": provenance(resolve_device(study.params.device), wall_s),
    })


def study_claims_records(summary: pd.DataFrame) -> list[dict]:
    return paper_claims(summary).to_dict(orient="records")


# ---------------------------------------------------------------- the whole study

def run_study(params: CropStudyParams, progress: bool = False) -> CropStudy:
    """Scenes -> every strategy's crop job -> per-crop objectness -> summary -> run_dir/metrics.json."""
    t0 = time.perf_counter()
    run_dir = resolve_run_dir(params)
    run_dir.mkdir(parents=True, exist_ok=True)
    scene_path = prepare_scenes(params, run_dir)
    scenes = open_scenes(scene_path, images=params.images, split=params.split)
    manifests, jobs = run_strategies(params, scene_path, run_dir, progress=progress)
    crops = crop_table(manifests, scenes)
    summary = summarise(crops, jobs, params.strategies)
    study = CropStudy(params=params, run_dir=run_dir, scene_path=scene_path, scenes=scenes,
                      manifests=manifests, jobs=jobs, crops=crops, summary=summary, metrics={})
    study.metrics = build_metrics(study, time.perf_counter() - t0)
    return study


def save_metrics(study: CropStudy, wall_s: float | None = None) -> Path:
    """Write run_dir/metrics.json atomically (call last, after the figures: its presence marks a
    complete run). ``wall_s`` replaces the wall time measured by run_study (e.g. the whole notebook)."""
    if wall_s is not None:
        study.metrics["provenance"]["wall_time_s"] = round(wall_s, 2)
    path = study.run_dir / "metrics.json"
    write_json(path, study.metrics)
    return path
