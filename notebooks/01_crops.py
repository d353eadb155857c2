# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
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
# # Crops: what each cropping strategy cuts out
#
# The paper's pipeline crops a few (N = 5) regions out of every uncurated scene image and treats them as
# pseudo object-centric images for self-supervised learning. Its claim (Sec. 1, Table 2, Fig. 3) is that the
# crops should contain objects only *coarsely*: crops with too little object (Poor, < 20% object pixels)
# or too much (Precise, > 80%, like GT boxes) pretrain worse than coarse ones. Our-Crop (Sec. 3.3) scores
# 12 anchors per feature location (4 sizes x 3 ratios) by the mean of an objectness map (the channel
# sum of a ResNet's last feature map, min-max normalised, upsampled), applies NMS and keeps the top 5.
#
# This notebook runs every strategy through the real crop job (the same code as `coarsecrop crops`) on
# the same scenes, scores each crop against the ground-truth instance masks, and draws the paper's
# Figs. 1, 3 and 4 and Table 2 for our data. Run it cell by cell in JupyterLab and change a parameter,
# or let `python -m coarsecrop.book run --preset quick` run it with a preset from `params/`.

# %%
import time
from pathlib import Path

from myst_nb import glue

from coarsecrop.studies import crops as cs
from coarsecrop.studies.figures import save_figure
from coarsecrop.params import load_notebook_params

_t0 = time.perf_counter()
_before = set(globals())  # the next cell's names are the parameters (checked below)

# %% tags=["parameters"]
# Scenes: None = generate the built-in synthetic scenes (num_images of image_size px, seed) into the
# run folder; or a COCO json / VOC root / image folder (images: COCO image root; split: train | val).
scenes = None
images = None
split = None
num_images = 200
image_size = 256
seed = 0
scene_version = 1  # the built-in scenes' generator (1, 2 or 3) when scenes is None
# Strategies, in table order (coarsecrop.crops.strategies.STRATEGIES has all names).
strategies = ["image", "gt", "gtpad", "poor", "grid", "random", "selective_search", "edgebox", "ours",
              "ours_coarse", "ours_zscore"]
n = 5  # crops per image (the paper's N)
# phi for the objectness map: a torchvision ResNet, random init (the paper's s5) unless a checkpoint is given.
backbone = "resnet50"
checkpoint = None
# Anchors: the paper's sizes (for ~640-px COCO images) and ratios; scale the sizes with the image side.
anchor_sizes = [32, 64, 128, 256]
anchor_ratios = [0.5, 1.0, 2.0]
nms_iou = None  # None: the strategy's documented default
strategy_params = {}  # extra parameters per strategy, e.g. {"gtpad": {"pad": 0.3}}
device = "auto"  # auto | cpu | cuda
batch_size = 8
workers = 0
show_images = 3  # images in the Fig. 1 / Fig. 4 style figures
out = None  # run folder; None means runs/01_crops/<hash of the parameters>
preset = ""  # set by `python -m coarsecrop.book` to the preset file used

# %% [markdown]
# The parameters are checked against `coarsecrop.studies.crops.CropStudyParams`: a name that is not a
# parameter (a typo in a preset file or in the cell above) or a value of the wrong type stops the notebook
# here, with the list of valid names.

# %%
params = load_notebook_params(cs.CropStudyParams, globals(), _before,
                              source=preset or ("the parameters cell of notebooks/01_crops.py or papermill's "
                                                "-p / -y / -f values"))
study = cs.run_study(params)
print(f"run folder: {study.run_dir}")
print(f"scenes: {study.scene_path} ({len(study.scenes)} images)")
glue("preset", f"{Path(preset).parent.name} ({preset})" if preset else "(notebook defaults)", display=False)
glue("num_images", len(study.scenes), display=False)
glue("backbone", params.backbone + (" from " + params.checkpoint if params.checkpoint else ", random init"),
     display=False)
glue("anchor_sizes", "/".join(str(s) for s in params.anchor_sizes), display=False)
study.summary

# %% [markdown]
# ## Fig. 1: the crops of each strategy on the same images
#
# Each row is a strategy, each column a scene; the numbers are the crops' ranks. The paper's Fig. 1 shows
# Image-, GT- and Grid-Crop on one image: the image is one crop, GT boxes fit the objects exactly, and the
# grid cuts 2 rows of 3 and 2 cells regardless of content.

# %%
glue("fig_crops_grid", save_figure(cs.plot_crops_grid(study), study.run_dir / "figures", "crops_grid"), display=True)

# %% [markdown]
# ## Fig. 4: objectness maps and the top-5 boxes
#
# For each strategy that scores anchors on an objectness map: the normalised map (red high, blue low) over
# the image, and its top boxes. The paper's Fig. 4 (with a MoCo-v2-pretrained phi on COCO and VOC) shows
# maps that highlight the objects and boxes that cover them coarsely; here phi is the backbone above.

# %%
glue("fig_objectness_maps", save_figure(cs.plot_objectness_maps(study), study.run_dir / "figures", "objectness_maps"),
     display=True)

# %% [markdown]
# ## Table 2: mean objectness per strategy, ours beside the paper's
#
# Objectness of a crop = the share of its pixels that belong to any ground-truth instance mask. The
# paper's column is its Table 2 (VOC2007; only the strategies it reports). The paper reports GT-Crop as
# 100%, although a box around a non-rectangular object also holds background; we measure it.

# %%
table = cs.objectness_table(study.summary)
glue("objectness_table", cs.style_table(table), display=True)

# %% [markdown]
# ## Fig. 3: Poor, Coarse and Precise crops
#
# The share of crops with < 20% object pixels (Poor), > 80% (Precise) and in between (Coarse). The paper's
# Fig. 3 (COCO and VOC) finds more Precise crops for selective search and EdgeBox than for Our-Crop, and
# the text says about 40% of Grid-Crop's crops are Poor.

# %%
glue("fig_quality_bars", save_figure(cs.plot_quality_bars(study.summary), study.run_dir / "figures", "quality_bars"),
     display=True)

# %% [markdown]
# ## The sizes of the chosen crops
#
# The crop side (square root of the area) per strategy, with the anchor sizes dashed. Taken literally, the
# rule of Sec. 3.3 (mean score, NMS, top 5) favours the *smallest* anchors: a small box on the map's peak has
# a higher mean than any larger box around it, so the top 5 are small patches near the peak rather than
# "coarse crops of varying shapes and sizes". Compare the variants of ours.

# %%
glue("fig_crop_sizes", save_figure(cs.plot_crop_sizes(study), study.run_dir / "figures", "crop_sizes"), display=True)

# %% [markdown]
# ## The paper's claims, checked
#
# Each claim about crop quality, the paper's value, ours, and whether it holds here (a reported value agrees
# when ours is within 10 percentage points).

# %%
claims = cs.paper_claims(study.summary)
glue("claims_table", claims.style.hide(axis="index"), display=True)
for _name in study.summary.index:  # single values for the chapter's text
    glue(f"objectness_{_name}", round(100 * float(study.summary.loc[_name, "mean_objectness"]), 1), display=False)
    glue(f"median_side_{_name}", round(float(study.summary.loc[_name, "side_p50"])), display=False)
    glue(f"precise_{_name}", round(100 * float(study.summary.loc[_name, "precise"]), 1), display=False)
    glue(f"poor_{_name}", round(100 * float(study.summary.loc[_name, "poor"]), 1), display=False)

# %%
metrics_path = cs.save_metrics(study, wall_s=time.perf_counter() - _t0)
print(f"wrote {metrics_path}")
