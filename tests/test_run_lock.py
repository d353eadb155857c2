"""A run's lock (coarsecrop.runs.notebook.run_lock): two processes never make the same run folder at once
(two sweeps sharing a row, two Slurm array tasks, a book build beside a sweep), and a lock left by a process
that is gone never blocks the run for good."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coarsecrop.runs import notebook
from coarsecrop.runs.notebook import RunBusy, execute, run_lock


def lock_of(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.lock"


def hold(run_dir: Path, host: str, pid: int, age: float = 0.0) -> Path:
    """A lock as another process would have left it, last refreshed ``age`` seconds ago."""
    lock = lock_of(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": host, "pid": pid, "since": "2026-12-02T12:00:00"}))
    then = time.time() - age
    os.utime(lock, (then, then))
    return lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_is_held_while_the_block_runs_and_refused_to_a_second_taker(tmp_path):
    run_dir = tmp_path / "runs" / "02_pretrain" / "abc"
    with run_lock(run_dir) as lock:
        assert lock == lock_of(run_dir)
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunBusy, match=f"pid {os.getpid()}") as busy:
            with run_lock(run_dir):
                pass
        assert str(run_dir) in str(busy.value) and "delete it" in str(busy.value)
        assert lock.is_file()  # the refused taker leaves the holder's lock alone
    assert not lock.exists()


def test_a_lock_is_released_when_the_block_raises(tmp_path):
    run_dir = tmp_path / "r"
    with pytest.raises(ZeroDivisionError):
        with run_lock(run_dir):
            1 / 0
    assert not lock_of(run_dir).exists()


def test_a_lock_of_a_process_of_this_host_that_is_gone_is_taken_over(tmp_path):
    run_dir = tmp_path / "r"
    hold(run_dir, socket.gethostname(), dead_pid())
    with run_lock(run_dir) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("age,taken", [(5.0, False), (notebook.LOCK_STALE_S + 60.0, True)])
def test_another_nodes_lock_is_taken_over_only_when_it_went_silent(tmp_path, age, taken):
    """A process of another node cannot be asked whether it lives: its lock counts as gone once it has not
    been refreshed for LOCK_STALE_S (a job killed at its time limit, requeued on another node)."""
    run_dir = tmp_path / "r"
    hold(run_dir, "some-other-node", 4242, age=age)
    if taken:
        with run_lock(run_dir) as lock:
            assert json.loads(lock.read_text())["host"] == socket.gethostname()
    else:
        with pytest.raises(RunBusy, match="some-other-node, pid 4242"):
            with run_lock(run_dir):
                pass


def test_silence_is_read_on_the_file_systems_clock_not_this_hosts(tmp_path, monkeypatch):
    """On a shared file system this node's clock may run ahead of the one that stamps the lock's mtime:
    another node's fresh lock stays held however far off ``time.time`` is, and a silent one is still taken."""
    real = time.time
    run_dir = tmp_path / "r"
    hold(run_dir, "some-other-node", 4242, age=5.0)
    monkeypatch.setattr(notebook.time, "time", lambda: real() + 10 * notebook.LOCK_STALE_S)  # ahead: looks silent
    with pytest.raises(RunBusy, match="refreshed [0-9] s ago"):
        with run_lock(run_dir):
            pass
    monkeypatch.setattr(notebook.time, "time", real)
    hold(run_dir, "some-other-node", 4242, age=notebook.LOCK_STALE_S + 60)
    monkeypatch.setattr(notebook.time, "time", lambda: real() - 10 * notebook.LOCK_STALE_S)  # behind: looks fresh
    with run_lock(run_dir) as lock:
        assert json.loads(lock.read_text())["host"] == socket.gethostname()
    assert [p.name for p in run_dir.parent.iterdir()] == []  # the clock probe is gone too


def test_a_folder_where_the_clock_probe_cannot_be_written_is_named_not_taken_for_a_live_holder(tmp_path, monkeypatch):
    """A full (or read-only) file system: the probe beside a held lock cannot be created. The error names the
    folder and the cause; it used to read as a live holder "refreshed 0 s ago"."""
    run_dir = tmp_path / "r"
    hold(run_dir, "some-other-node", 4242, age=notebook.LOCK_STALE_S + 60)
    real_touch = Path.touch

    def full(self, *args, **kwargs):
        if self.name.startswith(".clock."):
            raise OSError(28, "No space left on device", str(self))
        return real_touch(self, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        with run_lock(run_dir):
            pass
    assert str(run_dir.parent) in str(caught.value) and "writable" in str(caught.value)


def test_the_holder_refreshes_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "LOCK_BEAT_S", 0.05)
    run_dir = tmp_path / "r"
    with run_lock(run_dir) as lock:
        past = time.time() - 1000
        os.utime(lock, (past, past))
        deadline = time.time() + 10
        while lock.stat().st_mtime < time.time() - 60 and time.time() < deadline:
            time.sleep(0.05)
        assert lock.stat().st_mtime > time.time() - 60


def test_execute_leaves_a_run_another_process_makes_alone(tmp_path, capsys):
    """The second executor neither empties the folder (a fresh run) nor resumes into it, nor writes its
    record: it says who holds the run and returns "busy"."""
    run_dir = tmp_path / "runs" / "02_pretrain" / "abc"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "running"}')
    (run_dir / "checkpoint.pt").write_text("steps of the other process")
    lock = hold(run_dir, socket.gethostname(), os.getpid())  # alive: this very process
    task = {"run_dir": str(run_dir), "record": {"notebook": "02_pretrain", "parameters": {}, "code": "x"}}
    for resume in (True, False):
        result = execute(task, resume=resume, blocked="would be recorded as failed")
        assert result["status"] == "busy" and str(os.getpid()) in result["error"]
    assert (run_dir / "run.json").read_text() == '{"status": "running"}'
    assert (run_dir / "checkpoint.pt").read_text() == "steps of the other process"
    assert not (run_dir / "FAILED.txt").exists() and lock.is_file()
    assert "another process is making this run" in capsys.readouterr().err


def test_execute_releases_its_lock_after_a_run(tmp_path):
    run_dir = tmp_path / "runs" / "03_transfer" / "abc"
    task = {"run_dir": str(run_dir), "record": {"notebook": "03_transfer", "parameters": {}, "code": "x"}}
    result = execute(task, blocked="pretraining run missing")
    assert result["status"] == "failed" and json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not lock_of(run_dir).exists()
