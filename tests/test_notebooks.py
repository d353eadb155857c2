"""The experiment notebook end to end: notebooks/01_crops.py executed by papermill with the smoke preset
(through ``python -m coarsecrop.book``'s code path), its metrics.json, the run-folder bookkeeping, a
typo injected through papermill, and the book built from the executed notebook."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
import yaml

from coarsecrop.book import run_notebook
from coarsecrop.runs.notebook import convert, is_complete

pytestmark = pytest.mark.slow


def smoke_preset(project_root) -> dict:
    return yaml.safe_load((project_root / "params" / "smoke" / "01_crops.yaml").read_text())


def test_smoke_run_writes_sane_metrics(smoke_run, project_root):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    preset = smoke_preset(project_root)
    params = metrics["params"]
    for key, value in preset.items():
        assert params[key] == value, key
    assert params["preset"] == "params/smoke/01_crops.yaml"
    per = metrics["metrics"]
    assert set(per) == set(params["strategies"])
    for name, m in per.items():
        assert m["images"] == preset["num_images"], name
        assert m["skipped"] == 0, name
        assert 1 <= m["crops"] <= params["n"] * preset["num_images"] or name in ("gt", "gtpad"), name
        assert 0.0 <= m["mean_objectness"] <= 1.0, name
        assert math.isclose(m["poor"] + m["coarse"] + m["precise"], 1.0, abs_tol=1e-6), name
        assert 1.0 <= m["side_p10"] <= m["side_p50"] <= m["side_p90"] <= preset["image_size"] + 1e-6, name
    # Strategies whose objectness is fixed by construction.
    assert per["image"]["crops_per_image"] == 1.0
    assert per["image"]["side_p50"] == pytest.approx(preset["image_size"])
    assert per["gt"]["mean_objectness"] > per["image"]["mean_objectness"]
    assert per["poor"]["mean_objectness"] < per["gt"]["mean_objectness"]
    assert per["grid"]["crops_per_image"] == 5.0
    assert metrics["paper"]["table2_objectness_percent"]["ours"] == 52.6
    prov = metrics["provenance"]
    assert prov["device"] == "cpu" and prov["wall_time_s"] > 0
    assert prov["versions"]["torch"] and prov["versions"]["coarsecrop"]
    assert {"claim", "paper", "ours", "holds"} <= set(metrics["claims"][0])
    # Run bookkeeping: complete, figures saved, executed notebook kept and copied for the book.
    assert is_complete(smoke_run)
    assert json.loads((smoke_run / "run.json").read_text())["status"] == "ok"
    for fig in ("crops_grid", "objectness_maps", "quality_bars", "crop_sizes"):
        assert (smoke_run / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    root = smoke_run.parents[2]
    assert (root / "book" / "generated" / "01_crops.ipynb").is_file()
    # Every strategy wrote its manifest through the real crop job.
    for name in params["strategies"]:
        assert (smoke_run / "crops" / name / "manifest.json").is_file(), name


def test_complete_run_is_skipped(smoke_run, book_copy, capsys):
    before = (smoke_run / "metrics.json").stat().st_mtime_ns
    again = run_notebook(book_copy, "01_crops", "smoke", log_output=False)
    assert again == smoke_run
    assert (smoke_run / "metrics.json").stat().st_mtime_ns == before
    assert "skipped" in capsys.readouterr().out


def test_typo_injected_by_papermill_fails_with_valid_keys(project_root, tmp_path):
    ipynb = convert(project_root / "notebooks" / "01_crops.py", tmp_path / "01_crops.ipynb")
    parameters = {**smoke_preset(project_root), "num_imagez": 3, "out": str(tmp_path / "run")}
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(ipynb), str(tmp_path / "out.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    message = str(info.value)
    assert "ParameterError" in message and "'num_imagez'" in message
    assert "valid keys:" in message and "num_images" in message and "anchor_sizes" in message
    assert not (tmp_path / "run" / "metrics.json").exists()  # stopped before any work


def test_failed_run_is_recorded_and_reported(book_copy, tmp_path):
    bad = book_copy / "params" / "badtype"
    bad.mkdir(exist_ok=True)
    (bad / "01_crops.yaml").write_text("num_images: many\n")  # not a number: refused before a kernel starts
    with pytest.raises(ValueError, match="parameter 'num_images' = 'many' \\(str\\) is not of the kind"):
        run_notebook(book_copy, "01_crops", "badtype", log_output=False)
    (bad / "01_crops.yaml").write_text("num_images: 0\n")  # a number out of range: the notebook's check cell
    generated = book_copy / "book" / "generated" / "01_crops.ipynb"
    kept = generated.read_bytes() if generated.is_file() else None  # the smoke build's page, for the tests below
    generated.parent.mkdir(parents=True, exist_ok=True)
    generated.write_text("{}")  # an earlier build's page
    with pytest.raises(RuntimeError, match="notebook 01_crops failed"):
        run_notebook(book_copy, "01_crops", "badtype", log_output=False)
    assert not generated.exists()  # the book does not show the earlier run as this one
    if kept is not None:
        generated.write_bytes(kept)
    runs = [p for p in (book_copy / "runs" / "01_crops").iterdir()
            if (p / "FAILED.txt").exists()]
    assert len(runs) == 1
    assert "parameter 'num_images' = 0: must be at least 1" in (runs[0] / "FAILED.txt").read_text()
    assert json.loads((runs[0] / "run.json").read_text())["status"] == "failed"
    assert not is_complete(runs[0])
    shutil.rmtree(bad)
    shutil.rmtree(runs[0])


def test_unknown_preset_key_fails_before_running(book_copy):
    bad = book_copy / "params" / "typo"
    bad.mkdir(exist_ok=True)
    (bad / "01_crops.yaml").write_text("num_imagez: 3\n")
    with pytest.raises(ValueError, match="num_imagez.*parameters cell has:.*num_images"):
        run_notebook(book_copy, "01_crops", "typo", log_output=False)
    shutil.rmtree(bad)


def test_executed_chapters_show_no_warnings(smoke_book):
    """A reader sees no library warning on top of a chapter: the stderr streams of every executed notebook
    the book renders hold no "Warning" (tqdm.auto once printed "TqdmWarning: IProgress not found" at the
    top of each chapter, in any kernel without ipywidgets)."""
    found = []
    for ipynb in sorted((smoke_book / "book" / "generated").glob("*.ipynb")):
        for cell in json.loads(ipynb.read_text())["cells"]:
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", "")) if out.get("name") == "stderr" else ""
                if "Warning" in text:  # the whole stream and the cell that wrote it: a rare warning is
                    source = "".join(cell.get("source", ""))  # diagnosed from one CI log
                    found.append(f"{ipynb.name}, the cell starting {source[:300]!r}, wrote to stderr:\n{text[:4000]}")
    assert not found, "\n\n".join(found)


def test_book_builds_from_the_executed_notebook(smoke_book, book_copy):
    """jupyter-book build -W on the smoke run: every glue reference of the chapter resolves (a missing
    key is a warning, so an error here), the figures are pasted as images, nothing is re-executed."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    res = subprocess.run([str(jupyter_book), "build", str(book_copy), "-W", "--keep-going", "--all"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    html = (book_copy / "_build" / "html" / "book" / "crops.html").read_text()
    assert html.count("<img") >= 4
    assert "paper (VOC07)" in html
    assert "Executing" not in res.stdout  # the generated notebook is rendered, not run again


def test_broken_glue_reference_fails_the_build(smoke_run, book_copy, tmp_path):
    """A chapter pasting a key the notebook never glued must fail the build, not leave a hole."""
    from conftest import copy_book_sources

    root = copy_book_sources(tmp_path / "broken")
    shutil.copytree(book_copy / "book" / "generated", root / "book" / "generated")
    with open(root / "book" / "crops.md", "a") as f:
        f.write("\n```{glue} no_such_key\n:doc: generated/01_crops.ipynb\n```\n")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    res = subprocess.run([str(jupyter_book), "build", str(root), "-W", "--keep-going", "--all"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "no_such_key" in res.stdout + res.stderr


def test_run_made_by_other_code_is_not_complete(smoke_run, book_copy, tmp_path):
    from coarsecrop.runs.notebook import code_fingerprint

    code = code_fingerprint(book_copy / "notebooks" / "01_crops.py")
    assert is_complete(smoke_run, code)
    other = tmp_path / "run"
    shutil.copytree(smoke_run, other)
    record = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**record, "code": "made-by-older-code"}))
    assert is_complete(other) and not is_complete(other, code)
    edited = tmp_path / "01_crops.py"
    edited.write_text((book_copy / "notebooks" / "01_crops.py").read_text() + "\n# an edit\n")
    assert code_fingerprint(edited) != code
