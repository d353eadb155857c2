"""Files on the ground floor: atomic writes (text, JSON, torch, anything), the one
checkpoint reader (``torch.load`` with weights_only), file sha256, JSON-safe values, and
the YAML reader of parameters.

Every file the project writes that a reader may look at while it is being written (a manifest shard, a
metrics.json, a checkpoint, a run record) goes through ``write_atomic``: the bytes go to a temporary name
in the same folder (``<name>.tmp.<host>.<pid>``, so concurrent processes and ranks never share one), are
fsync'ed and renamed over the target, so a reader sees the old file or the whole new one, never a part.
An error removes the temporary; a killed process may leave it behind (``TMP_MARK`` names it, so the crop
manifest's resume can find and remove it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

TMP_MARK = ".tmp."


def temporary_name(path: Path) -> Path:
    """The temporary file ``write_atomic`` writes before the rename: ``<name>.tmp.<host>.<pid>``."""
    return path.with_name(f"{path.name}{TMP_MARK}{socket.gethostname()}.{os.getpid()}")


def write_atomic(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (binary, or UTF-8 text with ``\\n`` line ends),
    fsync it, rename it over ``path``; returns ``path``. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with (open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline="\n")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``text`` to ``path``, atomically."""
    return write_atomic(path, lambda f: f.write(text), binary=False)


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (see ``json_safe``: NaN and inf written as null) with sorted keys, indent 2 and a final
    newline, written atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path``, atomically."""
    return write_atomic(path, lambda f: torch.save(obj, f))


def load_torch(path: str | Path, expected: str) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU: the one reader of every checkpoint the project takes.

    A missing or unusable file is a ValueError naming the file, the reason in one line (``load_error``) and
    ``expected`` (what the caller takes, e.g. "a trainer checkpoint, backbone.pt or a torchvision state_dict")."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load fails in many ways on bad bytes (zip, pickle, index)
        raise ValueError(f"{path}: cannot read checkpoint ({load_error(err)}); expected {expected}") from err


def load_error(err: BaseException) -> str:
    """torch.load's error in one line. A ``weights_only`` refusal is a paragraph about PyTorch 2.6 with the
    reason near its end ("WeightsUnpickler error: Unsupported global: ..."); that reason is what is kept,
    with what it means: the file holds objects other than tensors, or bytes that are no pickle at all."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch's message carries terminal colour codes
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
    if found:
        detail = " ".join(found.group(1).split()).split(" Please use ")[0]
        if detail.startswith("Unsupported global"):
            return (f"it holds objects other than tensors: {detail} coarsecrop reads checkpoints with "
                    "weights_only=True and never runs a file's code; save tensors only")
        return f"not a torch.save file, or truncated or corrupt: {detail}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__  # the first sentence
    return f"{first}: the file is truncated, corrupt or not a torch.save file"


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON values, recursively: NaN / inf -> None (JSON has no NaN; a missing score is
    null), numpy and torch scalars -> Python numbers, arrays -> lists, tuples -> lists, dict keys -> str,
    paths -> str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
        return json_safe(value.item())
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return str(value)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's (and Python's) floats in exponent form: ``1e-3`` and ``5E+4`` are
    floats, where PyYAML, a YAML 1.1 reader, leaves them strings (``lr: 1e-3`` would then fail its type)."""


ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def read_yaml(text: str, source: str | Path = "YAML text") -> Any:
    """Parameters written as YAML (a preset, a sweep, a params file, a ``key=value`` on the command line).
    Invalid YAML is a one-line ValueError naming ``source`` (the file), the line and what is wrong."""
    try:
        return yaml.load(text, Loader=ParamsLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ValueError(f"{source}: not valid YAML{where}: {problem}") from err
