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
# # Pretraining on pseudo-images
#
# Stage 1 and stage 3 of the paper's pipeline (Sec. 3.1-3.2): a self-supervised method (MoCo-v2, BYOL,
# DenseCL or MAE) learns from *pseudo object-centric images*, the crops of a crop manifest, each cut from
# its scene image before the augmentations (so RandomResizedCrop acts inside the crop). With the `image`
# strategy every pseudo-image is a whole scene: the paper's Image-Crop baseline, also how phi, the
# backbone that scores Our-Crop's anchors, is pretrained (stage 1).
#
# The notebook builds (or reads) the scenes and the crop manifest, then launches the trainer as a
# subprocess, `python -m coarsecrop pretrain` (or `torchrun --nproc_per_node=K -m coarsecrop pretrain`
# when `processes > 1`: DDP cannot run inside a kernel), streams its progress, and plots the loss and
# the *object probe*: a kNN / linear classifier on frozen features of the ground-truth object crops
# (train split -> val split), beside the same probe on a randomly initialised trunk. At toy scale a
# pretrained network must first beat that random-init line before any comparison of crops means much.
# Re-executing the notebook on an interrupted run resumes it; on a finished run it only re-plots.

# %%
import time

from myst_nb import glue

from coarsecrop.params import load_notebook_params
from coarsecrop.studies import pretrain as ps
from coarsecrop.studies.figures import save_figure

_t0 = time.perf_counter()
_before = set(globals())  # the next cell's names are the parameters (checked below)

# %% tags=["parameters"]
# Scenes: None = the built-in synthetic scenes (num_images of scene_size px, scene_seed); or a COCO json /
# VOC root / image folder (images: COCO image root). Pretraining uses pretrain_split (None: the train split
# where the source has one, else every image), the probe the train and val splits.
scenes = None
images = None
pretrain_split = None
num_images = 1000
scene_size = 128
scene_seed = 0
scene_version = 1  # the built-in scenes' generator (1, 2 or 3; 3: the benchmark chapter's)
# Crops: an existing manifest folder, or None to run `strategy` (image = Image-Crop, ours = Our-Crop, gt,
# grid, random, ...) with n crops per image; phi = crop_backbone (+ crop_checkpoint; None = random init, s5),
# or phi = "ssl": stage 1 (MoCo-v2 on Image-Crop) first, its trunk is phi (Table 11's s6).
manifest = None
strategy = "gt"
n = 5
strategy_params = {}
anchor_sizes = None  # None: the paper's 32-256 px (ours, its variants, random); [16, 32, 64, 128] at 128 px
crop_backbone = "resnet18"
crop_checkpoint = None
phi = "random"
# SSL method and trunk (coarsecrop.ssl): moco_v2 | byol | densecl | mae; ResNets, narrow resnet10_w16[_cifar], ViTs.
method = "moco_v2"
backbone = "resnet10_w16_cifar"
image_size = 32
method_params = {"queue_size": 1024}  # toy scale: a short queue (paper: 65,536)
# Schedule: the global batch over all processes; None = the method's default (the paper's), lr at batch 256.
epochs = 6
batch_size = 64
lr = 1.2  # toy scale: 4x the paper's 0.3 (short runs need it; see params/quick/02_pretrain.yaml)
warmup_epochs = 0.25
weight_decay = None
optimizer = None
train_params = {}  # any other key of coarsecrop.train.PretrainParams, e.g. {"monitor_layer": "layer3"}
processes = 1  # more than 1: torchrun with this many processes
device = "auto"
workers = 1
threads = 1
seed = 0
monitor = "both"  # knn | linear | both | none
out = None  # run folder; None: runs/02_pretrain/<hash of the parameters>
preset = ""  # set by `python -m coarsecrop.book` to the preset file used

# %% [markdown]
# The parameters are checked against `coarsecrop.studies.pretrain.PretrainStudyParams`, and the trainer's own
# parameters against `coarsecrop.train.PretrainParams`: a name that is not a parameter or a value of the
# wrong type stops the notebook here, with the list of valid names.

# %%
params = load_notebook_params(ps.PretrainStudyParams, globals(), _before,
                              source=preset or ("the parameters cell of notebooks/02_pretrain.py or papermill's "
                                                "-p / -y / -f values"))
run_dir = ps.resolve_run_dir(params)
run_dir.mkdir(parents=True, exist_ok=True)
scene_path = ps.prepare_scenes(params, run_dir)
manifest_path = ps.prepare_manifest(params, scene_path, run_dir)
crops = ps.crop_quality(params, scene_path, manifest_path)
train = ps.trainer_params(params, manifest_path, run_dir)
print(f"run folder: {run_dir}\nscenes: {scene_path}\ncrop manifest: {manifest_path}")
print("pseudo-images:", {k: round(v, 3) if isinstance(v, float) else v for k, v in crops.items()})
glue("preset", preset or "(notebook defaults)", display=False)
glue("method", params.method, display=False)
glue("backbone", params.backbone, display=False)
glue("strategy", params.strategy if not params.manifest else str(params.manifest), display=False)

# %% [markdown]
# ## Training
#
# The trainer's own output: one line per epoch (mean loss, learning rate, images/s and the probe).
# Its checkpoint, `backbone.pt` (the trunk as a torchvision-style state_dict, usable as phi by
# `coarsecrop crops --checkpoint`) and `metrics.jsonl` are in the run folder's `train/`.

# %%
train_wall_s = ps.launch(params, train, run_dir)
steps, monitor_curve, start = ps.curves(train.out)
resolved = start.get("resolved", {})
print(f"{resolved.get('num_samples')} pseudo-images from {resolved.get('num_images')} images, "
      f"global batch {resolved.get('global_batch')} on {resolved.get('world_size')} process(es), "
      f"{resolved.get('optimizer')} lr {resolved.get('lr')} (base {resolved.get('base_lr')} at batch "
      f"{resolved.get('ref_batch')}, linear scaling)")

# %% [markdown]
# ## Loss and schedule

# %%
glue("fig_loss", save_figure(ps.plot_loss(steps), run_dir / "figures", "loss"), display=True)

# %% [markdown]
# ## The object probe: pretrained against random init
#
# Top-1 accuracy of the probe on the val split's GT object crops at each epoch end (solid), and the same
# probe on the randomly initialised trunk of the same architecture: as built (dashed), and with its
# BatchNorm statistics re-estimated on the data (dotted). The dotted line is the honest baseline: a
# trained trunk's BN statistics fit the data whether or not its weights learned anything, and at toy
# scale that alone moves the probe by a few points. Pretraining has learned something only where the
# solid line is above the dotted one.

# %%
glue("fig_monitor", save_figure(ps.plot_monitor(monitor_curve, start.get("monitor_init")), run_dir / "figures",
                                "monitor"), display=True)
headline = ps.summary_metrics(train.out, train_wall_s)
for _key, _value in headline.items():
    glue(_key, round(_value, 3) if isinstance(_value, float) else _value, display=False)
headline

# %%
metrics_path = ps.write_metrics(run_dir, params, train, time.perf_counter() - _t0, train_wall_s, crops)
print(f"wrote {metrics_path}")
