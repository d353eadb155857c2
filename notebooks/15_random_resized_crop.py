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
# # With and without RandomResizedCrop (Table 15)
#
# **The paper's claim** (Sec. 5.4, Table 15; BYOL, VOC2007): RandomResizedCrop matters less on Our-Crop's
# pseudo-images than on whole images: dropping it costs Image-Crop 9.1 AP50 but Our-Crop only 4.5, because
# the crops already do part of RandomResizedCrop's work.
#
# **Here**: BYOL on Image-Crop and on Our-Crop (coarse), with the method's RandomResizedCrop and with a plain
# resize of the whole pseudo-image instead; at the cpu-full preset (scenes v3) and the paper presets also the
# paper's own rule taken literally, Our-Crop (literal), so that the claims are tested on the paper's method
# and not only on our variant (the other presets have no runs of it: its rows and claims show "no runs").

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
                              source=preset or "notebooks/15_random_resized_crop.py")
ROWS = [T.Row("Image", {"strategy": "image", "rrc": True}, {"crops": "image", "rrc": True}),
        T.Row("Image w/o RRC", {"strategy": "image", "rrc": False}, {"crops": "image", "rrc": False})]
for strategy, label in (("ours_coarse", "Our (coarse)"), ("ours", "Our (literal)")):
    ROWS += [T.Row(label, {"strategy": strategy, "rrc": True}, {"crops": "ours", "rrc": True}),
             T.Row(f"{label} w/o RRC", {"strategy": strategy, "rrc": False}, {"crops": "ours", "rrc": False})]
row = {r.label: r for r in ROWS}
CLAIMS = T.claims(row, "table15", "AP50_bbox", [("Image", "Image w/o RRC")]
                  + [pair for ours in ("Our (coarse)", "Our (literal)")
                     for pair in ((ours, f"{ours} w/o RRC"), (f"{ours} w/o RRC", "Image w/o RRC"))])
result = T.chapter("table15", ROWS, CLAIMS, params)
display(Markdown(T.header_markdown(result)))

# %% [markdown]
# ## The table
#
# Paper columns: Table 15 (BYOL, VOC07 AP50) in %, and the drop from removing RandomResizedCrop.

# %%
T.side_by_side(result["summaries"], ROWS, "table15", ["AP50_bbox", "drop"],
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
