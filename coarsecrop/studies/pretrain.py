"""What notebooks/02_pretrain.py does, as functions: scenes -> crop manifest -> pretraining subprocess
-> curves -> metrics.json. The notebook's ``parameters`` cell mirrors ``PretrainStudyParams``.

The trainer always runs as a subprocess (``python -m coarsecrop pretrain``, or ``torchrun`` when
``processes > 1``): DDP cannot run inside a notebook kernel, and a subprocess is what a cluster job
runs too. Its output is streamed into the notebook; its metrics.jsonl is read back for the plots.
Re-executing the notebook on an interrupted run resumes it; on a finished run it only re-plots.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from coarsecrop.crops.job import run_crop_job
from coarsecrop.crops.quality import quality_buckets
from coarsecrop.crops.strategies import strategy_parameters
from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import scenes_or_builtin, shared_scenes_name
from coarsecrop.io import write_text
from coarsecrop.params import default_run_dir, project_root
from coarsecrop.train.children import stop_with_parent
from coarsecrop.runs.provenance import provenance
from coarsecrop.studies.crops import crop_table
from coarsecrop.train.params import make_params

NOTEBOOK = "02_pretrain"
# Fields of PretrainStudyParams that are passed to the trainer under the same name.
TRAINER_KEYS = ("method", "backbone", "image_size", "method_params", "epochs", "batch_size", "lr",
                "warmup_epochs", "weight_decay", "optimizer", "device", "workers", "threads", "seed", "monitor")


@dataclass
class PretrainStudyParams:
    """Parameters of notebooks/02_pretrain.py (the parameters cell mirrors these fields).

    The defaults are the CPU configuration that learns at toy scale (see params/quick/02_pretrain.yaml
    for the measurements); params/paper/02_pretrain.yaml holds the paper's Sec. 4.1 settings.

    Scenes: scenes = a COCO json / VOC root / image folder / `coarsecrop scenes` folder, or None to
      generate the built-in synthetic scenes (num_images of scene_size px, scene_seed, generator
      scene_version: 1, 2 or 3, see coarsecrop.data.synthetic) in the run folder.
      images: the COCO image root. Pretraining reads the split ``pretrain_split`` (e.g. trainval, the
      paper's VOC2007 set), or when None the source's train split (VOC: ImageSets/Main/train.txt), or every
      image when it has none (COCO's instances_train2017.json); the probe trains on the train split and
      scores the val split (or holds out every 5th image when there are no splits).
    Crops: manifest = an existing crop manifest folder; None runs `strategy` (image = the Image-Crop
      baseline, ours = Our-Crop, gt, grid, ...) with n crops per image on the train split first.
      strategy_params go to the strategy; anchor_sizes (None: the paper's 32-256) go to the strategies that
      score anchors (ours and its variants, random), e.g. [16, 32, 64, 128] for 128-px scenes;
      crop_backbone / crop_checkpoint are phi for the objectness map (None checkpoint = random init, s5).
      phi: "random" = crop_backbone / crop_checkpoint as given; "ssl" = stage 1 first (Table 11's s6):
        MoCo-v2 with this notebook's defaults and this run's trunk, epochs, batch and seed, trained on
        Image-Crop into run_dir/stage1, is phi (the paper: "MoCo-v2 pretrained on Image-Crop").
    Pretraining: the fields named as in ``coarsecrop.train.PretrainParams`` (None = the method's
      default, the paper's); train_params = any other PretrainParams key (ref_batch, min_lr, momentum,
      monitor_layer, checkpoint_every, ...). processes > 1 runs torchrun --nproc_per_node=processes.
    out: the run folder (None = runs/02_pretrain/<hash of the parameters>); preset: set by coarsecrop.book.
    """

    scenes: str | None = None
    images: str | None = None
    pretrain_split: str | None = None
    num_images: int = 1000
    scene_size: int = 128
    scene_seed: int = 0
    scene_version: int = 1
    manifest: str | None = None
    strategy: str = "gt"
    n: int = 5
    strategy_params: dict = field(default_factory=dict)
    anchor_sizes: list | None = None
    crop_backbone: str = "resnet18"
    crop_checkpoint: str | None = None
    phi: str = "random"
    method: str = "moco_v2"
    backbone: str = "resnet10_w16_cifar"
    image_size: int = 32
    method_params: dict = field(default_factory=lambda: {"queue_size": 1024})
    epochs: int = 6
    batch_size: int = 64
    lr: float | None = 1.2
    warmup_epochs: float | None = 0.25
    weight_decay: float | None = None
    optimizer: str | None = None
    train_params: dict = field(default_factory=dict)
    processes: int = 1
    device: str = "auto"
    workers: int = 1
    threads: int | None = 1
    seed: int = 0
    monitor: str = "both"
    out: str | None = None
    preset: str = ""

    MINIMUM: ClassVar[dict] = {"num_images": 1, "scene_size": 32, "n": 1, "image_size": 8, "epochs": 1,
                               "batch_size": 1, "processes": 1, "workers": 0}  # checked by load_params


def resolve_run_dir(params: PretrainStudyParams) -> Path:
    if params.out:
        return Path(params.out).resolve()
    return default_run_dir(NOTEBOOK, params)


def prepare_scenes(params: PretrainStudyParams, run_dir: Path) -> Path:
    """``params.scenes``, or the built-in synthetic scenes, written once beside the run folder
    (run_dir/../_scenes/<size, count, seed>/) and shared by every run of a sweep that uses the same set."""
    if params.scenes:
        return scenes_or_builtin(params.scenes, run_dir, 0, 0, 0)
    key = shared_scenes_name(params.num_images, params.scene_size, params.scene_seed, params.scene_version)
    return shared_builtin_scenes(run_dir.parent / "_scenes" / key, params.num_images, params.scene_seed,
                                 params.scene_size, params.scene_version, workers=params.workers)


def shared_builtin_scenes(folder: Path, num_images: int, seed: int, size: int, version: int = 1,
                          workers: int = 1) -> Path:
    """Built-in scenes at ``folder``, written by ``workers`` processes (the run's loader workers: the same
    bytes whatever their number) to a private temporary folder and renamed into place, so that runs started
    at the same time never read a half-written set."""
    if (folder / "annotations.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp.{os.getpid()}")
    scenes_or_builtin(None, tmp, num_images, seed, size, version=version, workers=max(1, workers))
    try:
        os.rename(tmp, folder)
    except OSError:  # another run got there first: its set is identical (same seed)
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def prepare_manifest(params: PretrainStudyParams, scenes: Path, run_dir: Path) -> Path:
    """``params.manifest``, or the crop job of ``strategy`` over the pretraining split (``train_split``) into
    run_dir/crops (a finished job is reused; an interrupted one resumes). With phi="ssl" stage 1 runs first."""
    if params.manifest:
        return Path(params.manifest).expanduser().resolve()
    checkpoint, phi_backbone = params.crop_checkpoint, params.crop_backbone
    if params.phi not in ("random", "ssl"):
        raise ValueError(f"phi must be 'random' (crop_backbone / crop_checkpoint as given) or 'ssl' (stage 1 "
                         f"first), got {params.phi!r}")
    if params.phi == "ssl":
        checkpoint, phi_backbone = train_stage1(params, scenes, run_dir), params.backbone
    return crop_job(params, scenes, run_dir / "crops" / params.strategy, params.strategy, params.n,
                    checkpoint, phi_backbone)


@functools.lru_cache(maxsize=8)
def train_split(scenes: Path, images, split: str | None = None) -> str | None:
    """The split pretraining reads: ``split`` when given (``pretrain_split``), else "train" when the source has
    a train split, else None (every image: a COCO json without splits)."""
    if split is not None:
        return split
    try:
        open_scenes(scenes, images=images, split="train")
    except ValueError:
        return None
    return "train"


def crop_job(params: PretrainStudyParams, scenes: Path, out: Path, strategy: str, n: int, checkpoint, backbone) -> Path:
    strategy_params = dict(params.strategy_params) if strategy == params.strategy else {}
    if params.anchor_sizes and "sizes" in strategy_parameters(strategy):
        strategy_params.setdefault("sizes", list(params.anchor_sizes))
    run_crop_job(scenes=str(scenes), images=params.images, out=str(out), strategy=strategy,
                 split=train_split(scenes, params.images, params.pretrain_split), n=n, strategy_params=strategy_params,
                 checkpoint=checkpoint, backbone=backbone, device=params.device, workers=params.workers,
                 progress=False)
    return out


def train_stage1(params: PretrainStudyParams, scenes: Path, run_dir: Path) -> Path:
    """Stage 1: phi = MoCo-v2 (this notebook's defaults, this run's trunk and budget) on Image-Crop."""
    defaults = PretrainStudyParams()
    stage1 = dataclasses.replace(params, method="moco_v2", method_params=defaults.method_params, lr=defaults.lr,
                                 warmup_epochs=defaults.warmup_epochs, weight_decay=None, optimizer=None,
                                 strategy="image", phi="random", monitor="none")
    manifest = crop_job(stage1, scenes, run_dir / "crops" / "image", "image", 1, None, params.crop_backbone)
    train = trainer_params(stage1, manifest, run_dir, out=run_dir / "stage1")
    print("stage 1: phi = MoCo-v2 on Image-Crop")
    launch(stage1, train, run_dir, params_name="stage1.yaml")
    return Path(train.out) / "backbone.pt"


def crop_quality(params: PretrainStudyParams, scenes: Path, manifest: Path) -> dict:
    """Objectness of the pseudo-images against the GT masks (the paper's Table 2 / Fig. 5 x-axis):
    mean, and the shares of Poor (< 20%), Coarse and Precise (> 80%) crops; crops per image; median side."""
    table = crop_table({"crops": manifest}, open_scenes(scenes, images=params.images,
                                                        split=train_split(scenes, params.images,
                                                                          params.pretrain_split)))
    obj = table["objectness"].dropna()
    if not len(obj):
        return {"crops": int(len(table)), "objectness": None}
    buckets = quality_buckets(obj.to_numpy())
    return {"crops": int(len(table)), "crops_per_image": float(len(table) / max(1, table["id"].nunique())),
            "objectness": float(obj.mean()), "poor": buckets["poor"], "coarse": buckets["coarse"],
            "precise": buckets["precise"], "median_side": float(table["side"].median())}


def trainer_params(params: PretrainStudyParams, manifest: Path, run_dir: Path, out: Path | None = None):
    """The PretrainParams of the run (validated strictly, like a --params file)."""
    values = {k: getattr(params, k) for k in TRAINER_KEYS}
    values.update(manifest=str(manifest), out=str(out or run_dir / "train"), progress=False, log_every=1)
    values.update(params.train_params)  # the probe reads the scenes the manifest records (monitor_scenes)
    return make_params(values, source=params.preset or "the parameters of notebooks/02_pretrain.py")


def trainer_command(params_file: Path, processes: int, resume: bool) -> list[str]:
    """``python -m coarsecrop pretrain --params FILE`` or its torchrun form."""
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    else:
        launch = [sys.executable]
    return [*launch, "-m", "coarsecrop", "pretrain", "--params", str(params_file), "--quiet",
            *(["--resume"] if resume else [])]


def read_metrics(train_dir: Path) -> list[dict]:
    path = Path(train_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_finished(train_dir: Path) -> bool:
    lines = read_metrics(train_dir)
    return bool(lines) and lines[-1].get("kind") == "end" and not lines[-1].get("interrupted")


def launch(params: PretrainStudyParams, train, run_dir: Path, params_name: str = "pretrain.yaml") -> float:
    """Run the trainer in a subprocess, streaming its output; resume an interrupted run; skip a finished
    one. Returns the wall time in seconds. Raises RuntimeError with the output's tail when it fails. The
    trainer never outlives this process: an interrupt is passed on to it, and its death sends it SIGTERM;
    either way it saves its checkpoint first."""
    train_dir = Path(train.out)
    if is_finished(train_dir):
        print(f"finished run in {train_dir}: not retrained (delete it to train again)")
        return 0.0
    params_file = run_dir / params_name
    params_file.write_text(yaml.safe_dump(train.to_dict(), sort_keys=False))
    cmd = trainer_command(params_file, params.processes, resume=(train_dir / "checkpoint.pt").is_file())
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if params.processes > 1:
        env.setdefault("OMP_NUM_THREADS", str(params.threads or 1))
    t0, tail = time.perf_counter(), []
    # The trainer stops with this process (a kernel restarted, shut down or killed: SIGTERM, it saves its
    # checkpoint) and sits in a session of its own; an interrupt here (JupyterLab's stop button, Ctrl-C) is
    # passed on to it as SIGINT, and waited for while it saves (coarsecrop.train.children).
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=project_root(), preexec_fn=stop_with_parent, start_new_session=True) as proc:
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail = (tail + [line])[-40:]
            code = proc.wait()
        except BaseException:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                print(f"interrupted: the trainer saves its checkpoint in {train_dir}; running this again resumes",
                      flush=True)
                proc.wait()
            raise
    if code != 0:
        raise RuntimeError(f"the trainer exited with code {code}:\n{''.join(tail)}")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- curves and metrics

def curves(train_dir: Path, lines: list[dict] | None = None):
    """(steps DataFrame: step, epoch, loss, lr, ...; monitor DataFrame: epoch, probe columns; start record),
    from ``lines`` (metrics.jsonl's records) when given, else read from ``train_dir``."""
    lines = read_metrics(train_dir) if lines is None else lines
    steps = pd.DataFrame([r for r in lines if r.get("kind") == "step"])
    monitor = pd.DataFrame([r for r in lines if r.get("kind") == "monitor"])
    start = next((r for r in lines if r.get("kind") == "start"), {})
    return steps, monitor, start


def plot_loss(steps):
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].plot(steps["step"], steps["loss"], lw=0.8, alpha=0.5, label="per step")
    window = max(1, len(steps) // 20)
    ax[0].plot(steps["step"], steps["loss"].rolling(window, min_periods=1).mean(), lw=1.8,
               label=f"mean of {window}")
    ax[0].set(xlabel="step", ylabel="loss", title="SSL loss")
    ax[0].legend()
    ax[1].plot(steps["step"], steps["lr"], color="tab:green", label="lr")
    ax[1].set(xlabel="step", ylabel="learning rate", title="schedule")
    if steps.get("momentum") is not None and steps["momentum"].notna().any():
        twin = ax[1].twinx()
        twin.plot(steps["step"], steps["momentum"], color="tab:purple", label="momentum")
        twin.set_ylabel("momentum encoder m")
    fig.tight_layout()
    return fig


def plot_monitor(monitor, init: dict):
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    colours = {"knn_top1": "tab:blue", "linear_top1": "tab:orange"}
    for key, colour in colours.items():
        if key in monitor:
            ax.plot(monitor["epoch"], monitor[key], marker="o", color=colour, label=f"{key} (pretrained)")
            if init and key in init:
                ax.axhline(init[key], color=colour, ls="--", lw=1, label=f"{key} (random init)")
            if init and f"{key}_bn" in init:
                ax.axhline(init[f"{key}_bn"], color=colour, ls=":", lw=1.5,
                           label=f"{key} (random init, BN stats of the data)")
    ax.set(xlabel="epoch", ylabel="top-1 on val object crops", title="object probe")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def summary_metrics(train_dir: Path, wall_s: float) -> dict:
    """Headline numbers: losses, throughput (the median log window, and the whole run: images from the first
    step done to the final checkpoint written, epoch ends included), final probe beside random init."""
    lines = read_metrics(train_dir)
    steps, monitor, start = curves(train_dir, lines)
    end = next((r for r in reversed(lines) if r.get("kind") == "end"), {})
    init = start.get("monitor_init") or {}
    out = {"steps": int(steps["step"].max()) if len(steps) else 0,
           "first_loss": float(steps["loss"].iloc[:5].mean()) if len(steps) else None,
           "final_loss": float(steps["loss"].iloc[-5:].mean()) if len(steps) else None,
           "images_per_s": float(steps["images_per_s"].iloc[1:].median()) if len(steps) > 1 else None,
           "run_images_per_s": end.get("run_images_per_s"), "train_wall_s": round(wall_s, 2)}
    for key in ("knn_top1", "linear_top1"):
        if key in monitor and len(monitor):
            out[f"probe_{key}"] = float(monitor[key].iloc[-1])
            out[f"probe_best_{key}"] = float(monitor[key].max())
            if key in init:
                out[f"init_{key}"] = float(init[key])
                out[f"gain_{key}"] = out[f"probe_{key}"] - float(init[key])
            if f"{key}_bn" in init:  # the stricter baseline: random weights, BN statistics of the data
                out[f"init_bn_{key}"] = float(init[f"{key}_bn"])
                out[f"gain_bn_{key}"] = out[f"probe_{key}"] - float(init[f"{key}_bn"])
    return out


def write_metrics(run_dir: Path, params: PretrainStudyParams, train, wall_s: float, train_wall_s: float,
                  crops: dict | None = None) -> Path:
    """run_dir/metrics.json (atomic): parameters, the trainer's resolved settings, headline numbers,
    the monitor history and provenance. Its presence marks a complete run (coarsecrop.runs)."""
    steps, monitor, start = curves(Path(train.out))
    record = {"notebook": NOTEBOOK, "params": dataclasses.asdict(params), "trainer_params": train.to_dict(),
              "resolved": start.get("resolved"), "metrics": summary_metrics(Path(train.out), train_wall_s),
              "monitor_init": start.get("monitor_init"), "monitor": monitor.to_dict(orient="records"),
              "crops": crops,
              "run_dir": str(run_dir), "provenance": provenance(train.device, wall_s, params.processes)}
    # default=str and NaN kept as NaN: the format of every pretraining metrics.json so far
    return write_text(run_dir / "metrics.json", json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
