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
# # The built-in benchmark
#
# The book asks which crops make good pseudo object-centric images, measured by how well a network
# pretrained on them recognises objects. That question needs data where recognising an object has to be
# *learned*. If a cheap cue names the class, a random network already "knows" it, and the trained rows
# cannot beat it by much. SSL's colour jitter and grayscale are in fact trained to throw colour away.
#
# Two probes per object, 5-fold cross-validated logistic regression (`coarsecrop.data.gates`):
#
# - **colour-only**: the mean and spread of the object's own pixels' RGB and a 4x4x4 colour histogram
#   (no shape, no context);
# - **shape-only**: numbers of its instance mask that do not change when it turns (outline spectrum,
#   moments, solidity, holes).
#
# The gates: colour-only at most 10 points above chance, shape-only at least 80%.
#
# - **Scenes v1** (`coarsecrop scenes`, the default: every result in this book was made on them): each
#   class owns a colour family and a texture.
# - **Scenes v2** (`coarsecrop scenes --version 2`): every object, the background and the stuff draw
#   colour and texture from one distribution, so only the shape names the class. Their object sizes
#   follow COCO's spread, with many small objects.
# - **Scenes v3** (`coarsecrop scenes --version 3`): v2's objects, classes and sizes on a greyish ground
#   (background and stuff) whose colours no object uses; objects still draw colour and texture from one
#   distribution shared by every class. v2's ground hid the silhouette inside a box crop: there, a trunk
#   trained *with the labels* on 32-px GT crops reached only 17-39% on the object probe, and 90% once
#   everything but the object was greyed (issue 13's check, recorded in
#   `params/cpu-full/17_benchmark.yaml`). v3 gives up v2's rule that a colourful blob need not be an
#   object, so finding objects is easy, as in many photographs; naming them still takes the shape. The
#   trunk rows and the calibration below run on v3.

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import display
from myst_nb import glue

from coarsecrop.params import load_notebook_params
from coarsecrop.studies import benchmark as B
from coarsecrop.studies.figures import save_figure

_before = set(globals())  # the next cell's names are the parameters (checked below)

# %% tags=["parameters"]
num_images = 300  # scenes per version
scene_size = 128  # px; the shape gate needs 128 or more (v2 at 64 px: shape-only 75%)
seed = 3
versions = [1, 2, 3]  # generator versions to measure
trunk_version = None  # trunk rows on the scenes of this generator version; None: no trunk rows
trunk_images = 1000  # scenes of the trunk rows (the gates' set when the number and version match)
backbone = "resnet10_w16_cifar"  # the trunk of every trunk row
image_size = 32  # px: the SSL views, the supervised loop's and the probe's object crops
trunk_seed = 0  # weights, data order and augmentations of the trunk rows
supervised = {"epochs": 12, "lr": 0.1, "batch_size": 64}  # the supervised ceiling's loop
ssl = {"MoCo-v2, cpu-full-v1 settings (6 epochs)": {"method": "moco_v2", "epochs": 6, "batch_size": 64, "lr": 1.2,
                                                   "warmup_epochs": 0.25, "method_params": {"queue_size": 1024}}}
device = "auto"
out = None  # run folder; None means runs/17_benchmark/<hash of the parameters>
preset = ""  # set by `coarsecrop book run` to the preset file used

# %% tags=["hide-input"]
params = load_notebook_params(B.BenchmarkParams, globals(), _before,
                              source=preset or ("the parameters cell of notebooks/17_benchmark.py or papermill's "
                                                "-p / -y / -f values"))
result = B.run_benchmark(params)
table = B.gates_table(result)
glue("benchmark_table", table, display=False)
glue("benchmark_preset", f"{Path(preset).parent.name} ({preset})" if preset else "(notebook defaults)",
     display=False)
table

# %% [markdown]
# ## What the gates say
#
# Percentages over all objects of the scenes (a 5-fold cross-validation, so every object is scored by a
# probe that did not see it). On v1 colour alone names the class almost always: that is why, in the
# table chapters, a random initialisation reaches most of what the trained trunks reach on the object
# probe. On v2 and v3 colour is at chance and shape still names the class, as the benchmark needs. The
# evidence of the table chapters has not yet been remade on v3: every table chapter still shows v1.
#
# Image-Crop objectness is the mean share of object pixels per whole image, the number the paper gives as
# 36.4% for VOC07 (Table 2).

# %% tags=["hide-input"]
glue("benchmark_sizes", save_figure(B.plot_sizes(result), Path(result["run_dir"]) / "figures", "sizes"),
     display=True)

# %% [markdown]
# ## Object sizes
#
# The side of each object's visible area relative to the image. COCO's objects are mostly small: 41% are
# under 32x32 px, about 0.06 of a 500-px side. v2's and v3's sizes are drawn from COCO's log-normal
# spread, truncated at 0.045 so that a shape still shows at 128 px. v1's are nearly uniform between 0.05
# and 0.5.

# %% [markdown]
# ## Does a trunk have to learn?
#
# The gates say the class is in the shape. The question the book's tables ask is whether a trunk
# *pretrained* on crops reads it better than one that learned nothing. Here one trunk architecture is
# probed four ways on the same scenes, with the trainer's object probe (kNN and a linear classifier on
# frozen features of the train split's GT object crops, top-1 on the val split's object crops):
#
# - **random init**, as built, and with its BatchNorm statistics re-estimated on the train crops (a
#   trained trunk's statistics fit the data whether or not its weights learned anything);
# - **supervised**: the same trunk trained *with the labels* on the probe's train crops (the train split's GT
#   object crops, at most 2,000)
#   (`coarsecrop.train.supervised`: SGD, flips, a linear head): the ceiling at this size and budget;
# - **SSL on GT-Crop**: the pretraining path of the pretraining chapter (GT crop job, the trainer
#   subprocess) with the settings named in the row; the first SSL row is the reference budget.
#
# The gate: the reference SSL row's linear probe at least 10 points above random init's.

# %% tags=["hide-input"]
if result.get("trunks"):
    trunk_table = B.trunks_table(result)
    gate = result["trunks"]["gate"]
    glue("trunk_table", trunk_table, display=False)
    glue("trunk_gate", "PASS" if gate["passes"] else "FAIL", display=False)
    glue("trunk_gain", f"{100 * gate['gain']:+.1f}", display=False)
    print(f"scenes v{result['trunks']['version']}: {trunk_images} scenes of {scene_size} px, "
          f"{result['trunks']['objects'][0]} train / {result['trunks']['objects'][1]} val object crops; "
          f"gate ({gate['reference']} >= random init + 10 points, linear probe): "
          f"{'PASS' if gate['passes'] else 'FAIL'} ({100 * gate['gain']:+.1f} points)")
    display(trunk_table)
else:
    print("trunk rows off (trunk_version = None)")

# %% tags=["hide-input"]
if result.get("trunks"):
    glue("benchmark_trunks", save_figure(B.plot_trunks(result), Path(result["run_dir"]) / "figures", "trunks"),
         display=True)

# %% [markdown]
# ## The calibration of the CPU pretraining (committed)
#
# Which CPU configuration, if any, makes a GT-Crop trunk learn shape? Every configuration tried is one
# line of a committed CSV, with the command that reproduces it, written by
# `python -m coarsecrop.studies.benchmark_calibration`. On scenes v3, the trunk rows' scenes (1,000 scenes
# of 128 px, seed 3; the random-init and supervised rows of the same scenes first):
# `results/cpu-full/17_benchmark/calibration_scenes_v3_cpu.csv`. The tables of this section are read from
# the **committed files**, not measured by this notebook.

# %% tags=["hide-input"]
_comment, _calibration = B.read_calibration(version=3)
verdict = B.calibration_verdict(_calibration)
print(_comment)
print(f"scenes v3: {verdict['tried']} SSL configurations; best: {verdict['best']}, linear probe "
      f"{100 * verdict['best_linear']:.1f}% against random init {100 * verdict['init_linear']:.1f}% "
      f"({100 * verdict['gain']:+.1f} points): the +10-point gate "
      f"{'is reached' if verdict['passes'] else 'is not reached by any CPU configuration tried'}.")
glue("calibration_verdict", "reached" if verdict["passes"] else "not reached", display=False)
glue("calibration_best", verdict["best"], display=False)
glue("calibration_gain", f"{100 * verdict['gain']:+.1f}", display=False)
verdict_byol = B.calibration_verdict(_calibration, method="byol")
print(f"BYOL alone: {verdict_byol['tried']} configurations; best: {verdict_byol['best']} "
      f"({100 * verdict_byol['gain']:+.1f} points over random init)")
glue("calibration_byol_best", verdict_byol["best"], display=False)
glue("calibration_byol_gain", f"{100 * verdict_byol['gain']:+.1f}", display=False)
glue("calibration_byol_tried", str(verdict_byol["tried"]), display=False)
glue("calibration_byol_worst", f"{100 * verdict_byol['worst_gain']:+.1f}", display=False)
B.calibration_table(_calibration)

# %% [markdown]
# ### On scenes v2: why v3 exists
#
# The same calibration on scenes v2 (`results/cpu-full/17_benchmark/calibration_scenes_v2_cpu.csv`, 1,000
# scenes of 128 px, seed 3). There even the trunk trained with the labels stayed under the gate at 12
# epochs, and no SSL configuration came near it: the ground, drawn from the objects' own colours and
# textures, hid the silhouettes. (Probes on the larger objects only, rows of the same file, showed that
# object size was not the cause.)

# %% tags=["hide-input"]
_comment_v2, _calibration_v2 = B.read_calibration(version=2)
verdict_v2 = B.calibration_verdict(_calibration_v2)
print(_comment_v2)
print(f"scenes v2: {verdict_v2['tried']} SSL configurations; best: {verdict_v2['best']} "
      f"({100 * verdict_v2['gain']:+.1f} points over random init)")
B.calibration_table(_calibration_v2)

# %% [markdown]
# ## The verdict
#
# On CPU, on scenes v3, the +10-point gate is **{glue:text}`calibration_verdict`**: the best configuration,
# {glue:text}`calibration_best`, gains {glue:text}`calibration_gain` points over random init (computed
# above from the committed calibration; the linear probe's standard error on these 1,425 val objects is
# about 1.2 points). The trunk rows above run the preset's configurations again on this build.
#
# What this means for the book, plainly: the calibrated configuration is the reference budget of the
# table sweeps now. `params/cpu-full/02_pretrain.yaml` is that recipe on scenes v3 (1,000 scenes, 36
# epochs), and the table chapters show its runs as the `cpu-full` source, a part of the sweeps at a time
# (each chapter says how many of its runs are there), beside the first results on scenes v1, where colour
# names the class and most claims sit within noise (the `cpu-full-v1` source). The gate is passed by a
# narrow margin, so a crop strategy whose crops are worse than GT-Crop's may gain less than the noise. The
# `gpu` preset (`params/gpu/`: 5,000 scenes v3 of 256 px, a 32-wide ResNet-18 at 64-px views, about
# 840,000 samples for a GT-Crop run) is meant to widen it; it is written but **not yet run or calibrated**
# (no GPU so far), so nothing in this book comes from it. `params/cpu-full/17_benchmark.yaml` records the
# calibration in its comments, with one GPU observation on v2.
#
# BYOL learns less at this budget. Of the {glue:text}`calibration_byol_tried` BYOL settings tried at 12 epochs
# (RandomResizedCrop on; base lr 1.2, 4.8 or 16; SGD; a faster target; heads of 512/128 instead of
# 4096/256; weight decay 5e-4 at batch 32, 64 or 128), the best, {glue:text}`calibration_byol_best`, gains
# {glue:text}`calibration_byol_gain` points over random init and the worst {glue:text}`calibration_byol_worst`,
# where MoCo-v2 gains about 8. The table sweeps run BYOL at cpu-full with the recipe chosen from the first
# six tries (no RandomResizedCrop, base lr 4.8, LARS with its weight decay 1e-5: +3.2 points) for the full 36
# epochs; no later try beat it by more than a fraction of the probe's standard error (about 1.2 points), so
# it stays. Its rows therefore measure a BYOL far from converged, and its claims are the least likely to be
# decided.
