"""notebooks/03_transfer.py: its parameters cell mirrors TransferParams, every preset validates, and the
smoke preset runs end to end through the book's papermill path into a run folder with metrics.json."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from coarsecrop.studies.transfer import TransferParams, split_params
from coarsecrop.params import load_params

PRESETS = ("smoke", "quick", "paper", "cpu-full", "cpu-full-v1", "voc07", "coco")


def test_parameters_cell_mirrors_the_dataclass(project_root, tmp_path):
    from coarsecrop.runs.notebook import convert, notebook_defaults

    ipynb = convert(project_root / "notebooks" / "03_transfer.py", tmp_path / "03_transfer.ipynb")
    assert notebook_defaults(ipynb) == dataclasses.asdict(TransferParams())


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_validate(project_root, preset):
    path = project_root / "params" / preset / "03_transfer.yaml"
    values = yaml.safe_load(path.read_text())
    params = load_params(TransferParams, values, source=str(path))
    for task in set(params.tasks) | set(params.task_params):
        split_params(task, params.task_params.get(task, {}))


@pytest.mark.slow
def test_smoke_preset_runs_every_task(book_copy):
    from coarsecrop.book import run_notebook
    from coarsecrop.runs.notebook import is_complete

    run = run_notebook(book_copy, "03_transfer", "smoke", log_output=False)
    assert is_complete(run)
    metrics = json.loads((run / "metrics.json").read_text())
    preset = yaml.safe_load((book_copy / "params" / "smoke" / "03_transfer.yaml").read_text())
    assert set(metrics["tasks"]) == set(preset["tasks"]) and metrics["params"]["tasks"] == preset["tasks"]
    for task, rec in metrics["tasks"].items():
        assert set(rec["rows"]) == {"random"}, task
        runs = rec["rows"]["random"]["runs"]
        assert [r["seed"] for r in runs] == [0, 1], task
        assert all(0 <= r[rec["headline"]] <= 100 for r in runs), task
        assert rec["rows"]["random"]["summary"][rec["headline"]]["n"] == 2, task
    assert metrics["provenance"]["wall_time_s"] > 0
    assert (run / "figures" / "headlines.png").stat().st_size > 1000
