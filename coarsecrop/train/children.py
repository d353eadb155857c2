"""Child processes that stop when their parent dies, so that a killed run leaves nothing behind.

A pretraining run is a tree of processes: ``coarsecrop sweep`` -> a worker per run (``--jobs`` > 1) ->
papermill's kernel (jupyter_client starts it in a session of its own, so a terminal's Ctrl-C does not reach
it) -> the trainer (``python -m coarsecrop pretrain``, or torchrun). Killing a process in the middle (``kill
PID`` on the sweep, a restarted or shut-down kernel in JupyterLab) used to leave the processes below it
running, orphaned: a trainer kept a core busy for the rest of its run and wrote into a folder nobody would
read. Now each child asks Linux to send it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so
the stop walks down the tree: a sweep worker's papermill shuts its kernel down, and the trainer, which sits
in a session of its own so that the kernel's shutdown (SIGKILL to the kernel's process group) does not reach
it, gets SIGTERM, finishes its step, saves its checkpoint and exits; running the same sweep or notebook
again resumes from there. Elsewhere than Linux this is a no-op and the old behaviour stays.

The detectron2 finetuning that a transfer kernel starts (``coarsecrop.evaluate.d2``) is such a child too
(``run_logged``): it keeps no checkpoint worth saving (it starts again from the trunk), so it stays in its
parent's process group, and a parent that dies any other way stops it with SIGTERM.

This sits on the trainer's floor (3) so that ``evaluate`` can use it as well as ``runs`` and ``studies``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Bound once, here: between fork and exec (``Popen(preexec_fn=stop_with_parent)``) nothing may be loaded.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def stop_with_parent(parent: int | None = None, signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send this process ``signum`` when its parent dies; True when it took effect (Linux).

    ``parent``: the pid the caller expects as its parent. When the parent died before this call (the child is
    already an orphan), the signal is sent at once, so a late start cannot escape the stop. Two uses: the
    first call of a worker that runs our code, given the pid that started it (the sweep passes its own),
    and ``subprocess.Popen(preexec_fn=stop_with_parent, start_new_session=True)``, between fork and exec
    (one system call, nothing loaded), for a child that runs anything (torchrun passes the SIGTERM on to its
    workers); its own session keeps it out of the parent's process group, so a SIGKILL to that group spares
    it the time to save its checkpoint."""
    if _PRCTL is None or _PRCTL(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)
    return True


def run_logged(cmd: list[str], log: Path) -> int:
    """Run ``cmd`` to the end with its stdout and stderr in the file ``log``, as a child that gets SIGTERM
    when this process dies (a killed kernel, ``kill -9`` on a sweep); its exit code. An exception here (a
    kernel interrupt) kills the child before it propagates, as ``subprocess.run`` does."""
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=stop_with_parent).returncode


class OutliveReader:
    """A text stream (the trainer's stdout or stderr) whose reader may die first: once a write or a flush
    fails because nobody reads any more (a pipe to a killed kernel), the rest is dropped instead of raising,
    so a trainer told to stop by its parent's death reaches its checkpoint instead of dying on an epoch line.
    ``sys.stderr = OutliveReader(sys.stderr)``."""

    def __init__(self, stream):
        self._stream, self.gone = stream, False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ConnectionResetError):
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.gone = True

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)
