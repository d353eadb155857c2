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
