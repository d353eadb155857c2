"""Run the experiment notebooks for the book: ``coarsecrop book run --preset quick`` (also
``python -m coarsecrop.book run``); ``coarsecrop book build`` then builds the HTML with jupyter-book.

For each notebook the book shows (a ``book/generated/NN_topic`` page in _toc.yml; ``--all``: every
notebooks/NN_topic.py; ``--notebook NN_topic``: that one), from notebooks/NN_topic.py (jupytext
py:percent, the source of truth):
1. convert it to runs/.notebooks/NN_topic.ipynb with a ``python3`` kernelspec (papermill needs one; never over
   the notebooks/NN_topic.ipynb that jupytext pairs with the script: ``runner_notebook``);
2. effective parameters = the notebook's ``parameters`` cell updated by params/<preset>/NN_topic.yaml;
   run id = ``coarsecrop.params.run_id_of`` of them; run folder = runs/NN_topic/<run id>/;
3. skip when that folder holds a complete run (run.json says "ok") made by the same code (a hash of the
   coarsecrop package and the notebook source), except for the chapters that read other runs
   (``EXECUTE_EVERY_BUILD``); else empty the folder and execute the notebook into it through
   ``coarsecrop.runs.notebook.execute``, as the sweeps do (the notebook writes metrics.json and figures there);
4. copy the executed notebook to book/generated/NN_topic.ipynb, where the book reads it.

A failed notebook is recorded in its run folder (run.json status "failed" + FAILED.txt with the
traceback; the partly executed notebook stays there), the traceback is printed, its page in book/generated/
is removed (a build must not show an older run as this one), the other notebooks still run, and the command
exits 1.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from coarsecrop.cli import main as cli_main
from coarsecrop.runs.notebook import (execute, is_complete, notebook_defaults, notebook_task, read_preset,
                                      runner_notebook)

# The chapters that read other runs (the table sweeps'; 18_claims reads the table chapters'): their output
# depends on more than their parameters and code, so they are executed on every build.
EXECUTE_EVERY_BUILD = ("10_table1", "11_objectness", "12_proposals", "13_stages", "14_crops_per_image",
                       "15_random_resized_crop", "16_budget", "18_claims")


def run_notebook(root: Path, name: str, preset: str, force: bool = False, log_output: bool = True) -> Path:
    """Execute notebooks/<name>.py with params/<preset>/<name>.yaml into runs/<name>/<id>/ (unless a complete
    run of the same parameters and code is there) and copy the executed notebook to book/generated/; returns
    the run folder. Raises RuntimeError (after the failure is recorded in the run folder) when the notebook
    fails."""
    ipynb = runner_notebook(root, name)
    defaults = notebook_defaults(ipynb)
    preset_path = root / "params" / preset / f"{name}.yaml"
    values = read_preset(preset_path, defaults)
    task = notebook_task(root, name, values, preset, str(preset_path.relative_to(root)), ipynb=ipynb,
                         defaults=defaults)
    run_dir = Path(task["run_dir"])
    executed = run_dir / f"{name}.ipynb"
    generated = root / "book" / "generated" / f"{name}.ipynb"
    if is_complete(run_dir, task["record"]["code"]) and not force and name not in EXECUTE_EVERY_BUILD:
        print(f"[book] {name}: complete run {run_dir.relative_to(root)} exists (preset {preset}); skipped")
    else:
        if is_complete(run_dir) and not force:
            why = ("a chapter that reads other runs: executed on every build" if name in EXECUTE_EVERY_BUILD else
                   f"run {run_dir.relative_to(root)} was made by other code (coarsecrop/ or the notebook changed "
                   "since); running it again")
            print(f"[book] {name}: {why}")
        print(f"[book] {name}: running with preset {preset} into {run_dir.relative_to(root)}", flush=True)
        # a fresh run: nothing of an earlier, failed or other-code run is reused
        result = execute(task, resume=False, show_output=log_output)
        if result["status"] != "ok":
            generated.unlink(missing_ok=True)  # the book must not show an older run as this build's
            failed = run_dir / "FAILED.txt"
            print(failed.read_text(encoding="utf-8") if failed.is_file() else result["error"], file=sys.stderr)
            raise RuntimeError(f"notebook {name} failed (preset {preset}): {result['error']}; traceback in "
                               f"{failed}, partly executed notebook in {executed}; {generated.relative_to(root)} "
                               "removed")
        print(f"[book] {name}: done in {result['wall_time_s']:.0f} s", flush=True)
    generated.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(executed, generated)
    return run_dir


def notebook_names(root: Path) -> list[str]:
    """Every notebooks/NN_topic.py, in order."""
    return sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.py"))


def book_notebooks(root: Path) -> list[str]:
    """The notebooks the book shows: every ``book/generated/NN_topic`` page of _toc.yml, in toc order.

    A notebook whose chapter is not in the book yet is not run by ``make book`` (``--all`` runs it)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    names = [Path(f).name for f in files if f.startswith("book/generated/")]
    missing = [n for n in names if not (root / "notebooks" / f"{n}.py").is_file()]
    if missing:
        raise FileNotFoundError(f"_toc.yml shows book/generated/{missing[0]}, but notebooks/{missing[0]}.py "
                                "does not exist")
    return list(dict.fromkeys(names))


def run_book(root: Path, preset: str, names: list[str] | None = None, every: bool = False,
             force: bool = False) -> int:
    """``coarsecrop book run``: the notebooks ``names`` (default: those the book shows; ``every``: every
    notebooks/NN_topic.py) at ``preset``; a failure is reported and the others still run. Returns the exit
    status (1 when any failed)."""
    # papermill reports the cells' output through logging (INFO): show it, so a long run shows progress.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    root = Path(root).resolve()
    try:
        names = names or (notebook_names(root) if every else book_notebooks(root))
    except (OSError, ValueError) as err:
        print(f"[book] {err}", file=sys.stderr)
        return 1
    if not names:
        print(f"no notebooks under {root / 'notebooks'}", file=sys.stderr)
        return 1
    known = notebook_names(root)
    unknown = sorted(set(names) - set(known))
    if unknown:  # a typo stops before anything runs, naming what would
        print(f"[book] no notebook {', '.join(unknown)} under {root / 'notebooks'}; --notebook takes one of: "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        try:
            run_notebook(root, name, preset, force=force)
        except (RuntimeError, ValueError, FileNotFoundError) as err:
            print(f"[book] {name}: FAILED: {err}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"[book] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_book(root: Path) -> int:
    """``coarsecrop book build``: jupyter-book over the project root, every page rebuilt (``--all``, so a
    warning cannot hide behind an up-to-date page of an earlier build) and every warning (a broken glue
    reference, a missing page) reported and then failing the build (``-W --keep-going``)."""
    beside = Path(sys.executable).with_name("jupyter-book")
    command = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if command is None:
        print("[book] jupyter-book not found: install the book extra (pip install -e '.[book]')", file=sys.stderr)
        return 1
    code = subprocess.run([command, "build", str(Path(root).resolve()), "-W", "--keep-going", "--all"]).returncode
    if code == 0:
        print(f"The book: {Path(root).resolve() / '_build' / 'html' / 'index.html'}")
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m coarsecrop.book ...``: an alias of ``coarsecrop book ...``."""
    return cli_main(["book", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
