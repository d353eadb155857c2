"""A killed parent stops its children (coarsecrop.train.children): the trainer a kernel started saves its
checkpoint and exits instead of running on as an orphan. Linux only (prctl)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


# A child that says when it is ready and writes which signal ended it.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from coarsecrop.train.children import stop_with_parent
    flag = Path(sys.argv[1])
    def stopped(signum, _frame):
        flag.write_text(signal.Signals(signum).name)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stopped)
    if sys.argv[2] == "self":
        stop_with_parent(parent=os.getppid())
    Path(str(flag) + ".ready").write_text(str(os.getpid()))
    time.sleep(120)
""")

# A parent that starts the child, either letting it ask for the signal itself (a pool worker's initializer)
# or asking for it between fork and exec (how launch() starts the trainer), then sleeps until killed.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from coarsecrop.train.children import run_logged, stop_with_parent
    child, flag, how = sys.argv[1], sys.argv[2], sys.argv[3]
    if how == "logged":  # how evaluate.d2 runs detectron2: blocking, output to a log file
        run_logged([sys.executable, child, flag, how], Path(flag + ".log"))
    extra = dict(preexec_fn=stop_with_parent, start_new_session=True) if how == "preexec" else {}
    subprocess.Popen([sys.executable, child, flag, how], **extra)
    time.sleep(120)
""")


@pytest.mark.parametrize("how", ["self", "preexec", "logged"])
def test_a_child_gets_sigterm_when_its_parent_is_killed(tmp_path, how):
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "parent.py").write_text(PARENT)
    flag = tmp_path / "flag"
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "child.py"), str(flag),
                               how], env=_env(), start_new_session=True)
    try:
        _wait_for(lambda: Path(str(flag) + ".ready").exists(), 60, "the child started")
        if how in ("self", "logged"):  # `kill -9 PID` on a sweep or a kernel: the children share its group
            os.kill(parent.pid, signal.SIGKILL)
        else:  # SIGKILL to the parent's whole process group, as jupyter_client kills a kernel: the preexec
            # child sits in a session of its own, so only the parent's death reaches it, as SIGTERM
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        # the flag exists from the moment the child opens it, empty until its write lands: wait for the text
        _wait_for(lambda: flag.exists() and flag.read_text() != "", 10, "the child was told its parent died")
        assert flag.read_text() == "SIGTERM"
    finally:
        if parent.poll() is None:
            parent.kill()
        ready = Path(str(flag) + ".ready")
        if ready.exists() and not flag.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(ready.read_text()), signal.SIGKILL)


def test_a_parent_that_died_before_the_call_stops_the_child_at_once(tmp_path):
    code = ("import os, signal; from coarsecrop.train.children import stop_with_parent; "
            "stop_with_parent(parent=os.getppid() + 1); signal.pause()")
    res = subprocess.run([sys.executable, "-c", code], env=_env(), timeout=60)
    assert res.returncode == -signal.SIGTERM


def test_run_logged_returns_the_exit_code_and_keeps_the_output(tmp_path):
    from coarsecrop.train.children import run_logged

    log = tmp_path / "log.txt"
    assert run_logged([sys.executable, "-c", "import sys; print('to out'); sys.exit('to err')"], log) == 1
    text = log.read_text()
    assert "to out" in text and "to err" in text


def test_output_to_a_reader_that_died_is_dropped_instead_of_stopping_the_writer():
    """The trainer prints an epoch line on a pipe to its kernel; with the kernel killed, that print used to
    raise BrokenPipeError before the trainer reached its checkpoint."""
    from coarsecrop.train.children import OutliveReader

    read, write = os.pipe()
    stream = OutliveReader(os.fdopen(write, "w"))
    stream.write("epoch 1/2\n")
    stream.flush()
    assert os.read(read, 100) == b"epoch 1/2\n" and not stream.gone
    os.close(read)  # the kernel is gone
    assert stream.write("epoch 2/2\n") == len("epoch 2/2\n")
    stream.flush()
    stream.write("stopped at step 7\n")
    stream.flush()
    assert stream.gone


# What a notebook kernel does: launch() the trainer (coarsecrop.studies.pretrain), streaming its output.
# Like ipykernel, it installs its own SIGINT handler: a process started in the background by a shell without
# job control (`make test &`) inherits SIGINT ignored, and would not see the stop button.
KERNEL = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from coarsecrop.studies.pretrain import PretrainStudyParams, launch
    from coarsecrop.train import load_pretrain_params
    run_dir = Path(sys.argv[2])
    train = load_pretrain_params(sys.argv[1], {"out": str(run_dir / "train")})
    launch(PretrainStudyParams(), train, run_dir)
""")


@pytest.mark.slow
@pytest.mark.parametrize("stop, trainer_saw", [("kill the kernel", "SIGTERM"), ("interrupt the kernel", "SIGINT")])
def test_a_stopped_kernel_stops_its_trainer_which_saves_its_checkpoint(tmp_path, stop, trainer_saw):
    """Before, a kernel restarted in JupyterLab (or a killed sweep) left its trainer running to the end."""
    from coarsecrop.crops.job import run_crop_job
    from coarsecrop.data.synthetic import write_scenes
    from coarsecrop.train.checkpoint import load_checkpoint

    write_scenes(tmp_path / "scenes", num_images=16, seed=0, size=64, progress=False)
    run_crop_job(tmp_path / "scenes", split="train", out=tmp_path / "gt", strategy="gt", n=5, workers=0,
                 progress=False, device="cpu")
    params = tmp_path / "train.yaml"
    params.write_text(yaml.safe_dump(dict(
        method="moco_v2", backbone="resnet10_w8", image_size=16, method_params={"queue_size": 64}, epochs=400,
        batch_size=8, workers=0, threads=1, monitor="none", log_every=1, progress=False, device="cpu",
        manifest=str(tmp_path / "gt"))))
    (tmp_path / "kernel.py").write_text(KERNEL)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = run_dir / "train" / "metrics.jsonl"

    def lines() -> list[dict]:
        return [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []

    kernel = subprocess.Popen([sys.executable, str(tmp_path / "kernel.py"), str(params), str(run_dir)], env=_env(),
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: sum(r["kind"] == "step" for r in lines()) >= 3, 120, "the trainer took 3 steps")
        if stop == "kill the kernel":
            os.killpg(kernel.pid, signal.SIGKILL)  # jupyter_client's kill: the kernel's whole process group
        else:
            kernel.send_signal(signal.SIGINT)  # JupyterLab's stop button: SIGINT to the kernel
        kernel.wait(timeout=120)
        _wait_for(lambda: bool(lines()) and lines()[-1]["kind"] == "end", 60, "the trainer wrote its end record")
        end = lines()[-1]
        assert end["interrupted"] == trainer_saw
        stopped = load_checkpoint(run_dir / "train" / "checkpoint.pt")
        assert 3 <= stopped["step"] == end["step"] < stopped["resolved"]["total_steps"]
    finally:
        if kernel.poll() is None:
            os.killpg(kernel.pid, signal.SIGKILL)


def _processes_reading(path: Path) -> list[int]:
    """Pids whose command line names ``path`` (the trainer's parameters file)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("jobs, signum, to", [(2, signal.SIGTERM, "sweep"), (1, signal.SIGKILL, "sweep"),
                                              (2, signal.SIGINT, "group"), (1, signal.SIGINT, "group")])
def test_a_stopped_sweep_starts_nothing_more_leaves_no_trainer_running_and_its_runs_saved(tmp_path, jobs, signum,
                                                                                        to):
    """`kill PID` on a sweep, `kill -9 PID`, and Ctrl-C (SIGINT to the terminal's process group) with worker
    processes or without: the sweep stops, the kernels below go (ipykernel watches its parent), each trainer
    below them saves and exits, and no further point starts (Ctrl-C once used to let the worker pool start
    every queued point)."""
    from tests.conftest import copy_book_sources

    root = copy_book_sources(tmp_path / "book")
    sweep = root / "params" / "sweeps" / "long.yaml"
    sweep.write_text(yaml.safe_dump({"notebook": "02_pretrain", "preset": "smoke", "fixed": {"epochs": 400},
                                     "grid": {"strategy": ["gt", "image", "grid"]}}))
    runs = root / "runs" / "02_pretrain"
    main = subprocess.Popen([sys.executable, "-m", "coarsecrop", "sweep", str(sweep), "--jobs", str(jobs)],
                            cwd=root, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a terminal's
    try:
        def trains() -> list[Path]:
            return sorted(p.parent for p in runs.glob("*/train/metrics.jsonl"))

        def steps(train: Path) -> int:
            return sum('"kind": "step"' in x for x in (train / "metrics.jsonl").read_text().splitlines())

        _wait_for(lambda: len(trains()) == jobs and all(steps(t) >= 3 for t in trains()), 240,
                  f"{jobs} trainer(s) took 3 steps")
        started = trains()
        params_files = [t.parent / "pretrain.yaml" for t in started]
        assert all(_processes_reading(f) for f in params_files), "the trainers are running"
        if to == "group":
            os.killpg(main.pid, signum)
        else:
            os.kill(main.pid, signum)
        main.wait(timeout=60)
        if signum == signal.SIGINT:
            assert main.returncode == 130
        _wait_for(lambda: not any(_processes_reading(f) for f in params_files), 60, "no trainer left running")
        for train in started:
            end = json.loads((train / "metrics.jsonl").read_text().splitlines()[-1])
            assert end["kind"] == "end" and end["interrupted"] in ("SIGTERM", "SIGINT"), train
            assert (train / "checkpoint.pt").is_file()
        assert len([p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("_")]) == jobs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.pid, signal.SIGKILL)
