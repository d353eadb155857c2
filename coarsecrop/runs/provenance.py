"""Provenance: one record for every kind of run (a crop study, a pretraining run, a transfer run, a chapter,
any notebook a sweep runs): git commit and dirty flag, package versions, device, world size, wall time,
host. The studies put it under "provenance" in their metrics.json; ``write_if_missing`` writes it beside a
metrics.json that does not say it (with the run's parameters)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import torch

import coarsecrop
from coarsecrop.io import write_text

PACKAGES = ("torch", "torchvision", "numpy", "timm", "opencv-contrib-python-headless", "pycocotools", "pandas",
            "matplotlib", "papermill", "coarsecrop")
# What a run's metrics.json must say about itself; when it does not, provenance.json says it.
PROVENANCE_KEYS = ("git_commit", "versions", "wall_time_s", "device")


def git_state() -> dict:
    """{"git_commit", "git_dirty"} of the checkout the package is imported from; both None when the package
    is not imported from a git checkout of coarsecrop itself (merely installed inside another repository)."""
    package = Path(coarsecrop.__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package,
                             capture_output=True, text=True, timeout=10)
        lines = res.stdout.split()
        if res.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "coarsecrop" != package:
            return {"git_commit": None, "git_dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=lines[0],
                                capture_output=True, text=True, timeout=30)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"git_commit": lines[1], "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def versions() -> dict:
    """Python's and the PACKAGES' versions (None for one not installed)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; else what ``platform`` knows, e.g. "x86_64")."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name; for a CPU its model, the vector instructions torch's kernels use (AVX2, AVX512, ...:
    two machines that differ there round differently, so a CPU run repeats bit for bit only on the same
    kind), its cores and torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"cpu ({cpu_model()}, {platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")


def provenance(device: str | torch.device | None, wall_s: float, world_size: int = 1) -> dict:
    """The record: git commit and dirty flag, versions, device (``auto`` / None: what torch sees here) and
    its name, world size, wall time, host and its CPU count."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return {**git_state(), "versions": versions(), "device": str(device), "device_name": device_name(device),
            "world_size": int(world_size), "wall_time_s": round(wall_s, 2) if math.isfinite(wall_s) else None,
            "host": platform.node(), "cpu_count": os.cpu_count()}


def write_if_missing(run_dir: Path, parameters: dict, wall_s: float) -> Path | None:
    """run_dir/provenance.json (the record and the run's parameters), when run_dir/metrics.json does not say
    its git commit, versions, wall time and device (top level or under "provenance"). Returns its path, or
    None when not needed."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    said = metrics.get("provenance") if isinstance(metrics.get("provenance"), dict) else metrics
    if all(key in said for key in PROVENANCE_KEYS):
        return None
    record = {"parameters": parameters, **provenance(parameters.get("device"), wall_s)}
    return write_text(run_dir / "provenance.json", json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
