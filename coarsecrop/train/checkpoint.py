"""Checkpoints: atomic writes, ``torch.load(weights_only=True)``-safe contents, RNG capture, backbone export.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes, no numpy arrays),
so it loads anywhere with ``weights_only=True``:
  format, arch {method, backbone, image_size}, params (PretrainParams as a dict), resolved (optimiser
  settings, world size, lr scaling actually used), model, optimizer, schedule, scaler, step, epoch,
  sampler, rng (one entry per process), monitor (random-init and per-epoch probe scores).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coarsecrop.io import save_torch

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
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise ValueError(f"checkpoint {path} cannot be read with weights_only=True: {err}") from err
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


def export_backbone(backbone: nn.Module, path: str | Path) -> Path:
    """The trunk as a torchvision-style state_dict (plain tensors, CPU), written atomically.

    ``coarsecrop.models.backbones.build_backbone(name, checkpoint=path)`` loads it as phi."""
    state = {k: v.detach().to("cpu").clone() for k, v in backbone.state_dict().items()}
    return save_torch(state, path)
