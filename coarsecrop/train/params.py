"""The parameters of one pretraining run, loaded strictly from a YAML file plus ``key=value`` overrides.

A key that is not a field, or a value of the wrong type, fails at once, naming the file and listing
the valid keys: a typo must never silently train with a default. ``None`` for the optimiser fields
means "the method's default" (``method.optimizer_defaults``, the paper's settings); the values
actually used are resolved by the trainer and recorded in the checkpoint and the metrics.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from coarsecrop.io import read_yaml
from coarsecrop.params import load_params
from coarsecrop.ssl import METHODS

OPTIMIZERS = ("sgd", "lars", "adamw")
LR_SCALING = ("linear", "none")
MONITORS = ("knn", "linear", "both", "none")
PHOTOMETRIC_ON = ("auto", "worker", "device")


@dataclass
class PretrainParams:
    """One pretraining run (stage 1: phi on Image-Crop; stage 3: SSL from scratch on the crops).

    Data and model
      method: moco_v2 | byol | densecl | mae (``coarsecrop.ssl.METHODS``).
      manifest: crop manifest folder (``coarsecrop crops --out``); the ``image`` strategy = Image-Crop.
      backbone: trunk name understood by ``coarsecrop.ssl.build_method`` (resnet50, resnet18, narrow ResNets, ViTs).
      image_size: side of the (global) views in pixels (224 at paper scale).
      method_params: extra hyperparameters for ``build_method`` (queue_size, temperature, ...;
        random_resized_crop: false drops RandomResizedCrop, the paper's Table 15 switch).
      max_side: decode images no larger than this before cutting crops (None: full size).
    Schedule and optimiser (None = the method's default, the paper's setting)
      epochs: passes over the pseudo-images (N crops per image = N samples per image per epoch).
      batch_size: the GLOBAL batch over all processes (MAE's and PixPro's scripts take a per-GPU one); must divide
        by the world size. 256 for every method: give BYOL's 512 or MAE's 4096 (the papers') explicitly.
      lr: base learning rate at ``ref_batch``; the rate used is lr * batch_size / ref_batch (lr_scaling=linear).
      ref_batch, lr_scaling: the reference batch of ``lr`` and the rule (linear | none).
      min_lr: final learning rate of the cosine schedule.
      warmup_epochs: linear warm-up before the cosine decay (may be fractional; the first step at peak / W).
      optimizer: sgd | lars | adamw;  weight_decay; momentum (SGD/LARS momentum, AdamW beta1).
    Runtime
      workers: DataLoader workers per process.  seed: weights, data order and augmentations.
      threads: torch intra-op threads per process (None: torch's default; torchrun sets 1 per process).
        On a loaded shared CPU, 1 can be many times faster than oversubscribed threads.
      device: auto | cpu | cuda | cuda:K (under torchrun each process takes cuda:LOCAL_RANK).
      amp: bf16 autocast on CUDA (ignored on CPU).
      photometric_on: worker | device | auto. Where the views' photometric steps (jitter, grayscale, blur,
        solarize) run: in the DataLoader workers, or batched on the training device
        (coarsecrop.data.batch_photometric); auto = device on CUDA, worker on CPU.
      out: run folder (checkpoint.pt, backbone.pt, metrics.jsonl, params.yaml).
      checkpoint_every: save every this many epochs (and always at the end and on SIGTERM/SIGINT).
      log_every: write a metrics line every this many steps.  progress: tqdm bar on rank 0.
      resume: continue the run in ``out`` (True) or from this checkpoint file; "auto": continue the run in
        ``out`` when it holds a checkpoint, else start one (the same command for a first start and a requeued job).
      stop_at_step: stop as on SIGTERM after this global step (time-boxed jobs, tests).
    Quality monitor (rank 0, at epoch ends): a probe on frozen features of GT object crops
      monitor: knn | linear | both | none.  monitor_scenes: scene source with train/val splits
        (default: the scene source recorded in the manifest).  monitor_every: epochs between probes.
      monitor_size: side the object crops are resized to (default image_size).
      monitor_max_crops: object crops per split (a seeded subset when there are more).
      monitor_layer: '' = the trunk's output; or a submodule name (e.g. layer3) whose output is pooled.
      monitor_init_seeds: random initialisations scored at the start (the first is this run's own).
      monitor_min_side: probe only objects whose GT box is at least this many pixels (sqrt of its area);
        0 = every object.
    """

    method: str = "moco_v2"
    manifest: str = ""
    backbone: str = "resnet50"
    image_size: int = 224
    method_params: dict = field(default_factory=dict)
    max_side: typing.Optional[int] = None

    epochs: int = 400
    batch_size: int = 256
    lr: typing.Optional[float] = None
    ref_batch: typing.Optional[int] = None
    lr_scaling: str = "linear"
    min_lr: float = 0.0
    warmup_epochs: typing.Optional[float] = None
    optimizer: typing.Optional[str] = None
    weight_decay: typing.Optional[float] = None
    momentum: typing.Optional[float] = None

    workers: int = 4
    threads: typing.Optional[int] = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    photometric_on: str = "auto"
    out: str = "runs/pretrain"
    checkpoint_every: int = 1
    log_every: int = 10
    progress: bool = True
    resume: typing.Union[bool, str] = False
    stop_at_step: typing.Optional[int] = None

    monitor: str = "knn"
    monitor_scenes: typing.Optional[str] = None
    monitor_every: int = 1
    monitor_size: typing.Optional[int] = None
    monitor_max_crops: int = 2000
    monitor_layer: str = ""
    monitor_init_seeds: int = 1
    monitor_min_side: float = 0

    def to_dict(self) -> dict:
        """Plain JSON/YAML-able dict (what checkpoints store)."""
        return dataclasses.asdict(self)


# Keys that may differ when resuming: they change how the run executes, not what it computes.
RUNTIME_KEYS = {"workers", "threads", "device", "progress", "resume", "stop_at_step", "log_every", "out",
                "checkpoint_every", "monitor", "monitor_every", "monitor_scenes", "monitor_max_crops",
                "monitor_size", "monitor_layer", "monitor_init_seeds", "monitor_min_side"}


def _check_choices(params: PretrainParams, source: str) -> None:
    """Values with a closed set of choices, and basic ranges, checked before anything runs."""
    def fail(message):
        raise ValueError(f"{source}: {message}")

    if params.method not in METHODS:
        fail(f"unknown method {params.method!r}; valid methods: {', '.join(sorted(METHODS))}")
    if params.optimizer is not None and params.optimizer not in OPTIMIZERS:
        fail(f"unknown optimizer {params.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if params.lr_scaling not in LR_SCALING:
        fail(f"unknown lr_scaling {params.lr_scaling!r}; valid: {', '.join(LR_SCALING)}")
    if params.photometric_on not in PHOTOMETRIC_ON:
        fail(f"unknown photometric_on {params.photometric_on!r}; valid: {', '.join(PHOTOMETRIC_ON)}")
    if params.monitor not in MONITORS:
        fail(f"unknown monitor {params.monitor!r}; valid: {', '.join(MONITORS)}")
    for name in ("epochs", "batch_size", "image_size", "checkpoint_every", "log_every", "monitor_every",
                 "monitor_init_seeds"):
        if getattr(params, name) < 1:
            fail(f"{name} must be >= 1, got {getattr(params, name)}")
    for name in ("lr", "ref_batch"):
        if getattr(params, name) is not None and getattr(params, name) <= 0:
            fail(f"{name} must be > 0 (or null for the method's default), got {getattr(params, name)}")
    for name in ("min_lr", "warmup_epochs", "weight_decay", "momentum"):
        if getattr(params, name) is not None and getattr(params, name) < 0:
            fail(f"{name} must be >= 0, got {getattr(params, name)}")
    if Path(params.out).is_file():
        fail(f"out {params.out} is a file: the run folder must be a folder (new, or a run's to resume)")
    if params.workers < 0:
        fail(f"workers must be >= 0, got {params.workers}")
    if params.monitor_min_side < 0:
        fail(f"monitor_min_side must be >= 0, got {params.monitor_min_side}")
    if not params.manifest:
        fail("manifest is required: the crop manifest folder written by `coarsecrop crops --out`")


def _check_keys(values: dict, source: str) -> None:
    valid = [f.name for f in dataclasses.fields(PretrainParams)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"{source}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                         f"valid keys: {', '.join(valid)}")


def make_params(values: dict, source: str = "<parameters>") -> PretrainParams:
    """PretrainParams from a mapping, strictly: unknown keys and wrong types raise ValueError."""
    params = load_params(PretrainParams, values, source)
    _check_choices(params, source)
    return params


def parse_overrides(items: list[str] | None) -> dict:
    """``["epochs=2", "lr=0.1", "method_params={queue_size: 512}"]`` -> dict (values read as YAML)."""
    overrides = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        overrides[key.strip()] = read_yaml(value, f"override {item!r}")
    return overrides


def load_pretrain_params(path: str | Path | None = None, overrides: dict | list[str] | None = None) -> PretrainParams:
    """Read a YAML parameter file (a mapping of PretrainParams keys) and apply overrides on top."""
    values, source = {}, "<command line>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} does not exist")
        values = read_yaml(path.read_text(), path) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of parameters, got {type(values).__name__}")
        source = str(path)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    _check_keys(values, source)
    _check_keys(overrides or {}, "command-line override")
    if overrides:  # an error names both places a value may have come from
        source = f"{source} with the command-line override(s) {', '.join(overrides)}" if path is not None \
            else "command-line override"
    return make_params({**values, **(overrides or {})}, source)
