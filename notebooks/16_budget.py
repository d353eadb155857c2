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
# # The pretraining budget (Table 10)
#
# **The paper's claim** (Sec. 5, Table 10; COCO, Mask R-CNN R50-FPN): Our-Crop needs less pretraining.
# With a quarter of the default 400 epochs it still beats Image-Crop at the full 400 (BYOL 39.2 against 38.8
# AP), and half the epochs is nearly as good as all of them (40.1 against 40.2).
#
# **Here**: Image-Crop and Our-Crop (coarse) with half and all of the preset's epochs, both methods; at the
# cpu-full preset (scenes v3) also the paper's own rule taken literally, Our-Crop (literal), so that the
# budget claims are tested on the paper's method and not only on our variant (the other presets have no
# runs of it: its rows and claims show "no runs" there).

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
                              source=preset or "notebooks/16_budget.py")
ROWS = []
for m in ("byol", "moco_v2"):
    name = T.METHOD_NAMES[m]
    for strategy, label, paper in (("image", "Image", "image"), ("ours", "Our (literal)", "ours"),
                                   ("ours_coarse", "Our (coarse)", "ours")):
        for budget, epochs in (("full", 400), ("half", 200)):
            has_paper = not (strategy == "image" and budget == "half")  # the paper has no half Image-Crop row
            ROWS.append(T.Row(f"{name} {label}, {budget}", {"method": m, "strategy": strategy, "budget": budget},
                              {"crops": paper, "epochs": epochs} if has_paper else None))
row = {r.label: r for r in ROWS}
CLAIMS = []
for m, column in (("BYOL", "BYOL_AP_bbox"), ("MoCo-v2", "MoCo-v2_AP_bbox")):
    CLAIMS += T.claims(row, "table10", column, [pair for ours in ("Our (coarse)", "Our (literal)")
                                                for pair in ((f"{m} {ours}, half", f"{m} Image, full"),
                                                             (f"{m} {ours}, full", f"{m} {ours}, half"))])
result = T.chapter("table10", ROWS, CLAIMS, params)
display(Markdown(T.header_markdown(result)))

# %% [markdown]
# ## The table
#
# Paper columns: Table 10's COCO box AP for BYOL and MoCo-v2 (the paper's 'half' is 200 of 400 epochs; it
# has no Image-Crop row at half). Ours: "full" is the preset's epochs, "half" half of them.

# %%
T.side_by_side(result["summaries"], ROWS, "table10", ["BYOL_AP_bbox", "MoCo-v2_AP_bbox"],
               (params.measure, "objectness"))

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
