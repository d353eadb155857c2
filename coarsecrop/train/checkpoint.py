"""Checkpoints: atomic writes, ``torch.load(weights_only=True)``-safe contents, RNG capture, backbone export.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes, no numpy arrays),
so it loads anywhere with ``weights_only=True``:
  format, arch {method, backbone, image_size}, params (PretrainParams as a dict), resolved (optimiser
  settings, world size, lr scaling actually used), model, optimizer, schedule, scaler, step, epoch,
  sampler, rng (one entry per process), monitor (random-init and per-epoch probe scores).

``CheckpointWriter`` takes checkpoints off the training stream: the state is copied to host memory
once, right after the step (on CUDA: non-blocking copies into pinned buffers kept between
checkpoints, then one event), and a background thread waits for that event and writes the files
(atomically: temporary + fsync + rename, ``coarsecrop.io.save_torch``) while training goes on. One
write at most is in flight: the next checkpoint first waits for the previous one; an error in the
writer is raised in the training thread at the next checkpoint or at ``wait``.
"""

from __future__ import annotations

import random
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coarsecrop.io import TMP_MARK, load_torch, save_torch
from coarsecrop.train.params import RUNTIME_KEYS

FORMAT = "coarsecrop.pretrain/1"
CHECKPOINT = "checkpoint.pt"
BACKBONE = "backbone.pt"


def rng_state(device: torch.device) -> dict:
    """This process's RNG states as weights_only-safe values."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what ``rng_state`` captured (the CUDA state only when both sides are on CUDA)."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: str | Path) -> dict:
    """Load a pretraining checkpoint safely (weights_only) onto the CPU; clear errors for other files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (nothing to resume: drop --resume "
                                f"to start the run, or point resume at a checkpoint file)")
    ckpt = load_torch(path, "a coarsecrop pretraining checkpoint (checkpoint.pt of a run folder)")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a coarsecrop pretraining checkpoint (format {FORMAT!r}); "
                         f"a plain backbone state_dict belongs to `coarsecrop crops --checkpoint`")
    return ckpt


def check_architecture(ckpt: dict, arch: dict, path: str | Path) -> None:
    """Refuse a checkpoint of another method / backbone / view size before touching any weights."""
    theirs = ckpt.get("arch", {})
    diff = {k: (theirs.get(k), v) for k, v in arch.items() if theirs.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"checkpoint {path} is of another architecture ({detail}): resume with the "
                         f"parameters it was trained with, or start a new run in another out folder")


def load_model_state(model: nn.Module, state: dict, path: str | Path) -> None:
    """Strict load with a readable error instead of a wall of missing keys."""
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"checkpoint {path} does not fit this model (another architecture?): "
                         f"{str(err).splitlines()[0]} ...") from err
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model (another architecture?): "
                         f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]})")


class HostCopy:
    """Copies of a checkpoint's tensors in host memory, taken without waiting for the device.

    CPU tensors are cloned. CUDA tensors are copied (non_blocking) into pinned buffers that are kept
    and reused by the next checkpoint (the same tree of names, shapes, dtypes); ``ready`` records one
    event after the copies, which the writer thread waits for. Containers are rebuilt, so the copy does
    not change when training goes on mutating the live dicts and lists."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}
        self._queued = False  # a CUDA copy was queued since the last ``ready``

    def __call__(self, obj, name: str = ""):
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj.detach(), name)
        if isinstance(obj, dict):
            return {k: self(v, f"{name}/{k}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self(v, f"{name}/{i}") for i, v in enumerate(obj))
        return obj  # ints, floats, strings, None: immutable

    def _tensor(self, t: torch.Tensor, name: str) -> torch.Tensor:
        if t.device.type != "cuda":
            return t.clone()
        buffer = self._buffers.get(name)
        if buffer is None or (buffer.shape, buffer.stride(), buffer.dtype) != (t.shape, t.stride(), t.dtype):
            # the same strides (channels_last weights stay channels_last); the buffers are kept
            buffer = self._buffers[name] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, pin_memory=True)
        self._queued = True
        return buffer.copy_(t, non_blocking=True)

    def ready(self):
        """An event after the copies queued so far on the current CUDA stream (None: nothing queued)."""
        if not self._queued:
            return None
        self._queued = False
        event = torch.cuda.Event()
        event.record()
        return event


class CheckpointWriter:
    """Writes checkpoints (and the exported trunk beside them) on one background thread.

    ``submit`` waits for the previous write (raising its error, if any), copies the state to host
    memory and returns; ``wait`` waits for the write in flight (the run calls it before it returns).
    A process killed during a write leaves the previous checkpoint in place (the rename is atomic)."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None
        self._copy = HostCopy()

    def submit(self, state: dict, path: str | Path, backbone_path: str | Path | None = None,
               backbone_prefix: str = "backbone.") -> None:
        """Queue ``state`` for ``path``; with ``backbone_path``, also the trunk: the entries of
        ``state["model"]`` under ``backbone_prefix``, prefix removed: a torchvision-style state_dict that
        ``coarsecrop.models.backbones.build_backbone(name, checkpoint=path)`` loads as phi."""
        self.wait()  # one write in flight at most; the host buffers are free again after this
        host = self._copy(state)
        event = self._copy.ready()
        trunk = None
        if backbone_path is not None:
            trunk = {k[len(backbone_prefix):]: v for k, v in host["model"].items() if k.startswith(backbone_prefix)}
        self._pending = self._pool.submit(self._write, host, Path(path), trunk, backbone_path, event)

    @staticmethod
    def _write(state, path, trunk, backbone_path, event) -> None:
        if event is not None:
            event.synchronize()  # the copies are done (this thread waits; training does not)
        if trunk is not None:  # the trunk first: a stop between the two leaves the checkpoint behind, and a resume
            save_torch(trunk, backbone_path)  # from it remakes both (exact resume); the other order left a
        save_torch(state, path)  # finished checkpoint beside an older backbone.pt that a resume never rewrote

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; raise the error it met."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the write in flight, then stop the thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def check_resume_params(stored: dict, current: dict, path: Path) -> None:
    """A resumed run must compute the same thing: of the parameters (``PretrainParams.to_dict()``), only
    runtime keys may differ."""
    diffs = [f"{k}: {stored.get(k)!r} in the checkpoint, {current[k]!r} now"
             for k in current if k not in RUNTIME_KEYS and stored.get(k) != current[k]]
    if diffs:
        raise ValueError(f"cannot resume from {path}: the run's parameters differ:\n  " + "\n  ".join(diffs)
                         + f"\nOnly {', '.join(sorted(RUNTIME_KEYS))} may change on resume; "
                           "start a new run (another out folder) to change the others.")


def check_resume_data(stored: dict, current: dict, path: Path, manifest: str) -> None:
    """A resumed run must read the same data: the same number of pseudo-images and the same schedule (of the
    resolved values, ``Resolved.to_dict()``). The parameters alone do not say so: a manifest folder can be
    rewritten in place."""
    diffs = [f"{k}: {stored[k]!r} in the checkpoint, {current[k]!r} now"
             for k in ("num_samples", "num_images", "steps_per_epoch", "total_steps") if k in stored
             and stored[k] != current[k]]
    if diffs:
        raise ValueError(f"cannot resume from {path}: the data differ from the run's:\n  " + "\n  ".join(diffs)
                         + f"\nThe manifest {manifest} changed since the run started (rewritten, or shards added or "
                           "removed): resume with the manifest the run started on, or start a new run (another "
                           "out folder).")


def remove_temporaries(out: Path) -> list[Path]:
    """Delete what a killed writer left of checkpoint.pt and backbone.pt (``<name>.tmp.<host>.<pid>``, as large
    as a checkpoint): called by rank 0 on resume, before it writes any."""
    found = [tmp for name in (CHECKPOINT, BACKBONE) for tmp in Path(out).glob(f"{name}{TMP_MARK}*")]
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return found


def resume_differences(stored: dict, current: dict) -> list[str]:
    """What makes a resumed run differ from the uninterrupted one although it may go on (``Resolved.to_dict()``
    of both): another world size (BatchNorm statistics are per process) or, on a CPU, another torch thread
    count (the float sums are split otherwise; ``threads`` unset follows OMP_NUM_THREADS, which torchrun sets
    to 1)."""
    lines = []
    if stored.get("world_size", current["world_size"]) != current["world_size"]:
        lines.append(f"resuming on {current['world_size']} process(es) a run that started on {stored['world_size']}: "
                     "the same global batches, but BatchNorm statistics are per process, so the result is not bit for "
                     "bit the run's on one world size")
    if current["device"] == "cpu" and stored.get("threads", current["threads"]) != current["threads"]:
        lines.append(f"resuming on {current['threads']} torch thread(s) a CPU run that started on {stored['threads']}: "
                     "the result is not bit for bit the uninterrupted run's; set threads (or OMP_NUM_THREADS) as it was")
    return lines


def check_resume_into(path: Path, out: Path, run_files: list[str]) -> None:
    """A checkpoint of another folder resumed into ``out`` that already holds a run (one of ``run_files``) would
    overwrite that run's checkpoint and weights and append to its metrics: refused, naming both."""
    found = [name for name in run_files if (Path(out) / name).exists()]
    if found and Path(path).resolve().parent != Path(out).resolve():
        raise ValueError(f"{out} already holds a run ({', '.join(found)}); resuming {path} there would overwrite it. "
                         f"Resume {path} into its own folder (out={Path(path).parent}) or into an empty one")


def check_resume_target(ckpt: dict, total_steps: int, path: Path, out: Path) -> None:
    """A finished run resumed into another out folder trains no step, so it would save nothing there: refused
    (the summary would name a checkpoint and weights that were never written). In its own folder it is a no-op."""
    if int(ckpt["step"]) >= total_steps and Path(path).resolve().parent != Path(out).resolve():
        raise ValueError(f"{path} is of a finished run (step {ckpt['step']}/{total_steps}): nothing is left to resume "
                         f"into {out}. Its weights are {Path(path).parent / BACKBONE}; to train longer, start a new run")
