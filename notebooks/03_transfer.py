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
# # Transfer: what a pretrained trunk is worth downstream
#
# The paper's evidence is downstream accuracy: multi-label classification on VOC07 finetuned (mAP) and
# linear (mAP^l) (Tables 1, 2, 13, 14), Faster R-CNN R50-C4 on VOC07+12 (Table 6), Mask R-CNN on COCO
# (Tables 3, 4) and semantic segmentation (Table 6). This notebook runs the same kinds of evaluation on
# the built-in scenes, on a CPU, for every checkpoint given and for a randomly initialised trunk:
#
# - **objects**: a linear probe on frozen features of ground-truth object crops (top-1). At toy scale
#   this separates features well, but a random trunk's frozen features can score *higher* than a
#   briefly pretrained one's (issue 4), so a frozen probe alone cannot show what pretraining gives;
# - **linear** (mAP^l) and **multilabel** (mAP): image-level targets (which categories are present);
# - **detection** (AP, Faster R-CNN C4 or FPN from torchvision), **instance** (AP^seg, Mask R-CNN) and
#   **semantic** (mIoU, FCN on a dilated trunk): the finetuning tasks, where the starting weights matter.
#
# Every table has a random-init row (as the paper's Table 5) and the mean and spread over `n_seeds`
# seeds. Numbers are percentages. `detection` and `instance` are torchvision's Faster / Mask R-CNN at toy
# scale; at paper scale the task `detectron2` (task parameters: config, iterations, ims_per_batch,
# num_gpus, opts) finetunes with detectron2 and a shipped config in `coarsecrop/evaluate/configs`, run
# as `coarsecrop detectron2` in a subprocess (one process per GPU, outside the kernel), as the trainer
# is. Each table says which engine made its numbers.

# %%
import time
from pathlib import Path

from myst_nb import glue

from coarsecrop.io import write_json
from coarsecrop.params import load_notebook_params
from coarsecrop.studies.figures import save_figure
from coarsecrop.studies.reference import paper_transfer
from coarsecrop.studies.transfer import TransferParams, headline_table, plot_headlines, run_transfer, runs_table

_t0 = time.perf_counter()
_before = set(globals())  # the next cell's names are the parameters (checked below)

# %% tags=["parameters"]
# Tasks, in table order: objects | linear | multilabel | detection | instance | semantic | classify |
# detectron2 (the paper's engine, a shipped config as a subprocess; needs detectron2 installed).
tasks = ["objects", "linear", "multilabel", "detection", "instance", "semantic"]
# Rows: label -> a checkpoint file (trainer checkpoint or backbone.pt) or a folder (its newest backbone.pt,
# e.g. "runs/02_pretrain"); plus a random-init row. backbone None: read each checkpoint's architecture.
checkpoints = {}
random_init = True
backbone = "resnet10_w16_cifar"
# Scenes: None = the built-in synthetic scenes (num_images of scene_size px, scene_seed) generated into the
# run folder; or a COCO json / VOC root (images: COCO image root). Train on train_split, score val_split.
scenes = None
images = None
train_split = "train"
val_split = "val"
num_images = 200
scene_size = 128
scene_seed = 0
scene_version = 1  # the built-in scenes' generator (1, 2 or 3) when scenes is None
n_seeds = 3  # runs per row; tables give mean and std (the paper averages 3 runs for VOC detection)
first_seed = 0  # seeds first_seed .. first_seed + n_seeds - 1 (a sweep gives each pretraining seed its own)
device = "auto"  # auto | cpu | cuda
threads = 0  # torch CPU threads, 0 for the torch default (1 is faster for tiny models on a busy machine)
# Per-task parameters (coarsecrop.evaluate.runner.task_parameters(task) lists them, with the paper-scale
# defaults); these are toy-scale settings for 128-px scenes and a narrow trunk with the small stem.
task_params = {
    "objects": {"crop_size": 32},
    "linear": {"image_size": 64},
    "multilabel": {"image_size": 64, "epochs": 15, "batch_size": 32, "lr": 0.05},
    "detection": {"head": "c4", "iterations": 100, "batch_size": 8, "base_lr": 0.16, "warmup": 20,
                  "min_size": 128, "max_size": 128, "anchor_sizes": [16, 32, 64, 96, 128],
                  "rois_per_image": 32, "proposals_train": 200, "proposals_test": 100},
    "instance": {"head": "c4", "iterations": 100, "batch_size": 8, "base_lr": 0.16, "warmup": 20,
                 "min_size": 128, "max_size": 128, "anchor_sizes": [16, 32, 64, 96, 128],
                 "rois_per_image": 32, "proposals_train": 200, "proposals_test": 100},
    "semantic": {"image_size": 64, "epochs": 10, "batch_size": 16, "lr": 0.02},
}
classify_root = None  # an ImageFolder root (train/, val/) for the classify task (Table 7)
out = None  # run folder; None means runs/03_transfer/<hash of the parameters>
preset = ""  # set by `python -m coarsecrop.book` to the preset file used

# %% [markdown]
# The parameters are checked against `coarsecrop.studies.transfer.TransferParams`: a name that is not a
# parameter, a value of the wrong type, an unknown task or a task parameter that the task does not take
# stops the notebook here, with the list of valid names.

# %%
params = load_notebook_params(TransferParams, globals(), _before,
                              source=preset or ("the parameters cell of notebooks/03_transfer.py or papermill's "
                                                "-p / -y / -f values"))
result = run_transfer(params, write=False)
run_dir = Path(result["run_dir"])
records = result["tasks"]
print(f"run folder: {run_dir}")
print(f"scenes: {result['scenes']}")
glue("transfer_preset", f"{Path(preset).parent.name} ({preset})" if preset else "(notebook defaults)",
     display=False)
glue("transfer_rows", ", ".join(next(iter(records.values()))["rows"]) if records else "", display=False)
glue("transfer_seeds", params.n_seeds, display=False)

# %% [markdown]
# ## The headline of each task, per row
#
# Mean and sample standard deviation over seeds. For a checkpoint row the seeds change the new layers and
# the data order; for the random row they also change the trunk.

# %%
summary = headline_table(records)
summary["mean +- std"] = [f"{m:.1f} +- {s:.1f}" if m is not None else "n/a"
                          for m, s in zip(summary["mean"], summary["std"])]
glue("transfer_table", summary.pivot(index="row", columns="task", values="mean +- std")
     .reindex(columns=list(records)), display=True)
print("engines: " + ", ".join(f"{task}: {rec.get('engine', 'coarsecrop')}" for task, rec in records.items()))

# %%
glue("transfer_figure", save_figure(plot_headlines(records), run_dir / "figures", "headlines"), display=True)

# %% [markdown]
# ## The paper's numbers for the same kinds of task
#
# The paper's values (ResNet-50, VOC/COCO/Cityscapes, hundreds of epochs): only the direction of a gap
# between its rows is comparable with ours, not the values.

# %%
paper = paper_transfer()
paper = paper[paper["task"].isin(records)]
glue("transfer_paper", paper.pivot_table(index=["method", "crops"], columns="task", values="value")
     if len(paper) else paper, display=True)

# %% [markdown]
# ## Every run
#
# All scalar metrics of every seed (e.g. AP50 / AP75, mAcc / aAcc, the first and last training loss).

# %%
from IPython.display import display  # noqa: E402

for _task in records:
    display(runs_table(records, _task).style.set_caption(_task).format(precision=2))

# %%
result["provenance"]["wall_time_s"] = round(time.perf_counter() - _t0, 2)
write_json(run_dir / "metrics.json", result)  # last: its presence marks a complete run
print(f"metrics: {run_dir / 'metrics.json'}")
