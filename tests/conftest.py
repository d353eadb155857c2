"""Shared fixtures: the project root, and a copy of the book's sources in a temporary folder where the
notebooks run with the smoke preset (so tests never touch the repository's runs/ or book/generated/)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# What a book build needs besides the package: sources of the notebooks, presets, book pages, configs.
BOOK_SOURCES = ("notebooks", "params", "book", "results", "_config.yml", "_toc.yml", "jupytext.toml")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


def copy_book_sources(target: Path) -> Path:
    """Copy the book's sources (not runs/, book/generated/ or notebooks/*.ipynb) into ``target``."""
    ignore = shutil.ignore_patterns("generated", "*.ipynb", ".ipynb_checkpoints", "__pycache__")
    for name in BOOK_SOURCES:
        src = ROOT / name
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=ignore)
        else:
            shutil.copy2(src, target / name)
    (target / "pyproject.toml").write_text("# marks the project root for coarsecrop.params.project_root\n")
    return target


@pytest.fixture(scope="session")
def book_copy(tmp_path_factory) -> Path:
    """A temporary project root holding a copy of the book's sources."""
    return copy_book_sources(tmp_path_factory.mktemp("book"))


@pytest.fixture(scope="session")
def smoke_run(book_copy) -> Path:
    """Run notebooks/01_crops.py with params/smoke/01_crops.yaml through ``coarsecrop.book`` (papermill)
    in the temporary root; returns the run folder (runs/01_crops/<run id>/)."""
    from coarsecrop.book import run_notebook

    os.environ.setdefault("MPLBACKEND", "Agg")
    return run_notebook(book_copy, "01_crops", "smoke", log_output=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one torch thread, then restore. Tiny models gain nothing from threads, and on
    a busy 2-core machine OpenMP threads waiting for each other make small convolutions 10-100x slower.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def cut_strategies(sweep: Path, preset: str, strategies: list[str]) -> None:
    """Rewrite a copied sweep file so that ``preset`` trains only ``strategies`` (CI's time)."""
    spec = yaml.safe_load(sweep.read_text())
    spec["presets"][preset]["strategy"] = list(strategies)
    sweep.write_text(yaml.safe_dump(spec))


def all_ok(table, root: Path):
    """Fail the fixture, not a later assertion, when a sweep point failed: name each failed run, its error
    and the end of its logs (a sweep records a failing point and goes on)."""
    failed = table[table["status"] != "ok"]
    report = []
    for _, row in failed.iterrows():
        logs = sorted((root / row["run_dir"]).rglob("*.log")) + sorted((root / row["run_dir"]).glob("FAILED.txt"))
        tails = "".join(f"\n--- {log}:\n" + "".join(log.read_text(errors="replace").splitlines(True)[-30:])
                        for log in logs)
        report.append(f"{row['run_dir']}: {row['status']}: {row['error']}{tails}")
    assert not report, f"{table.attrs.get('csv')}: {len(report)} point(s) did not finish:\n" + "\n".join(report)


@pytest.fixture(scope="session")
def smoke_book(smoke_run, book_copy) -> Path:
    """Every notebook the book shows, executed at the smoke preset in the temporary root, as `make book
    PRESET=smoke` does; one table sweep (table15, 6 runs) and the transfer runs on its trunks (mAP^l, 7
    runs) really run first, so its chapter has runs to read; the other chapters show the paper's values
    and the committed results only."""
    from coarsecrop.book import book_notebooks, run_notebook
    from coarsecrop.runs.sweep import run_sweep

    os.environ.setdefault("MPLBACKEND", "Agg")
    all_ok(run_sweep(book_copy / "params" / "sweeps" / "table15.yaml", jobs=2, progress=False, root=book_copy,
                     preset="smoke"), book_copy)
    # the transfer sweep (mAP^l) of those runs
    all_ok(run_sweep(book_copy / "params" / "sweeps" / "transfer.yaml", jobs=2, progress=False, root=book_copy,
                     preset="smoke", of=["table15"]), book_copy)
    for name in book_notebooks(book_copy):
        if name != "01_crops":
            run_notebook(book_copy, name, "smoke", log_output=False)
    return book_copy
