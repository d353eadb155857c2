"""Run the experiment notebooks for the book: ``python -m coarsecrop.book run --preset quick``.

For each notebook the book shows (a ``book/generated/NN_topic`` page in _toc.yml; ``--all``: every
notebooks/NN_topic.py; ``--notebook NN_topic``: that one), from notebooks/NN_topic.py (jupytext
py:percent, the source of truth):
1. convert it to notebooks/NN_topic.ipynb with a ``python3`` kernelspec (papermill needs one);
2. effective parameters = the notebook's ``parameters`` cell updated by params/<preset>/NN_topic.yaml;
   run id = short hash of them; run folder = runs/NN_topic/<run id>/;
3. skip when that folder holds a complete run (run.json says "ok") made by the same code (a hash of the
   coarsecrop package and the notebook source); else empty the folder and execute the notebook with
   papermill into it (the notebook writes metrics.json and figures there);
4. copy the executed notebook to book/generated/NN_topic.ipynb, where the book reads it.

A failed notebook is recorded in its run folder (run.json status "failed" + FAILED.txt with the
traceback; the partly executed notebook stays there), the traceback is printed, the other notebooks
still run, and the command exits 1. The later sweep runner generalises this; it stays small on purpose.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import shutil
import sys
import time
import traceback
from pathlib import Path

import yaml

from coarsecrop.io import write_text
from coarsecrop.params import run_id

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# A notebook whose source holds this line reads other runs (the table chapters read the sweeps' runs):
# its output depends on more than its parameters and code, so it is executed on every book build.
ALWAYS_EXECUTE = "# coarsecrop: execute on every build"
# Parameters that say where a run goes, not what it computes: not part of the run id.
NOT_HASHED = ("out", "preset")


def convert(source: Path, target: Path) -> Path:
    """jupytext py:percent -> .ipynb with the python3 kernelspec (written only when it changes)."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    text = jupytext.writes(nb, fmt="ipynb")
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return target


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


def read_preset(path: Path, defaults: dict) -> dict:
    """A preset file (YAML mapping); every key must be a parameter of the notebook."""
    if not path.is_file():
        raise FileNotFoundError(f"no preset file {path}: every notebook needs one file per preset")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a preset file must be a YAML mapping of parameter: value")
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"{path}: unknown parameter(s) {', '.join(unknown)}; the notebook's parameters "
                         f"cell has: {', '.join(sorted(defaults))}")
    return values


def code_fingerprint(source: Path) -> str:
    """sha256 of the code a run depends on: every file of the installed coarsecrop package (.py and
    reference data) and the notebook's source. A run made by other code is not reused."""
    import coarsecrop

    package = Path(coarsecrop.__file__).resolve().parent
    h = hashlib.sha256()
    files = sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts)
    for path in [*files, source]:
        name = path.relative_to(package).as_posix() if package in path.parents else path.name
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def read_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def is_complete(run_dir: Path, code: str | None = None) -> bool:
    """A run is complete when run.json says ok and its metrics.json and executed notebook exist; with
    ``code``, only when it was also made by that code (see ``code_fingerprint``)."""
    record = read_record(run_dir)
    return record.get("status") == "ok" and (run_dir / "metrics.json").is_file() and \
        (run_dir / f"{record.get('notebook')}.ipynb").is_file() and (code is None or record.get("code") == code)


def write_record(run_dir: Path, record: dict) -> None:
    write_text(run_dir / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def run_notebook(root: Path, name: str, preset: str, force: bool = False, log_output: bool = True) -> Path:
    """Execute notebooks/<name>.py with params/<preset>/<name>.yaml into runs/<name>/<id>/; returns the
    run folder. Raises RuntimeError (after recording the failure) when the notebook fails."""
    import papermill

    source = root / "notebooks" / f"{name}.py"
    ipynb = convert(source, source.with_suffix(".ipynb"))
    defaults = notebook_defaults(ipynb)
    preset_path = root / "params" / preset / f"{name}.yaml"
    values = read_preset(preset_path, defaults)
    effective = {**defaults, **values}
    rid = run_id({k: v for k, v in effective.items() if k not in NOT_HASHED})
    run_dir = root / "runs" / name / rid
    executed = run_dir / f"{name}.ipynb"
    generated = root / "book" / "generated" / f"{name}.ipynb"
    code = code_fingerprint(source)
    force = force or ALWAYS_EXECUTE in source.read_text(encoding="utf-8")
    if is_complete(run_dir, code) and not force:
        print(f"[book] {name}: complete run {run_dir.relative_to(root)} exists (preset {preset}); skipped")
    else:
        if is_complete(run_dir) and not force:
            print(f"[book] {name}: run {run_dir.relative_to(root)} was made by other code (coarsecrop/ or the "
                  "notebook changed since); running it again")
        if run_dir.exists():  # a fresh run: nothing of an earlier, failed or other-code run is reused
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        parameters = {**values, "out": str(run_dir), "preset": str(preset_path.relative_to(root))}
        record = {"notebook": name, "preset": preset, "run_id": rid, "parameters": effective, "code": code,
                  "status": "running"}
        write_record(run_dir, record)
        print(f"[book] {name}: running with preset {preset} into {run_dir.relative_to(root)}", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(ipynb), str(executed), parameters=parameters, kernel_name=KERNELSPEC["name"],
                cwd=str(root), progress_bar=False, log_output=log_output, request_save_on_cell_execute=True,
            )
        except Exception as err:  # record, show, and fail the command
            tb = traceback.format_exc()
            (run_dir / "FAILED.txt").write_text(tb, encoding="utf-8")
            write_record(run_dir, {**record, "status": "failed", "wall_time_s": round(time.perf_counter() - t0, 2),
                                   "error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}"})
            print(tb, file=sys.stderr)
            raise RuntimeError(f"notebook {name} failed (preset {preset}); traceback in "
                               f"{run_dir / 'FAILED.txt'}, partly executed notebook in {executed}") from err
        if not (run_dir / "metrics.json").is_file():
            write_record(run_dir, {**record, "status": "failed", "error": "no metrics.json written"})
            raise RuntimeError(f"notebook {name} ran but wrote no {run_dir / 'metrics.json'}")
        write_record(run_dir, {**record, "status": "ok", "wall_time_s": round(time.perf_counter() - t0, 2)})
        print(f"[book] {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coarsecrop.book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="execute the notebooks with a preset into runs/ and book/generated/")
    p.add_argument("--preset", default="quick", help="folder under params/ (smoke | quick | ...)")
    p.add_argument("--notebook", action="append", help="only this notebook (e.g. 01_crops); repeatable")
    p.add_argument("--all", action="store_true", help="every notebooks/NN_topic.py, not only those the book "
                   "shows (the book/generated/ pages of _toc.yml, the default)")
    p.add_argument("--force", action="store_true", help="rerun even when a complete run of the same "
                   "parameters and code exists")
    p.add_argument("--root", default=".", help="project root (holds notebooks/ and params/)")
    args = parser.parse_args(argv)

    # papermill reports the cells' output through logging (INFO): show it, so a long run shows progress.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    root = Path(args.root).resolve()
    try:
        names = args.notebook or (notebook_names(root) if args.all else book_notebooks(root))
    except (OSError, ValueError) as err:
        print(f"[book] {err}", file=sys.stderr)
        return 1
    if not names:
        print(f"no notebooks under {root / 'notebooks'}", file=sys.stderr)
        return 1
    failed = []
    for name in names:
        try:
            run_notebook(root, name, args.preset, force=args.force)
        except (RuntimeError, ValueError, FileNotFoundError) as err:
            print(f"[book] {name}: FAILED: {err}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"[book] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
