"""The paper's reported numbers (coarsecrop/reference/paper_tables.yaml, package data), read once.

    paper_table("table15")                  # one table as a DataFrame
    paper_objectness()                      # Table 2: mean objectness (%) per crop strategy
    paper_transfer()                        # our transfer tasks' columns of the paper's tables
"""

from __future__ import annotations

import functools
import importlib.resources

import pandas as pd
import yaml

# The paper's column for each transfer task, for setting its numbers beside ours: different data, scale and
# backbone, so only the direction of a gap is comparable, not the values.
TRANSFER_COLUMNS = {
    "multilabel": ("table1", "mAP", "VOC07 multi-label, finetuned (R50, 800 ep on VOC07)"),
    "linear": ("table1", "mAP_linear", "VOC07 multi-label, linear (R50, 800 ep on VOC07)"),
    "detection": ("table6", "VOC_AP", "VOC07+12 Faster R-CNN R50-C4 AP (400 ep on COCO)"),
    "instance": ("table4", "AP_seg", "COCO Mask R-CNN R50-C4 AP^seg (400 ep on COCO)"),
    "semantic": ("table6", "city_mIoU", "Cityscapes PSANet mIoU (400 ep on COCO)"),
}


@functools.lru_cache(maxsize=1)
def _tables() -> dict:
    text = importlib.resources.files("coarsecrop").joinpath("reference/paper_tables.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def paper_table(key: str) -> pd.DataFrame:
    """Table ``key`` ("table1" ... "table15") as a DataFrame, one line per row of the paper's table."""
    return pd.DataFrame(_tables()[key]["rows"])


def paper_objectness() -> dict[str, float]:
    """Table 2 of the paper: mean objectness (%) per strategy on VOC2007, BYOL-pretrained phi."""
    return {row["crops"]: float(row["objectness"]) for row in _tables()["table2"]["rows"]}


def paper_transfer() -> pd.DataFrame:
    """The paper's numbers for our transfer tasks: one line per (task, method, crops) with its source."""
    out = []
    for task, (table_name, column, source) in TRANSFER_COLUMNS.items():
        for row in _tables()[table_name]["rows"]:
            if row.get(column) is None or "crops" not in row:
                continue
            out.append({"task": task, "method": row.get("method"), "crops": row["crops"],
                        "value": row[column], "source": f"{table_name}: {source}"})
    return pd.DataFrame(out)
