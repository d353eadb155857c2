"""The background checkpoint writer: a snapshot taken at submit, one write in flight, errors surface,
and a process killed during a write leaves a loadable checkpoint (the previous one)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from coarsecrop.io import TMP_MARK
from coarsecrop.train import checkpoint as ckpt_io
from coarsecrop.train.checkpoint import CheckpointWriter, HostCopy

ROOT = Path(__file__).resolve().parents[1]


def test_host_copy_is_a_snapshot_of_tensors_and_containers():
    live = {"model": {"w": torch.ones(3)}, "history": [{"epoch": 1}], "step": 4}
    copy = HostCopy()(live)
    live["model"]["w"].add_(1)  # training goes on: in-place updates, appended history
    live["history"].append({"epoch": 2})
    assert torch.equal(copy["model"]["w"], torch.ones(3)) and copy["history"] == [{"epoch": 1}]
    assert copy["step"] == 4


def test_writes_the_state_of_submit_time_and_the_trunk_beside_it(tmp_path):
    w = torch.arange(4.0)
    writer = CheckpointWriter()
    writer.submit({"model": {"backbone.conv.weight": w, "head.bias": torch.zeros(2)}, "step": 1},
                  tmp_path / "c.pt", tmp_path / "b.pt")
    w.mul_(0)  # the next step changes the weights while the file is written
    writer.close()
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["model"]["backbone.conv.weight"],
                       torch.arange(4.0))
    assert list(torch.load(tmp_path / "b.pt", weights_only=True)) == ["conv.weight"]  # the trunk alone


def test_one_write_in_flight_and_the_last_one_is_waited_for(tmp_path, monkeypatch):
    spans, lock = [], threading.Lock()

    def slow_save(obj, path):
        start = time.monotonic()
        time.sleep(0.2)
        Path(path).write_text(str(obj["step"]))
        with lock:
            spans.append((start, time.monotonic()))

    monkeypatch.setattr(ckpt_io, "save_torch", slow_save)
    writer = CheckpointWriter()
    t0 = time.monotonic()
    writer.submit({"step": 1}, tmp_path / "c.pt")
    assert time.monotonic() - t0 < 0.15  # submit returns while the file is written
    writer.submit({"step": 2}, tmp_path / "c.pt")  # waits for the first write
    writer.wait()
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # never two at once
    assert (tmp_path / "c.pt").read_text() == "2"


def test_an_error_in_the_writer_surfaces_in_the_training_thread(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    writer = CheckpointWriter()
    writer.submit({"step": 1}, tmp_path / "file" / "c.pt")
    with pytest.raises(OSError):
        writer.wait()
    writer.submit({"step": 1}, tmp_path / "file" / "c.pt")
    with pytest.raises(OSError):  # or at the next checkpoint
        writer.submit({"step": 2}, tmp_path / "c.pt")
    writer.close()


KILLED_WRITER = textwrap.dedent('''
    import sys, time
    import torch
    from coarsecrop.train.checkpoint import CheckpointWriter

    class Stall:
        """Pickling this blocks: the write of the second checkpoint is caught half-way."""
        def __reduce__(self):
            print("writing", flush=True)
            time.sleep(600)
            return (int, (0,))

    path = sys.argv[1]
    writer = CheckpointWriter()
    writer.submit({"step": 1, "model": {"w": torch.full((1000,), 1.0)}}, path)
    writer.wait()
    writer.submit({"step": 2, "model": {"w": torch.full((100000,), 2.0)}, "z": Stall()}, path)
    time.sleep(600)  # training would go on here
''')


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_process_killed_during_a_write_leaves_the_previous_checkpoint(tmp_path, signum):
    path = tmp_path / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline().strip() == "writing"
        torn = [p for p in tmp_path.iterdir() if TMP_MARK in p.name]
        assert len(torn) == 1  # the new file was being written (under its temporary name)
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    state = torch.load(path, weights_only=True)  # a whole file: the previous checkpoint
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.full((1000,), 1.0))
