"""Tables and figures of a transfer run (notebooks/03_transfer.py): ours, and the paper's beside."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def table(records: dict) -> pd.DataFrame:
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


# The paper's column for each task (coarsecrop/reference/paper_tables.yaml), for setting its numbers beside
# ours: different data, scale and backbone, so only the direction of a gap is comparable, not the values.
PAPER = {
    "multilabel": ("table1", "mAP", "VOC07 multi-label, finetuned (R50, 800 ep on VOC07)"),
    "linear": ("table1", "mAP_linear", "VOC07 multi-label, linear (R50, 800 ep on VOC07)"),
    "detection": ("table6", "VOC_AP", "VOC07+12 Faster R-CNN R50-C4 AP (400 ep on COCO)"),
    "instance": ("table4", "AP_seg", "COCO Mask R-CNN R50-C4 AP^seg (400 ep on COCO)"),
    "semantic": ("table6", "city_mIoU", "Cityscapes PSANet mIoU (400 ep on COCO)"),
}


def paper_reference() -> pd.DataFrame:
    """The paper's numbers for our tasks: one line per (task, method, crops) with its source."""
    from importlib import resources

    import yaml

    tables = yaml.safe_load(resources.files("coarsecrop").joinpath("reference/paper_tables.yaml").read_text())
    out = []
    for task, (table_name, column, source) in PAPER.items():
        for row in tables[table_name]["rows"]:
            if row.get(column) is None or "crops" not in row:
                continue
            out.append({"task": task, "method": row.get("method"), "crops": row["crops"],
                        "value": row[column], "source": f"{table_name}: {source}"})
    return pd.DataFrame(out)


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


def save_figure(fig: plt.Figure, path, dpi: int = 110):
    """Write ``fig`` to ``path`` (PNG), close it (so a notebook does not show it twice) and return it as an
    IPython image for display and myst-nb glue."""
    from IPython.display import Image

    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Image(data=open(path, "rb").read(), format="png")
