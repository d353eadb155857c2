"""The ground floor: atomic writes, JSON-safe values, file hashes, the device rule."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from coarsecrop.device import resolve_device
from coarsecrop.io import (TMP_MARK, file_sha256, json_safe, load_torch, save_torch, write_atomic, write_json,
                           write_text)


def test_write_json_is_strict_sorted_and_atomic(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"b": math.nan, "a": np.float32(0.5), "c": (1, Path("x")),
                                                    1: np.int64(3), "t": torch.tensor(2.0)})
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text) == {"1": 3, "a": 0.5, "b": None, "c": [1, "x"], "t": 2.0}
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")

    def fail(f):
        f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(path, fail, binary=False)
    assert path.read_text() == "old" and not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_json_safe_values():
    assert json_safe({"x": [np.float64("inf"), np.bool_(True), np.arange(2)]}) == {"x": [None, True, [0, 1]]}
    assert type(json_safe(np.float64(0.25))) is float


def test_save_torch_and_sha256(tmp_path):
    path = save_torch({"w": torch.ones(2)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_torch_says_in_one_line_why_a_file_is_unusable(tmp_path):
    assert torch.equal(load_torch(save_torch({"w": torch.ones(2)}, tmp_path / "ok.pt"), "x")["w"], torch.ones(2))
    torch.save({"a": np.zeros(3)}, tmp_path / "numpy.pt")  # weights_only refuses the numpy global
    (tmp_path / "garbage.pt").write_bytes(b"garbage" * 10)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "numpy.pt").read_bytes()[:300])
    expected = {"numpy.pt": "it holds objects other than tensors: Unsupported global: GLOBAL numpy",
                "garbage.pt": "not a torch.save file, or truncated or corrupt: Unsupported operand",
                "cut.pt": "the file is truncated, corrupt or not a torch.save file",
                "missing.pt": "checkpoint file does not exist"}
    for name, reason in expected.items():
        with pytest.raises(ValueError) as err:
            load_torch(tmp_path / name, "a state_dict")
        message = str(err.value)
        assert message.startswith(f"{tmp_path / name}: ") and reason in message, message
        # one line, no terminal colour codes, not torch's paragraph about PyTorch 2.6
        assert "\n" not in message and "\x1b" not in message and "PyTorch 2.6" not in message, message
        assert name == "missing.pt" or message.endswith("; expected a state_dict"), message


def test_device_rule():
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    assert resolve_device(None).type == resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu7", "mps", "meta"):
        with pytest.raises(ValueError, match="not a device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:0"):
            with pytest.raises(ValueError, match="no GPU"):
                resolve_device(name)
