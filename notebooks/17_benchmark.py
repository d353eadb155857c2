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
versions = [1, 2]  # generator versions to measure
trunk_version = None  # trunk rows on the scenes of this generator version; None: no trunk rows
trunk_images = 1000  # scenes of the trunk rows (the gates' set when the number and version match)
backbone = "resnet10_w16_cifar"  # the trunk of every trunk row
image_size = 32  # px: the SSL views, the supervised loop's and the probe's object crops
trunk_seed = 0  # weights, data order and augmentations of the trunk rows
supervised = {"epochs": 12, "lr": 0.1, "batch_size": 64}  # the supervised ceiling's loop
ssl = {"MoCo-v2, cpu-full settings": {"method": "moco_v2", "epochs": 6, "batch_size": 64, "lr": 1.2,
                                      "warmup_epochs": 0.25, "method_params": {"queue_size": 1024}}}
device = "auto"
out = None  # run folder; None means runs/17_benchmark/<hash of the parameters>
preset = ""  # set by `coarsecrop book run` to the preset file used

# %% tags=["hide-input"]
params = load_notebook_params(B.BenchmarkParams, globals(), _before,
                              source=preset or "the parameters cell of notebooks/17_benchmark.py")
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
# probe. On v2 colour is at chance and shape still names the class, as the benchmark needs. The
# evidence of the table chapters has not yet been remade on v2.
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
# under 32x32 px, about 0.06 of a 500-px side. v2's sizes are drawn from COCO's log-normal spread,
# truncated at 0.045 so that a shape still shows at 128 px. v1's are nearly uniform between 0.05 and 0.5.

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
# Which CPU configuration, if any, makes a GT-Crop trunk learn shape? Every configuration tried on
# scenes v2 (1,000 scenes of 128 px, seed 3; the random-init and supervised rows of the same scenes
# first) is one line of `results/cpu-full/17_benchmark/calibration_scenes_v2_cpu.csv`, written by
# `python -m coarsecrop.studies.benchmark_calibration` (the command of each line is in the file). This
# table is read from that **committed file**, not measured by this notebook.

# %% tags=["hide-input"]
_comment, _calibration = B.read_calibration()
verdict = B.calibration_verdict(_calibration)
print(_comment)
print(f"{verdict['tried']} SSL configurations; best: {verdict['best']}, linear probe "
      f"{100 * verdict['best_linear']:.1f}% against random init {100 * verdict['init_linear']:.1f}% "
      f"({100 * verdict['gain']:+.1f} points): the +10-point gate "
      f"{'is reached' if verdict['passes'] else 'is not reached by any CPU configuration tried'}.")
glue("calibration_verdict", "reached" if verdict["passes"] else "not reached", display=False)
B.calibration_table(_calibration)

# %% [markdown]
# ## The verdict
#
# On CPU, the +10-point gate is **{glue:text}`calibration_verdict`** (best configuration and numbers
# above). The line above is computed from the committed calibration. When no CPU configuration reaches
# random init + 10 points -- the case at the time of writing: the best, MoCo-v2 without RandomResizedCrop,
# gained a few points; with the labels the same trunk passes it at 30 epochs, not at 12 -- the book's
# claims about crops need a `gpu` preset (a ResNet-18 at 32-64 px, around a million samples per run, about
# a minute on one H200). That preset is not written yet, and no GPU was lent to the task that made this
# chapter, so it has not been run. `cpu-full` stays what it is: a CPU illustration of the pipeline (it
# runs end to end and its numbers are real), not evidence that one crop beats another. The first SSL row
# of the trunk table is the preset's budget; `params/cpu-full/17_benchmark.yaml` records the calibration
# in its comments.
