# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Our-Crop against proposals (Tables 12 and 13)
#
# **The paper's claim** (Sec. 5.2, Tables 12 and 13): with 5 boxes per image each, Our-Crop beats the
# unsupervised proposal methods, selective search and EdgeBox, on COCO and on VOC, for BYOL and MoCo-v2,
# and all three beat Image-Crop on detection. (On VOC's linear probe the order is mixed: BYOL with EdgeBox
# falls below Image-Crop, 30.5 against 39.8.)
#
# **Here**: selective search (OpenCV, fast mode) and EdgeBox (edges computed in code; the structured-forest
# model cannot be downloaded, see the crop chapter) against Our-Crop, literal and coarse, both methods.

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from coarsecrop.studies import chapters as T
from coarsecrop.params import load_notebook_params

_before = set(globals())

# %% tags=["parameters"]
runs_preset = "quick"  # the preset of this build's sweep runs (make book runs the sweeps at its preset)
reference_presets = ["cpu-full", "gpu", "cpu-full-v1"]  # committed results (results/<preset>/, where it exists)
measure = "linear"  # linear | knn: the object probe the claims are checked on
out = None  # run folder (set by coarsecrop.book)
preset = ""  # preset file (set by coarsecrop.book)

# %% tags=["hide-input"]
params = load_notebook_params(T.ChapterParams, globals(), _before,
                              source=preset or "notebooks/12_proposals.py")
NAMES = {"image": "Image", "selective_search": "Selective search", "edgebox": "EdgeBox", "ours": "Our (literal)",
         "ours_coarse": "Our (coarse)"}
PAPER_CROPS = {"ours_coarse": "ours"}
ROWS = [T.Row(f"{T.METHOD_NAMES[m]} {NAMES[s]}", {"method": m, "strategy": s},
              {"method": T.METHOD_NAMES[m], "crops": PAPER_CROPS.get(s, s)})
        for m in ("byol", "moco_v2") for s in NAMES]
row = {r.label: r for r in ROWS}
PAIRS = [("Our (coarse)", "Selective search"), ("Our (coarse)", "EdgeBox"), ("Our (literal)", "Selective search"),
         ("Selective search", "Image")]
CLAIMS = T.claims(row, "table13", "mAP_linear", [(f"{m} {a}", f"{m} {b}") for m in ("BYOL", "MoCo-v2")
                                                 for a, b in PAIRS])
result = T.chapter("table12_13", ROWS, CLAIMS, params)
display(Markdown(T.header_markdown(result)))

# %% [markdown]
# ## The table
#
# Paper columns: Table 13 (VOC07: detection AP50, linear mAP^l) and Table 12's COCO box AP, in %.

# %%
table = T.side_by_side(result["summaries"], ROWS, "table13", ["AP50_bbox", "mAP_linear"],
               (params.measure, "objectness"))
coco = {r.label: T.paper_value("table12", r.paper, "AP_bbox") for r in ROWS}
table.insert(2, "paper COCO AP_bbox", [T.fmt(coco.get(i, float("nan")), float("nan"), scale=1) for i in table.index])
table

# %%
T.figure(T.plot_rows(result, ROWS, params.measure), params, "accuracy")

# %% [markdown]
# ## The paper's claims, checked
#
# For each claim: the paper's difference (percentage points, in the paper's column named below), ours in
# the object probe and then in mAP^l, twice its standard error over seeds, and the verdict ("agrees" only
# when our difference has the paper's sign and is larger than twice its standard error, with at least three
# seeds per row).

# %%
T.show_claims(result, params)
