"""The pretraining loop: one process as is, many under torchrun, the same code.

    python -m coarsecrop pretrain --params FILE [key=value ...]
    torchrun --nproc_per_node=K -m coarsecrop pretrain --params FILE [key=value ...]

What a run does, in order: join the process group (gloo on CPU, NCCL on CUDA); check the global
batch against the world size; build the SSL method (``coarsecrop.ssl.build_method``) and the
pseudo-image data set over the crop manifest; resolve the optimiser (the method's defaults unless
overridden), scale the learning rate (linear rule) and build the cosine schedule; resume if asked;
score the random-init trunk with the object probe; then train, step by step:

    lr(step) -> forward (bf16 autocast on CUDA) -> backward -> optimizer.step -> momentum_update

writing metrics lines, a checkpoint every ``checkpoint_every`` epochs (and at the end, and when
SIGTERM / SIGINT arrives: the current step finishes, the checkpoint is written, the process exits),
and the exported trunk ``backbone.pt`` beside each checkpoint.

Nothing waits for the device at an epoch end: one DataLoader iterator runs through all epochs (the
persistent workers prefetch the next epoch's first batches while one ends); the losses stay on the
device and are read once per log window (``StepLosses``: the NaN check and the epoch's line happen
there); the stop vote and the checkpoint's RNG gather are CPU collectives (gloo); checkpoints are
copied to host memory and written by a background thread (``CheckpointWriter``). The object probe,
when configured, does wait (it scores the trunk): its seconds are in the monitor line (``probe_s``). The run
records its whole-run rate (``RunClock``: first step done to final checkpoint written, and the same from
the first epoch's end) beside the steady rate (median log window) in the end line of metrics.jsonl and
the summary.

Exact resume on CPU: the data order and every sample's augmentations are functions of
(seed, epoch, index) (``GlobalBatchSampler``, ``PseudoImageDataset``), the DataLoader has a private
generator, and each process's RNG states are saved with the model, optimiser and step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # the text bar: tqdm.auto warns in every kernel without ipywidgets (not a dependency)

from coarsecrop import ssl
from coarsecrop.crops.manifest import read_manifest
from coarsecrop.data.batch_photometric import batch_photometric
from coarsecrop.data.pseudo import PseudoImageDataset
from coarsecrop.data.views import method_views
from coarsecrop.io import save_torch
from coarsecrop.train import checkpoint as ckpt_io
from coarsecrop.train.clock import RunClock
from coarsecrop.train.distributed import (Dist, any_true, gather_objects, init_distributed,
                                          mean_over_ranks, shutdown)
from coarsecrop.train.losses import StepLosses, stop_if_diverged
from coarsecrop.train.monitor import ObjectProbe
from coarsecrop.train.optim import CosineSchedule, build_optimizer, resolve_optimizer, scaled_lr
from coarsecrop.train.params import PretrainParams
from coarsecrop.train.sampler import GlobalBatchSampler

METRICS = "metrics.jsonl"
PARAMS = "params.yaml"


@dataclass
class Resolved:
    """What the run actually uses, beyond the parameters as given (recorded in checkpoint and metrics)."""

    optimizer: str
    base_lr: float
    ref_batch: int
    lr: float  # after scaling: the peak of the cosine schedule
    weight_decay: float
    momentum: float  # SGD / LARS momentum, AdamW beta1
    beta2: float  # AdamW only
    exclude_bias_and_norm: bool  # from weight decay (and from LARS adaptation)
    trust_coefficient: float  # LARS only
    warmup_epochs: float
    world_size: int
    global_batch: int
    local_batch: int
    steps_per_epoch: int
    total_steps: int
    num_samples: int
    num_images: int
    skipped_images: int
    device: str
    backend: str = "none"  # the process group's: gloo | nccl | none (one process, no group)
    photometric_on: str = "worker"  # where the views' photometric steps ran
    threads: int = 0  # torch's CPU threads (a CPU run resumed on another count is not bit-identical)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------- building blocks

def build_method(params: PretrainParams, seed: int) -> nn.Module:
    """The SSL method, its weights drawn from ``seed`` alone (the global RNG state is left as it was)."""
    return ssl.build_method(params.method, params.backbone, params.image_size, seed=seed, **params.method_params)


def check_queue(method: nn.Module, params: PretrainParams) -> None:
    """A queue method (MoCo-v2, DenseCL) must hold every key one step enqueues (all processes' together):
    say so before training, not at the first step's enqueue."""
    queue, keys = getattr(method, "queue_size", None), params.batch_size * getattr(method, "keys_per_image", 0)
    if queue is not None and keys > queue:
        raise ValueError(f"method_params.queue_size {queue} is smaller than the {keys} keys one step enqueues "
                         f"(batch_size {params.batch_size} x {method.keys_per_image} per image): raise queue_size "
                         f"to at least {keys} (MoCo's is many batches: 65,536 at batch 256) or lower batch_size")


def prepare_model(method: nn.Module, d: Dist) -> nn.Module:
    """Move to the device; on CUDA channels_last, and SyncBN whenever a process group trains."""
    if d.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if d.active:
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        method = method.to(d.device, memory_format=torch.channels_last)
    else:
        method = method.to(d.device)
    return method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _ignore_signals_in_worker(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset, sampler: GlobalBatchSampler, params: PretrainParams, d: Dist) -> DataLoader:
    # A private generator: creating an iterator must not draw from the global RNG (exact resume).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=params.workers,
                      pin_memory=d.device.type == "cuda", persistent_workers=params.workers > 0,
                      worker_init_fn=_ignore_signals_in_worker if params.workers > 0 else None,
                      generator=torch.Generator().manual_seed(params.seed),
                      prefetch_factor=4 if params.workers > 0 else None)


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop finishes its step, saves and exits."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. inside some notebook runners): no handler
                pass
        return self

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            # once stopping, a further SIGTERM (a dying parent can send more than one) must not kill the
            # process between the loop and its end record: it is ignored until the process exits
            stopping = self.signum is not None and signum == signal.SIGTERM
            signal.signal(signum, signal.SIG_IGN if stopping else handler)
        return False


class MetricsLog:
    """metrics.jsonl on rank 0; on resume, lines after the checkpoint's step are dropped first."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.exists():
            kept = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    record = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:  # a line cut off by a crash mid-write
                    print(f"warning: {path} line {number} is not a JSON record (cut off by a crash?): dropped",
                          file=sys.stderr, flush=True)
                    continue
                if record is not None and record.get("step", 0) <= resume_step:
                    kept.append(line)
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled and resume_step is None:
            path.write_text("")

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")


def _floats(out: dict) -> dict:
    """The method's extra logged values that are scalars, as floats."""
    logged = {}
    for key, value in out.items():
        if key == "loss":
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            logged[key] = float(value.detach())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            logged[key] = float(value)
    return logged


def current_momentum(method: nn.Module, out: dict) -> float | None:
    """The momentum encoder's current coefficient, when the method has one."""
    for key in ("momentum", "ema_momentum", "tau"):
        if key in out:
            return float(out[key])
        value = getattr(method, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return float(value)
    return None


# ---------------------------------------------------------------- the object probe

def build_probe(params: PretrainParams, manifest, d: Dist):
    """The object probe (rank 0 only), or None when monitor=none."""
    if params.monitor == "none" or not d.is_main:
        return None
    scenes = params.monitor_scenes or manifest.config.get("source")
    probes = ("knn", "linear") if params.monitor == "both" else (params.monitor,)
    return ObjectProbe(scenes, probes, size=params.monitor_size or params.image_size,
                       max_crops=params.monitor_max_crops, layer=params.monitor_layer, device=d.device,
                       seed=0, images=None if params.monitor_scenes else manifest.config.get("images"),
                       min_side=params.monitor_min_side)


def random_init_scores(probe, params: PretrainParams, device: torch.device, own: nn.Module | None) -> dict:
    """Probe scores of random trunks of this architecture: this run's own init (``own``, or rebuilt
    from the seed when the run is past its start), then ``monitor_init_seeds - 1`` other seeds.

    Each is scored as built (``knn_top1`` ...) and with its BN statistics re-estimated on the probe's
    train crops (``knn_top1_bn`` ...): the honest baseline, since a trained trunk's BN statistics fit
    the data whether or not its weights learned anything. ``*_seeds`` list every seed, ``*_mean``
    their mean. Runs with forked RNG states so the training stream does not depend on the monitor."""
    runs = []
    for k in range(params.monitor_init_seeds):
        trunk = own.backbone if k == 0 and own is not None else \
            build_method(params, seed=params.seed + 1000 * k).to(device).backbone  # k = 0: this run's init
        with torch.random.fork_rng(devices=[]):
            scores = probe.score(trunk)
            scores.update({f"{key}_bn": v for key, v in probe.score_recalibrated(trunk).items()})
        runs.append(scores)
    result = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        result[key] = values[0]
        result[f"{key}_seeds"] = values
        result[f"{key}_mean"] = float(np.mean(values))
    return result


# ---------------------------------------------------------------- the run

def pretrain(params: PretrainParams) -> dict:
    """Run (or resume) one pretraining; returns a summary dict (rank 0's view)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if params.batch_size % world_size:  # before any process group: fail at once on every rank
        raise ValueError(f"batch_size {params.batch_size} (the global batch) does not divide by the world size "
                         f"{world_size}: use a multiple of {world_size}, e.g. "
                         f"{max(1, params.batch_size // world_size) * world_size}")
    d = init_distributed(params.device)
    try:
        return _pretrain(params, d)
    finally:
        shutdown(d)


def _pretrain(params: PretrainParams, d: Dist) -> dict:
    if params.threads:
        torch.set_num_threads(params.threads)
    out = Path(params.out)
    arch = dict(method=params.method, backbone=params.backbone, image_size=params.image_size)

    ckpt, ckpt_path = None, None
    if params.resume == "auto":  # one command line for a first start and a requeued job (Slurm, torchrun restarts)
        params = replace(params, resume=(out / ckpt_io.CHECKPOINT).exists())
    if not params.resume and (out / ckpt_io.CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run ({ckpt_io.CHECKPOINT}); continue it with --resume "
                         f"(resume=true), or choose another out folder")
    if params.resume:
        ckpt_path = out / ckpt_io.CHECKPOINT if params.resume is True else Path(params.resume)
        ckpt_io.check_resume_into(ckpt_path, out, [ckpt_io.CHECKPOINT, METRICS])
        ckpt = ckpt_io.load_checkpoint(ckpt_path)
        ckpt_io.check_architecture(ckpt, arch, ckpt_path)
        ckpt_io.check_resume_params(ckpt["params"], params.to_dict(), ckpt_path)

    manifest = read_manifest(params.manifest)
    method = build_method(params, seed=params.seed)  # identical weights on every process
    check_queue(method, params)
    seed_everything(params.seed + d.rank)  # independent random streams per process (masks, shuffles)
    optim_cfg = resolve_optimizer(params, dict(method.optimizer_defaults))
    on_device = params.photometric_on == "device" or (params.photometric_on == "auto" and d.device.type == "cuda")
    photometric_on = "device" if on_device else "worker"
    dataset = PseudoImageDataset(manifest, transform=method_views(method, params.image_size, photometric_on),
                                 seed=params.seed, max_side=params.max_side)
    finish_views = None
    if on_device:  # the workers send uint8 geometry; jitter, grayscale, blur, solarize run here, batched
        finish_views = [m.to(d.device) for m in batch_photometric(method.pipeline, params.image_size,
                                                                  local_views=getattr(method, "local_views", 0))]
    sampler = GlobalBatchSampler(len(dataset), params.batch_size, d.rank, d.world_size, params.seed)
    total_steps = params.epochs * sampler.steps_per_epoch
    peak_lr = scaled_lr(optim_cfg["base_lr"], params.batch_size, optim_cfg["ref_batch"], params.lr_scaling)
    resolved = Resolved(**optim_cfg, lr=peak_lr, world_size=d.world_size, global_batch=params.batch_size,
                        local_batch=sampler.local_batch, steps_per_epoch=sampler.steps_per_epoch,
                        total_steps=total_steps, num_samples=len(dataset), num_images=dataset.num_images,
                        skipped_images=dataset.num_skipped, device=str(d.device),
                        backend=d.backend or "none", photometric_on=photometric_on, threads=torch.get_num_threads())
    if ckpt is not None:
        ckpt_io.check_resume_data(ckpt.get("resolved", {}), resolved.to_dict(), ckpt_path, params.manifest)
        ckpt_io.check_resume_target(ckpt, total_steps, ckpt_path, out)
        for line in ckpt_io.resume_differences(ckpt.get("resolved", {}), resolved.to_dict()) if d.is_main else []:
            print(f"warning: {line}", file=sys.stderr, flush=True)
        if d.is_main:
            ckpt_io.remove_temporaries(out)

    method = prepare_model(method, d)
    optimizer = build_optimizer(method, resolved.optimizer, peak_lr, resolved.weight_decay, resolved.momentum,
                                beta2=resolved.beta2, exclude_bias_and_norm=resolved.exclude_bias_and_norm,
                                trust_coefficient=resolved.trust_coefficient)
    schedule = CosineSchedule(peak_lr, total_steps, round(resolved.warmup_epochs * sampler.steps_per_epoch),
                              params.min_lr)
    if resolved.warmup_epochs >= params.epochs and d.is_main:  # e.g. byol's default 10 in a shorter run
        print(f"warning: warmup_epochs {resolved.warmup_epochs:g} >= epochs {params.epochs}: the rate never decays; "
              "give warmup_epochs below epochs", file=sys.stderr, flush=True)
    scaler = torch.amp.GradScaler(d.device.type, enabled=False)  # bf16 needs no loss scaling; kept for the format
    step, monitor_state = 0, {"init": None, "history": []}
    if ckpt is not None:
        ckpt_io.load_model_state(method, ckpt["model"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        step, monitor_state = int(ckpt["step"]), ckpt.get("monitor", monitor_state)

    probe = build_probe(params, manifest, d)
    if probe is not None and monitor_state["init"] is None:
        monitor_state["init"] = random_init_scores(probe, params, d.device, method if step == 0 else None)
        print(f"object probe on {len(probe)} GT crops, random init: {_fmt(monitor_state['init'])}",
              file=sys.stderr, flush=True)

    if ckpt is not None:  # last: everything above may draw random numbers
        states = ckpt["rng"]
        if d.rank < len(states):
            ckpt_io.set_rng_state(states[d.rank], d.device)
        else:  # a rank the run did not have: a stream of its own (rank 0's would repeat its masks and views)
            seed_everything(params.seed + d.rank + 65_536 * step)

    model = nn.parallel.DistributedDataParallel(method, device_ids=[d.device.index] if d.device.type == "cuda"
                                                else None) if d.active else method
    loader = make_loader(dataset, sampler, params, d)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_params(out / PARAMS, params, resolved)
    log = MetricsLog(out / METRICS, d.is_main, step if ckpt is not None else None)
    if d.is_main and ckpt is None:
        log.write({"kind": "start", "step": 0, "resolved": resolved.to_dict(), "params": params.to_dict(),
                   "sync_bn": any(isinstance(m, nn.SyncBatchNorm) for m in method.modules()),
                   "channels_last": d.device.type == "cuda", "bf16_autocast": d.device.type == "cuda" and params.amp,
                   "monitor_init": monitor_state["init"]})

    writer = ckpt_io.CheckpointWriter() if d.is_main else None
    spe = sampler.steps_per_epoch

    def save(epoch_done: int) -> None:
        """Queue a checkpoint of the state after ``step`` (the files are written in the background)."""
        rng = gather_objects(ckpt_io.rng_state(d.device), d)  # over gloo: no wait on the GPU
        if d.is_main:
            position = {**sampler.state_dict(), "epoch": step // spe, "start_step": step % spe}  # the next batch
            state = {"format": ckpt_io.FORMAT, "arch": arch, "params": params.to_dict(),
                     "resolved": resolved.to_dict(), "model": method.state_dict(),
                     "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "scaler": scaler.state_dict(), "step": step, "epoch": epoch_done,
                     "sampler": position, "rng": rng, "monitor": monitor_state,
                     "epoch_losses": {e: list(v) for e, v in losses.epoch_sums.items()}}
            writer.submit(state, out / ckpt_io.CHECKPOINT, out / ckpt_io.BACKBONE)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" and params.amp
                else contextlib.nullcontext())
    bar = _progress_bar(params, d, total_steps, step)
    losses, epoch_lines, window_rates = StepLosses(), [], []
    interrupted, start_time = None, time.time()
    first_epoch = step // spe
    if ckpt is not None and step % spe:  # stopped inside an epoch: its line averages its steps before the stop too
        losses.epoch_sums = {e: list(v) for e, v in ckpt.get("epoch_losses", {}).items() if e == first_epoch}
    if first_epoch < params.epochs:  # one iterator for the whole run: the workers prefetch across epoch ends
        sampler.set_epoch(first_epoch, start_step=step - first_epoch * spe, through=params.epochs)
        batches = iter(loader)
    run = RunClock(d.device)
    window_start, window_steps = time.time(), 0

    def read_losses() -> None:
        """The one host wait of a log window: every loss since the last read; then the finished epochs' lines."""
        losses.read()
        while epoch_lines and epoch_lines[0]["step"] <= losses.read_through:
            _print_epoch(epoch_lines.pop(0), losses, params, total_steps, monitor_state, bar)

    method.train()
    try:
        with StopRequest() as stop:
            for epoch in range(first_epoch, params.epochs):
                epoch_start, epoch_steps = time.time(), 0
                for _ in range(step - epoch * spe, spe):  # the steps left in this epoch
                    views = next(batches)
                    lr = schedule.apply(optimizer, step)
                    views = [v.to(d.device, non_blocking=True, memory_format=torch.channels_last)
                             if d.device.type == "cuda" else v for v in views]
                    if finish_views is not None:
                        views = [finish(v) for finish, v in zip(finish_views, views)]
                    with autocast:
                        out_dict = model(views)
                    loss = out_dict["loss"]
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    method.momentum_update(progress=(step + 1) / total_steps)
                    step += 1
                    epoch_steps += 1
                    window_steps += 1
                    losses.add(step, epoch, lr, loss.detach())  # stays on the device
                    run.stepped(step)
                    if step % params.log_every == 0 or step == total_steps:
                        read_losses()
                        stop_if_diverged(losses, d)  # every process reads at this step: a collective is safe
                        elapsed = time.time() - window_start
                        rate = window_steps * params.batch_size / max(elapsed, 1e-9)
                        window_rates.append(rate)
                        record = {"kind": "step", "step": step, "epoch": epoch,
                                  "loss": mean_over_ranks(losses.last, d), "lr": lr,
                                  "momentum": current_momentum(method, out_dict), "images_per_s": rate,
                                  **_floats(out_dict)}
                        log.write(record)
                        if bar is not None:
                            bar.set_postfix(loss=f"{losses.last:.4f}", lr=f"{lr:.3g}", epoch=epoch)
                        window_start, window_steps = time.time(), 0
                    if bar is not None:
                        bar.update(1)
                    requested = stop.signum is not None or step == params.stop_at_step
                    if any_true(requested, d):  # a CPU collective: the host does not wait for the GPU
                        interrupted = signal.Signals(stop.signum).name if stop.signum else "stop_at_step"
                        break
                if interrupted and step % spe:  # stopped inside the epoch: the next batch is this epoch's
                    losses.read()  # one host wait: the epoch's losses so far go into the checkpoint
                    stop_if_diverged(losses, d)
                    save(epoch)
                    break

                epoch_done, scores = epoch + 1, None
                line = {"epoch": epoch_done, "step": step, "lr": lr, "scores": None,
                        "images_per_s": epoch_steps * params.batch_size / max(time.time() - epoch_start, 1e-9)}
                probing = params.monitor != "none" and (epoch_done % params.monitor_every == 0 or
                                                        epoch_done == params.epochs)  # alike on every process
                if probe is not None and probing:
                    probe_start = time.time()
                    scores = probe.score(method.backbone)  # a measured probe: it waits for the device
                    line["scores"], line["probe_s"] = scores, time.time() - probe_start
                    monitor_state["history"].append({"epoch": epoch_done, "step": step, **scores})
                    log.write({"kind": "monitor", "step": step, "epoch": epoch_done, **scores,
                               "probe_s": line["probe_s"],
                               **{f"init_{k}": v for k, v in monitor_state["init"].items()
                                  if not k.endswith("_seeds")}})
                if d.is_main:
                    epoch_lines.append(line)
                if scores is not None:  # the probe waited for the device: reading the losses is free now
                    read_losses()
                    window_start, window_steps = time.time(), 0  # the windows' img/s leave out the probe
                if probing:  # rank 0 alone read its losses: every process learns what it found
                    stop_if_diverged(losses, d)
                if interrupted and step == total_steps:  # the stop came with the last step: the run is complete
                    interrupted = None
                if interrupted or epoch_done % params.checkpoint_every == 0 or epoch_done == params.epochs:
                    save(epoch_done)
                run.epoch_ended(step)
                if interrupted:  # stopped on the epoch's last step, after the epoch's end
                    break
            read_losses()
            stop_if_diverged(losses, d)
            if writer is not None:
                writer.wait()  # the final checkpoint is on disk before the run returns
            run.finished(step)
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):  # the error that stopped the run is the one to see
                writer.close()
        raise
    if writer is not None:
        writer.close()
    if bar is not None:
        bar.close()

    wall = time.time() - start_time
    steady = float(np.median(window_rates)) if window_rates else None
    fingerprints = gather_objects(weights_sha256(method), d)  # DDP must leave every process with the same weights
    summary = {"out": str(out), "step": step, "total_steps": total_steps, "interrupted": interrupted,
               "wall_s": wall, "resolved": resolved.to_dict(), "monitor": monitor_state,
               "checkpoint": str(out / ckpt_io.CHECKPOINT), "backbone": str(out / ckpt_io.BACKBONE),
               "weights_sha256": fingerprints, "ranks_in_sync": len(set(fingerprints)) == 1,
               **run.summary(params.batch_size), "steady_images_per_s": steady}
    if d.is_main:
        log.write({"kind": "end", "step": step, "interrupted": interrupted, "wall_s": wall,
                   "ranks_in_sync": summary["ranks_in_sync"], "weights_sha256": fingerprints,
                   **run.summary(params.batch_size), "steady_images_per_s": steady})
        if summary["run_images_per_s"] is not None:
            print(f"whole run {summary['run_images_per_s']:.0f} img/s ({summary['run_images']} images, first step "
                  f"done to final checkpoint written, epoch ends included); steady {steady:.0f} img/s (median "
                  f"log window)", file=sys.stderr, flush=True)
        if not summary["ranks_in_sync"]:
            print("warning: the processes ended with different weights (DDP out of sync)", file=sys.stderr)
        if interrupted:
            print(f"stopped at step {step}/{total_steps} ({interrupted}); checkpoint {out / ckpt_io.CHECKPOINT}; "
                  f"continue with --resume", file=sys.stderr, flush=True)
    return summary


def _print_epoch(line: dict, losses: StepLosses, params: PretrainParams, total_steps: int, monitor_state: dict,
                 bar) -> None:
    """An epoch's line on stderr, once all its losses are read (at the log window after it)."""
    loss_sum, steps = losses.epoch_sums.get(line["epoch"] - 1, [0.0, 0])
    text = (f"epoch {line['epoch']}/{params.epochs} step {line['step']}/{total_steps} "
            f"loss {loss_sum / max(1, steps):.4f} lr {line['lr']:.4g} {line['images_per_s']:.0f} img/s")
    if line["scores"]:
        text += (f"; object probe {_fmt(line['scores'])} (random init {_fmt(monitor_state['init'])}; "
                 f"the probe took {line['probe_s']:.1f} s)")
    (bar.write if bar is not None else lambda t: print(t, file=sys.stderr, flush=True))(text)


def weights_sha256(model: nn.Module) -> str:
    """Hash of every parameter's bytes (not buffers: BN statistics are per process on CPU)."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fmt(scores: dict | None) -> str:
    if not scores:
        return "-"
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float) and not k.endswith("_mean"))


def _progress_bar(params: PretrainParams, d: Dist, total: int, initial: int):
    if not (params.progress and d.is_main):
        return None
    return tqdm(total=total, initial=initial, desc=f"pretrain {params.method}", unit="step",
                dynamic_ncols=True, file=sys.stderr)


def _write_params(path: Path, params: PretrainParams, resolved: Resolved) -> None:
    text = yaml.safe_dump(params.to_dict(), sort_keys=False)
    text += "# resolved by the trainer (not parameters):\n"
    text += "".join(f"# {line}\n" for line in yaml.safe_dump(resolved.to_dict(), sort_keys=False).splitlines())
    path.write_text(text)
