"""One notebook run: jupytext -> papermill, the run folder and its record.

A run of notebook ``NN_topic`` with effective parameters P lives in runs/NN_topic/<run id>/ (the id:
``coarsecrop.params.run_id_of(P)``) and holds the executed notebook, run.json (the record: notebook,
preset, run id, parameters, code fingerprint, status, wall time, error), the notebook's metrics.json
and figures, provenance.json where metrics.json does not say its own, FAILED.txt when it failed and
kernel.log (the kernel's standard error). ``execute`` is the one place a notebook is executed; the book
(``coarsecrop book run``) and the sweeps (``coarsecrop sweep``) both go through it.

    task = notebook_task(root, "01_crops", values={"n": 3}, preset="smoke", preset_label="params/smoke/01_crops.yaml")
    result = execute(task, resume=False)        # {"status": "ok" | "failed", "wall_time_s", "error"}
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from pathlib import Path


import coarsecrop
from coarsecrop.io import read_yaml, write_text
from coarsecrop.params import run_id_of
from coarsecrop.runs.provenance import write_if_missing

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# Starts of a kernel that dies before it answers (before any cell runs) that a run makes before it fails.
# With runs side by side (sweep --jobs) two kernels can be handed the same free TCP port: jupyter_client
# finds free ports, closes them and gives them to the kernel, which binds them a moment later, so a kernel
# started at the same time may take one first (ZMQError "Address already in use" in kernel.log;
# nteract/papermill#511). The next start draws new ports.
KERNEL_STARTS = 3
# Where a sweep keeps the previous finished run of a point it makes again (runs/<notebook>/.replaced/<id>/).
REPLACED = ".replaced"
# A run's lock is refreshed (its mtime) every LOCK_BEAT_S seconds while the run goes on; one not refreshed for
# LOCK_STALE_S seconds belongs to a process that is gone (killed at a time limit on another node), and so does
# one of a process of this host that no longer exists: either is taken over. The silence is read on the
# file system's clock (the lock's mtime against that of a file touched beside it just now), not this host's:
# on a shared file system the nodes' clocks may disagree by more than LOCK_STALE_S.
LOCK_BEAT_S, LOCK_STALE_S = 15, 120


class RunBusy(RuntimeError):
    """Another live process holds the run's lock."""


def _holder_gone(holder: dict, age: float) -> bool:
    if age > LOCK_STALE_S:
        return True
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False  # another node's process: only its silence (age) says it is gone
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _fs_now(folder: Path) -> float:
    """The time now on the clock of the file system holding ``folder``: the mtime of a file created there."""
    probe = folder / f".clock.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}"
    try:
        probe.touch()
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)


def _take(run_dir: Path, me: dict) -> Path:
    """Create the run's lock, runs/<notebook>/.<run id>.lock (O_EXCL: of two processes at once, one wins), or
    take over a stale one, and return it; else RunBusy."""
    lock = run_dir.parent / f".{run_dir.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                now = _fs_now(lock.parent)
            except OSError as e:
                raise OSError(f"{lock.parent}: cannot create a file there ({e}); a run is held by a lock file in "
                              f"this folder, so it needs a writable file system with free space") from e
            try:
                holder = json.loads(lock.read_text(encoding="utf-8") or "{}")
                age = now - lock.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                holder, age = {}, 0.0  # being written this very moment: a live holder
            if not _holder_gone(holder, age):
                raise RunBusy(
                    f"{run_dir}: another process is making this run "
                    f"(host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('since', '?')}; "
                    f"its lock {lock} was refreshed {age:.0f} s ago). Wait for it to finish; a lock not refreshed "
                    f"for {LOCK_STALE_S} s is taken over by itself, or delete it if that process is gone") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        return lock
    raise RunBusy(f"{lock}: taken over by another process at the same moment; run again")


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold runs/<notebook>/.<run id>.lock (host, pid, start) while the block runs, refreshing it every
    LOCK_BEAT_S seconds from a thread; raises RunBusy naming the holder when a live process holds it."""
    lock = _take(run_dir, {"host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
    stop = threading.Event()

    def beat():
        while not stop.wait(LOCK_BEAT_S):
            with contextlib.suppress(OSError):
                os.utime(lock)

    thread = threading.Thread(target=beat, name=f"lock-{run_dir.name}", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        thread.join()
        lock.unlink(missing_ok=True)


def convert(source: Path, target: Path) -> Path:
    """jupytext py:percent -> .ipynb with the python3 kernelspec (written only when it changes)."""
    import jupytext  # the book extra (optional dependency), as papermill

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    text = jupytext.writes(nb, fmt="ipynb")
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return target


def runner_notebook(root: Path, name: str) -> Path:
    """notebooks/<name>.py converted for the runners (book run, sweep) into runs/.notebooks/<name>.ipynb, never
    over notebooks/<name>.ipynb: that is the file jupytext pairs with the script, which a researcher may have
    executed in JupyterLab (a conversion would replace its outputs with none)."""
    return convert(root / "notebooks" / f"{name}.py", root / "runs" / ".notebooks" / f"{name}.ipynb")


def notebook_defaults(ipynb: Path) -> dict:
    """The values of the notebook's ``parameters`` cell (literals only, as papermill sees them)."""
    import papermill

    defaults = {}
    for name, info in papermill.inspect_notebook(str(ipynb)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{ipynb}: parameter {name} = {info['default']!r} is not a literal; the "
                             "parameters cell must hold plain values") from err
    return defaults


def yaml_mapping(path: Path, missing: str, not_mapping: str, valid, unknown_text: str) -> dict:
    """A YAML file that must hold a mapping whose keys are all in ``valid``; each failure is one line
    naming the file: ``missing`` (FileNotFoundError), ``not_mapping``, or ``unknown_text`` followed by the
    valid keys (ValueError)."""
    if not path.is_file():
        raise FileNotFoundError(missing)
    values = read_yaml(path.read_text(encoding="utf-8"), path) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: {not_mapping}")
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"{path}: unknown {unknown_text[0]} {', '.join(unknown)}; {unknown_text[1]}: "
                         f"{', '.join(valid)}")
    return values


def read_preset(path: Path, defaults: dict) -> dict:
    """A preset file (YAML mapping); every key must be a parameter of the notebook. A missing file names
    the presets that have one for this notebook (``params/<preset>/<notebook>.yaml``)."""
    have = sorted(p.parent.name for p in path.parent.parent.glob(f"*/{path.name}"))
    return yaml_mapping(path, f"no preset file {path}: every notebook needs one file per preset; the presets "
                        f"with a {path.name} are: {', '.join(have) or 'none'}",
                        "a preset file must be a YAML mapping of parameter: value", sorted(defaults),
                        ("parameter(s)", "the notebook's parameters cell has"))


def code_fingerprint(source: Path) -> str:
    """sha256 of the code a run depends on: every file of the installed coarsecrop package (.py and
    reference data) and the notebook's source. A run made by other code is not reused."""
    package = Path(coarsecrop.__file__).resolve().parent
    h = hashlib.sha256()
    files = sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts)
    for path in [*files, source]:
        name = path.relative_to(package).as_posix() if package in path.parents else path.name
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def read_record(run_dir: Path) -> dict:
    """run.json of a run folder, or {} when there is none (or it is unreadable)."""
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_record(run_dir: Path, record: dict) -> None:
    write_text(run_dir / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def is_complete(run_dir: Path, code: str | None = None) -> bool:
    """A run is complete when run.json says ok and its metrics.json and executed notebook exist; with
    ``code``, only when it was also made by that code (see ``code_fingerprint``)."""
    record = read_record(run_dir)
    return record.get("status") == "ok" and (run_dir / "metrics.json").is_file() and \
        (run_dir / f"{record.get('notebook')}.ipynb").is_file() and (code is None or record.get("code") == code)


def resumable(run_dir: Path, record: dict) -> bool:
    """An earlier attempt at this very run that did not finish: same code, same parameters, not ok."""
    earlier = read_record(run_dir)
    return (earlier.get("status") in ("running", "failed") and earlier.get("code") == record["code"]
            and earlier.get("parameters") == record["parameters"])


def check_kinds(values: dict, defaults: dict, source: str) -> None:
    """Each value of the kind of the parameters cell's default (a list for a list, a number for a number, a
    string for a string, true/false for a flag), before any kernel starts: ``strategies: ours`` for
    ``[ours]`` fails here, not in a notebook's check cell after a kernel and a run folder. A default of None
    says nothing; the notebook's check cell still checks the exact types and ranges."""
    for key, value in values.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        kinds = ((bool,) if isinstance(default, bool) else (int, float) if isinstance(default, (int, float))
                 else (list, tuple) if isinstance(default, (list, tuple)) else (type(default),))
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            hint = " (a list in YAML: [a, b])" if list in kinds else ""
            raise ValueError(f"{source}: parameter {key!r} = {value!r} ({type(value).__name__}) is not of the kind "
                             f"of the notebook's default {default!r} ({type(default).__name__}){hint}")


def notebook_task(root: Path, name: str, values: dict, preset: str | None, preset_label: str,
                  ipynb: Path | None = None, defaults: dict | None = None, code: str | None = None,
                  sweep: str | None = None, requires=None) -> dict:
    """Everything ``execute`` needs for one run of notebooks/<name>.py with ``values`` injected over the
    parameters cell: the run folder (runs/<name>/<run id>/), the record, what papermill injects (``values``,
    ``out`` = the run folder, ``preset`` = ``preset_label``). ``ipynb``, ``defaults`` and ``code`` are
    computed when not given (a sweep computes them once for all its points)."""
    source = root / "notebooks" / f"{name}.py"
    ipynb = ipynb or runner_notebook(root, name)
    defaults = notebook_defaults(ipynb) if defaults is None else defaults
    check_kinds(values, defaults, sweep or preset_label)
    effective = {**defaults, **values}
    rid = run_id_of(effective)
    run_dir = root / "runs" / name / rid
    record = {"notebook": name, "preset": preset, **({"sweep": sweep} if sweep is not None else {}),
              "run_id": rid, "parameters": effective, "code": code or code_fingerprint(source)}
    return {"root": str(root), "ipynb": str(ipynb), "run_dir": str(run_dir), "record": record,
            "inject": {**values, "out": str(run_dir), "preset": preset_label}, "requires": requires}


def kernel_did_not_start(err: BaseException) -> bool:
    """jupyter_client's errors for a kernel that died or hung before its first reply: no cell has run."""
    return str(err).startswith(("Kernel died before replying to kernel_info", "Kernel didn't respond"))


@contextlib.contextmanager
def stderr_to(path: Path):
    """Send this process's standard error (file descriptor 2, which the kernel papermill starts inherits) to
    ``path`` for a while: the kernel's own log lines (ipykernel's transport warnings, its shutdown) go to the
    run folder's kernel.log instead of between the sweep's progress lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def set_aside(run_dir: Path) -> Path:
    """Move a finished run that is about to be made again (by other code: any edit of the package makes every
    run stale) to runs/<notebook>/.replaced/<run id>/, over the one set aside there before, so hours of
    training are not deleted by a sweep after a one-line change; returns where it went."""
    kept = run_dir.parent / REPLACED / run_dir.name
    if kept.exists():
        shutil.rmtree(kept)
    kept.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(kept)
    return kept


def execute(task: dict, resume: bool = True, show_output: bool = False, blocked: str = "",
            done_meanwhile=None) -> dict:
    """Execute one run (papermill; the kernel is its own process) into its run folder.

    resume: True continues an unfinished or failed run of the same code and parameters in place (the
        notebooks resume what they find there: 02_pretrain's crop job and trainer checkpoint, so a job
        killed at a time limit loses at most the steps since its last checkpoint); a finished run of other
        code (or on a remade trunk) is set aside (``set_aside``), any other folder emptied first. False:
        always start from an empty folder (the book; ``--force``).
    show_output: stream the cells' output through papermill's log (the book); else the kernel's standard
        error goes to the run folder's kernel.log (the sweeps, whose terminal shows a progress bar).
    blocked: a reason the run cannot start (a transfer point whose pretraining run is missing): recorded
        as its failure, nothing runs.
    Never raises for a failing notebook: the failure is recorded in the folder (run.json status "failed",
    FAILED.txt with the traceback) and returned as {"status": "failed", "error": ...}. A run another live
    process is making (its lock, ``run_lock``) is left alone, folder and record, and returned as
    {"status": "busy", "error": who holds it}. ``done_meanwhile``: a check, made once the lock is held, that
    the run is complete after all (another process finished it since the caller planned it: a sweep's
    points are planned at its start); then nothing runs and {"status": "ok", "reused": True} returns."""
    run_dir = Path(task["run_dir"])
    try:
        with run_lock(run_dir):
            if done_meanwhile is not None and done_meanwhile():
                return {"status": "ok", "wall_time_s": 0.0, "error": "", "reused": True}
            return _execute(task, resume, show_output, blocked)
    except RunBusy as busy:
        print(busy, file=sys.stderr, flush=True)
        return {"status": "busy", "wall_time_s": 0.0, "error": str(busy)}


def _execute(task: dict, resume: bool, show_output: bool, blocked: str) -> dict:
    """``execute`` under the run's lock."""
    import papermill

    run_dir, record = Path(task["run_dir"]), task["record"]
    if run_dir.exists() and not (resume and resumable(run_dir, record)):
        if resume and read_record(run_dir).get("status") == "ok":
            set_aside(run_dir)
        else:
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "FAILED.txt").unlink(missing_ok=True)
    if blocked:
        (run_dir / "FAILED.txt").write_text(f"not run: {blocked}\n", encoding="utf-8")  # as every failed run has
        write_record(run_dir, {**record, "status": "failed", "wall_time_s": 0.0, "error": blocked})
        return {"status": "failed", "wall_time_s": 0.0, "error": blocked}
    write_record(run_dir, {**record, "status": "running"})
    os.environ.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    try:
        for start in range(1, KERNEL_STARTS + 1):
            try:
                with contextlib.nullcontext() if show_output else stderr_to(run_dir / "kernel.log"):
                    papermill.execute_notebook(
                        task["ipynb"], str(run_dir / f"{record['notebook']}.ipynb"), parameters=task["inject"],
                        kernel_name=KERNELSPEC["name"], cwd=task["root"], progress_bar=False,
                        log_output=show_output, request_save_on_cell_execute=True,
                    )
                break
            except RuntimeError as err:
                if start == KERNEL_STARTS or not kernel_did_not_start(err):
                    raise
                note = f"{run_dir}: {err} (start {start} of {KERNEL_STARTS}); starting it again\n"
                with contextlib.nullcontext(sys.stderr) if show_output else open(run_dir / "kernel.log", "a") as log:
                    log.write(note)  # beside the kernel's own error (its standard error goes there too)
        if not (run_dir / "metrics.json").is_file():
            raise RuntimeError(f"the notebook ran but wrote no {run_dir / 'metrics.json'}")
    except Exception as err:  # record it; the caller decides whether to go on
        wall = round(time.perf_counter() - t0, 2)
        (run_dir / "FAILED.txt").write_text(traceback.format_exc(), encoding="utf-8")
        lines = str(err).strip().splitlines()
        error = f"{type(err).__name__}: {lines[-1] if lines else ''}"
        write_record(run_dir, {**record, "status": "failed", "wall_time_s": wall, "error": error})
        return {"status": "failed", "wall_time_s": wall, "error": error}
    wall = round(time.perf_counter() - t0, 2)
    write_if_missing(run_dir, record["parameters"], wall)
    write_record(run_dir, {**record, "status": "ok", "wall_time_s": wall,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return {"status": "ok", "wall_time_s": wall, "error": ""}
