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
# # Objectness against accuracy (Table 2, Fig. 5)
#
# **The paper's claim** (Sec. 3.2, Table 2 and Fig. 5; BYOL, VOC2007): accuracy is not a monotone function
# of how much object a crop holds. GT-Crop (100% objectness) is beaten by GTPad-Crop (48.2%), Poor-Crop
# (20.1%) is the worst, and the strategies in the middle range (Grid 39.8%, Our-Crop 52.6%) do well: "coarse
# is better". Fig. 5 plots accuracy against objectness.
#
# **Here**: every strategy of the crop chapter pretrains BYOL on the built-in scenes; objectness is measured
# on the very pseudo-images each run trained on (share of object pixels under the GT masks). GT-Crop and
# GTPad-Crop are a scene's 5 largest boxes (N = 5, as every strategy), not every box as the paper's
# (chapter "Table 1" says why); accuracy is the
# object probe and mAP^l (the paper's linear multi-label probe). The paper's panel of Fig. 5 is drawn from its
# Table 2 (its units: AP50 on VOC07).

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
                              source=preset or "notebooks/11_objectness.py")
NAMES = {"gt": "GT", "gtpad": "GTPad", "poor": "Poor", "image": "Image", "grid": "Grid", "ours": "Our (literal)",
         "ours_coarse": "Our (coarse)", "random": "Random boxes", "selective_search": "Selective search",
         "edgebox": "EdgeBox"}
PAPER_CROPS = {"ours_coarse": "ours"}
IN_PAPER = ("gt", "gtpad", "poor", "image", "grid", "ours")  # Table 2's rows
ROWS = [T.Row(NAMES[s], {"method": "byol", "strategy": s},
              {"crops": PAPER_CROPS.get(s, s)} if PAPER_CROPS.get(s, s) in IN_PAPER else None) for s in NAMES]
row = {r.label: r for r in ROWS}
CLAIMS = T.claims(row, "table2", "mAP_linear", [("GTPad", "GT"), ("Grid", "Poor"), ("Image", "Poor"),
                                                ("Our (literal)", "GT"), ("Our (coarse)", "GT"),
                                                ("Our (coarse)", "Image")])
result = T.chapter("table2", ROWS, CLAIMS, params)
display(Markdown(T.header_markdown(result)))

# %% [markdown]
# ## The table
#
# Paper columns: its Table 2 (BYOL, VOC07) in %, objectness included. Ours: the object probe, the
# measured objectness of each run's pseudo-images and mAP^l (mean ± sd over seeds).

# %%
T.side_by_side(result["summaries"], ROWS, "table2", ["AP50_bbox", "mAP_linear", "objectness"],
               (params.measure, "objectness"))

# %%
fig = T.plot_objectness(result, ROWS, params.measure, paper_key="table2", paper_column="AP50_bbox")
T.figure(fig, params, "objectness_accuracy")

# %% [markdown]
# ## The paper's claims, checked
#
# For each claim: the paper's difference (percentage points, in the paper's column named below), ours in
# the object probe and then in mAP^l, twice its standard error over seeds, and the verdict ("agrees" only
# when our difference has the paper's sign and is larger than twice its standard error, with at least three
# seeds per row).

# %%
T.show_claims(result, params)
