"""The sweep runner (coarsecrop.runs): grid expansion, checks before anything runs, run ids shared with
coarsecrop.book, skipping, failure recording and the summary CSV. The logic tests replace the executor
with a fake one; the slow tests run notebooks/01_crops.py for real on 2 tiny scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_book_sources

from coarsecrop.params import run_id_of
from coarsecrop.runs import sweep as runs
from coarsecrop.runs.notebook import notebook_defaults, read_preset
from coarsecrop.runs.provenance import cpu_model, write_if_missing

# Small enough that a real run of 01_crops takes seconds: 2 scenes, two cheap strategies.
TINY = {"num_images": 2, "strategies": ["grid", "ours"], "show_images": 1}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return copy_book_sources(tmp_path_factory.mktemp("sweep"))


def write_sweep(root: Path, name: str, spec: dict) -> Path:
    path = root / "params" / "sweeps" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def fake_execute(calls: list):
    """An executor that writes what a successful notebook would: metrics.json (nested, without
    provenance), the executed notebook and run.json."""
    def execute(task):
        calls.append(task)
        run_dir, record = Path(task["run_dir"]), task["record"]
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = {"metrics": {"ours": {"mean_objectness": 0.1 * task["inject"]["n"], "crops": 3}},
                   "strategies": ["ours"], "label": "x"}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / f"{record['notebook']}.ipynb").write_text("{}")
        write_if_missing(run_dir, record["parameters"], 1.5)
        runs.write_record(run_dir, {**record, "status": "ok", "wall_time_s": 1.5})
        return {"status": "ok", "wall_time_s": 1.5, "error": ""}
    return execute


def test_grid_expands_in_file_order_last_key_fastest():
    points = runs.expand_grid({"n": [1, 3], "backbone": ["resnet18", "resnet50"], "seed": [0]})
    assert points == [
        {"n": 1, "backbone": "resnet18", "seed": 0}, {"n": 1, "backbone": "resnet50", "seed": 0},
        {"n": 3, "backbone": "resnet18", "seed": 0}, {"n": 3, "backbone": "resnet50", "seed": 0},
    ]
    assert runs.expand_grid({}) == [{}]


def test_bad_sweep_files_fail_with_the_file_named(root):
    with pytest.raises(ValueError, match=r"bad1\.yaml: unknown key\(s\) grids"):
        runs.read_sweep(write_sweep(root, "bad1", {"notebook": "01_crops", "grids": {"n": [1]}}))
    with pytest.raises(ValueError, match=r"bad2\.yaml: grid value of 'n' must be a non-empty list"):
        runs.read_sweep(write_sweep(root, "bad2", {"notebook": "01_crops", "grid": {"n": 3}}))
    with pytest.raises(ValueError, match="both in grid and fixed"):
        runs.read_sweep(write_sweep(root, "bad3", {"notebook": "01_crops", "grid": {"n": [1]},
                                                   "fixed": {"n": 2}}))
    with pytest.raises(FileNotFoundError, match="notebook '99_none' not found"):
        runs.run_sweep(write_sweep(root, "bad4", {"notebook": "99_none"}), root=root, progress=False)


def test_unknown_key_fails_before_anything_runs(root, monkeypatch):
    calls = []
    monkeypatch.setattr(runs, "execute_point", fake_execute(calls))
    sweep = write_sweep(root, "typo", {"notebook": "01_crops", "preset": "smoke",
                                       "grid": {"n": [1, 3], "num_imagse": [2]}})
    with pytest.raises(ValueError, match=r"typo\.yaml: unknown parameter\(s\) num_imagse; .*num_images"):
        runs.run_sweep(sweep, root=root, progress=False)
    sweep = write_sweep(root, "where", {"notebook": "01_crops", "fixed": {"out": "elsewhere"}})
    with pytest.raises(ValueError, match="out is set by the sweep runner"):
        runs.run_sweep(sweep, root=root, progress=False)
    # a value of another kind than the parameters cell's default: each point started a kernel that failed
    for grid, why in [({"strategies": ["ours", "random"]}, "'strategies' = 'ours' \\(str\\) is not of the kind of "
                       "the notebook's default .* \\(list\\) \\(a list in YAML: \\[a, b\\]\\)"),
                      ({"n": [1, "three"]}, "'n' = 'three' \\(str\\) is not of the kind of the notebook's default 5 "
                       "\\(int\\)"),
                      ({"n": [True]}, "'n' = True \\(bool\\)")]:
        sweep = write_sweep(root, "kinds", {"notebook": "01_crops", "preset": "smoke", "grid": grid})
        with pytest.raises(ValueError, match=f"kinds\\.yaml: parameter {why}"):
            runs.run_sweep(sweep, root=root, progress=False)
    assert calls == [] and not (root / "runs" / "01_crops").exists()  # no run folder (runs/.notebooks: the conversion)


def test_jobs_below_one_and_a_sweep_file_outside_the_project_are_clear_errors(root, tmp_path, capsys):
    from coarsecrop.cli import main

    sweep = write_sweep(root, "jobs", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [3]}})
    assert main(["sweep", str(sweep), "--jobs", "0"]) == 2  # was taken: no point ran, all 'not run'
    assert "--jobs 0: runs at once must be at least 1" in capsys.readouterr().err
    outside = tmp_path / "mine.yaml"
    outside.write_text(sweep.read_text())
    assert main(["sweep", str(outside), "--dry-run"]) == 2
    assert f"{tmp_path} is no project root (no pyproject.toml): a sweep runs in the project above its file" in \
        capsys.readouterr().err.replace("\n", " ")


def test_run_ids_are_the_books(root):
    """A point with a preset's own values gets the id coarsecrop.book gives that preset."""
    sweep = write_sweep(root, "same", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [5]}})
    plan = runs.plan_sweep(sweep, root)
    defaults = notebook_defaults(root / "runs" / ".notebooks" / "01_crops.ipynb")
    effective = {**defaults, **read_preset(root / "params" / "smoke" / "01_crops.yaml", defaults)}
    assert defaults["n"] == 5
    assert plan["points"][0]["run_dir"] == root / "runs" / "01_crops" / run_id_of(effective)


def test_sweep_logic_with_a_fake_executor(root, monkeypatch):
    calls = []
    monkeypatch.setattr(runs, "execute_point", fake_execute(calls))
    # n: [2, 2] -> two points with the same parameters: computed once, two rows.
    sweep = write_sweep(root, "fake", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [2, 4, 2]},
                                       "fixed": {"seed": 7, "device": "cpu"}})
    table = runs.run_sweep(sweep, root=root, progress=False)
    assert len(calls) == 2 and [c["inject"]["n"] for c in calls] == [2, 4]
    assert calls[0]["inject"]["seed"] == 7 and calls[0]["inject"]["num_images"] == 6  # fixed + preset
    assert list(table["n"]) == [2, 4, 2] and list(table["status"]) == ["ok"] * 3
    assert table["run_id"][0] == table["run_id"][2] != table["run_id"][1]
    assert list(table["metrics.ours.mean_objectness"]) == pytest.approx([0.2, 0.4, 0.2])
    assert "strategies" not in table and table["label"][0] == "x"  # lists left out, strings kept
    csv = root / "runs" / "01_crops" / "sweep-fake.csv"
    assert table.attrs["csv"] == str(csv)
    pd.testing.assert_frame_equal(pd.read_csv(csv)[["run_id", "n"]], table[["run_id", "n"]])
    prov = json.loads((root / table["run_dir"][0] / "provenance.json").read_text())
    assert prov["parameters"]["n"] == 2 and prov["device"] == "cpu" and prov["wall_time_s"] == 1.5
    assert {"torch", "torchvision", "coarsecrop"} <= set(prov["versions"])
    # a CPU run names the kind of CPU: two kinds round differently, so only the same kind repeats bit for bit
    assert torch.backends.cpu.get_cpu_capability() in prov["device_name"]
    assert cpu_model() in prov["device_name"]
    # Rerun: every run is complete and made by the same code, so nothing executes; force runs them again.
    calls.clear()
    table = runs.run_sweep(sweep, root=root, progress=False)
    assert calls == [] and table["reused"].all()
    runs.run_sweep(sweep, root=root, progress=False, force=True)
    assert len(calls) == 2


def test_point_runs_one_point_and_the_dry_run_numbers_them(root, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runs, "execute_point", fake_execute(calls))
    sweep = write_sweep(root, "points", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [11, 12, 13]},
                                         "fixed": {"seed": 5}})
    from coarsecrop.cli import main as cli_main

    assert cli_main(["sweep", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 point(s) of 01_crops at preset smoke: 3 new" in out and "\n1 " in out  # point numbers
    table = runs.run_sweep(sweep, root=root, progress=False, only=[1])  # one Slurm array task
    assert [c["inject"]["n"] for c in calls] == [12] and calls[0]["resume"] is True
    assert list(table["status"]) == ["missing", "ok", "missing"]
    assert list(runs.plan_table(runs.plan_sweep(sweep, root))["state"]) == ["new", "complete", "new"]
    with pytest.raises(ValueError, match="no point 3; this sweep has points 0 to 2"):
        runs.run_sweep(sweep, root=root, progress=False, only=[3])
    # The dry run with --point lists what the same command would run, and a bad point errors there too.
    assert cli_main(["sweep", str(sweep), "--dry-run", "--point", "2", "--point", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 point(s) of 01_crops at preset smoke: 2 new" in out and "\n1 " not in out
    assert cli_main(["sweep", str(sweep), "--dry-run", "--point", "3"]) == 2
    assert "no point 3; this sweep has points 0 to 2" in capsys.readouterr().err


def test_seed_runs_the_points_of_one_seed_and_a_seed_without_points_names_the_sweeps_seeds(root, monkeypatch, capsys):
    """A sweep run a seed at a time (the gpu preset's way): --seed S picks the points at seed S, adds to
    --point, and a seed the sweep does not have stops before anything runs, listing the seeds it has."""
    calls = []
    monkeypatch.setattr(runs, "execute_point", fake_execute(calls))
    sweep = write_sweep(root, "seeds", {"notebook": "01_crops", "preset": "smoke",
                                        "grid": {"seed": [7, 8], "n": [21, 22]}})
    from coarsecrop.cli import main as cli_main

    assert cli_main(["sweep", str(sweep), "--dry-run", "--seed", "8"]) == 0
    out = capsys.readouterr().out
    assert "2 point(s) of 01_crops at preset smoke: 2 new" in out
    plan = runs.plan_sweep(sweep, root)
    at8 = [i for i, p in enumerate(plan["points"]) if p["point"]["seed"] == 8]
    assert len(at8) == 2 and [int(line.split()[0]) for line in out.splitlines()[2:4]] == at8
    table = runs.run_sweep(sweep, root=root, progress=False, seeds=[8])
    assert sorted(c["inject"]["n"] for c in calls) == [21, 22] and {c["inject"]["seed"] for c in calls} == {8}
    assert [i for i, status in enumerate(table["status"]) if status == "ok"] == at8
    other = min(set(range(4)) - set(at8))
    assert runs.select_points(sweep, plan, [other], [8]) == sorted([other, *at8])
    with pytest.raises(ValueError, match="no point at seed 9 at preset smoke; its seeds are 7, 8"):
        runs.run_sweep(sweep, root=root, progress=False, seeds=[9])
    assert len(calls) == 2
    assert cli_main(["sweep", str(sweep), "--dry-run", "--seed", "9"]) == 2
    assert "its seeds are 7, 8" in capsys.readouterr().err


def test_an_unfinished_run_continues_in_place(root, monkeypatch):
    """A run killed mid-way (a time limit) keeps its folder for the notebook to resume; another code's
    folder, or --force, starts from an empty one."""
    import papermill

    sweep = write_sweep(root, "resume", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [21]}})
    task = runs.plan_sweep(sweep, root)["points"][0]["task"]
    run_dir = Path(task["run_dir"])
    seen = []

    def notebook(ipynb, out, parameters, **kwargs):  # what the notebook finds in its folder
        seen.append((run_dir / "partial.txt").is_file())
        (run_dir / "metrics.json").write_text("{}")
        Path(out).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", notebook)

    def interrupted(**changes):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "partial.txt").write_text("the crop job and checkpoints so far")
        (run_dir / "FAILED.txt").write_text("Killed")
        runs.write_record(run_dir, {**task["record"], "status": "running", **changes})

    interrupted()
    assert runs.execute_point(task)["status"] == "ok" and seen == [True]
    assert not (run_dir / "FAILED.txt").exists() and runs.read_record(run_dir)["status"] == "ok"
    interrupted(status="failed")
    runs.execute_point(task)
    assert seen[-1] is True
    interrupted(code="another version of the code")
    runs.execute_point(task)
    assert seen[-1] is False
    interrupted()
    runs.execute_point({**task, "resume": False})  # --force
    assert seen[-1] is False


def test_a_finished_run_of_other_code_is_set_aside_not_deleted(root, monkeypatch, capsys):
    """A code edit makes every run stale; the sweep makes it again and keeps the old folder (its checkpoints,
    its metrics) in runs/<notebook>/.replaced/<run id>/, one generation; --force deletes as it says."""
    import papermill

    sweep = write_sweep(root, "aside", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [23]}})
    task = runs.plan_sweep(sweep, root)["points"][0]["task"]
    run_dir = Path(task["run_dir"])
    kept = run_dir.parent / ".replaced" / run_dir.name

    def notebook(ipynb, out, parameters, **kwargs):
        (run_dir / "metrics.json").write_text("{}")
        Path(out).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", notebook)

    def finished(by: str, what: str):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint.pt").write_text(what)
        runs.write_record(run_dir, {**task["record"], "status": "ok", "code": by})

    finished("older code", "hours of training")
    runs.run_sweep(sweep)
    assert "1 finished run(s) of other code" in capsys.readouterr().err
    assert (kept / "checkpoint.pt").read_text() == "hours of training" and runs.read_record(kept)["code"] == "older code"
    assert runs.read_record(run_dir)["code"] == task["record"]["code"] and not (run_dir / "checkpoint.pt").exists()
    finished("newer code", "more hours")
    runs.run_sweep(sweep)  # one generation: the newer run replaces the older one set aside
    assert (kept / "checkpoint.pt").read_text() == "more hours"
    finished("newer code", "a run to redo")
    runs.run_sweep(sweep, force=True)  # --force: from scratch, as it says
    assert (kept / "checkpoint.pt").read_text() == "more hours" and not (run_dir / "checkpoint.pt").exists()


DYING_KERNEL = """import pathlib, sys
starts = pathlib.Path(__file__).with_name("starts")
n = int(starts.read_text()) + 1 if starts.exists() else 1
starts.write_text(str(n))
if n <= int(pathlib.Path(__file__).with_name("deaths").read_text()):  # as a kernel that lost its port
    sys.exit("zmq.error.ZMQError: Address already in use (the test's kernel, start %d)" % n)
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


@pytest.mark.slow
@pytest.mark.parametrize("deaths,status", [(1, "ok"), (3, "failed")])
def test_a_kernel_that_dies_before_it_answers_is_started_again(root, tmp_path, monkeypatch, deaths, status):
    """Runs side by side can hand two kernels the same free port; the one that loses dies before it answers.
    The run starts its kernel again (KERNEL_STARTS in all), and a kernel that never answers fails the run
    with jupyter_client's error, its own in kernel.log."""
    import sys

    from coarsecrop.runs.notebook import KERNEL_STARTS, KERNELSPEC

    spec = tmp_path / "jupyter" / "kernels" / KERNELSPEC["name"]
    spec.mkdir(parents=True)
    (spec / "kernel.py").write_text(DYING_KERNEL)
    (spec / "deaths").write_text(str(deaths))
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, str(spec / "kernel.py"), "-f",
                                                           "{connection_file}"], **KERNELSPEC}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # found before the installed python3
    sweep = write_sweep(root, f"dying{deaths}", {"notebook": "01_crops", "preset": "smoke",
                                                 "grid": {"n": [1]}, "fixed": TINY})
    task = runs.plan_sweep(sweep, root)["points"][0]["task"]
    result = runs.execute_point({**task, "resume": False})
    assert result["status"] == status, result["error"]
    assert int((spec / "starts").read_text()) == min(deaths + 1, KERNEL_STARTS)
    log = (Path(task["run_dir"]) / "kernel.log").read_text()
    assert log.count("Address already in use") == min(deaths, KERNEL_STARTS)
    assert log.count("starting it again") == min(deaths, KERNEL_STARTS - 1)
    if status == "failed":
        assert "Kernel died before replying to kernel_info" in result["error"]
    else:
        assert (Path(task["run_dir"]) / "metrics.json").is_file()


def test_flatten_keeps_scalars_under_dotted_names():
    nested = {"a": {"b": {"c": 1.5}, "d": [1, 2]}, "e": None, "f": True, "g": "s"}
    assert runs.flatten(nested) == {"a.b.c": 1.5, "e": None, "f": True, "g": "s"}


@pytest.mark.slow
def test_real_sweep_runs_skips_and_records_a_failure(root, capfd):
    """Two real points, a rerun that skips both, then a sweep whose second point makes the notebook raise
    (n = 0 fails the parameters check) run with 2 workers: recorded as failed, the other point reused."""
    sweep = write_sweep(root, "real", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [1, 2]},
                                       "fixed": TINY})
    table = runs.run_sweep(sweep, root=root, progress=False)
    assert list(table["status"]) == ["ok", "ok"], table.get("error")
    assert list(table["reused"]) == [False, False]
    # the kernels' own log lines go to each run's kernel.log, not between the sweep's progress lines
    assert "Kernel is running over TCP" not in capfd.readouterr().err
    assert all((root / d / "kernel.log").is_file() for d in table["run_dir"])
    for _, row in table.iterrows():
        run_dir = root / row["run_dir"]
        assert (run_dir / "metrics.json").is_file() and (run_dir / "01_crops.ipynb").is_file()
        assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"
        assert not (run_dir / "provenance.json").exists()  # 01_crops's metrics.json carries its provenance
        assert row["metrics.ours.crops_per_image"] <= row["n"]
        assert row["params.n"] == row["n"] and row["provenance.wall_time_s"] > 0
    assert (root / "runs" / "01_crops" / "sweep-real.csv").is_file()

    again = runs.run_sweep(sweep, root=root, progress=False)
    assert again["reused"].all() and list(again["run_id"]) == list(table["run_id"])

    mixed = write_sweep(root, "mixed", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [1, 0]},
                                        "fixed": TINY})
    result = runs.run_sweep(mixed, root=root, jobs=2, progress=False)
    assert list(result["status"]) == ["ok", "failed"] and list(result["reused"]) == [True, False]
    failed = root / result["run_dir"][1]
    assert "ParameterError" in (failed / "FAILED.txt").read_text() and "must be at least 1" in result["error"][1]
    assert "mixed.yaml" in result["error"][1]  # the notebook's error names the sweep file
    assert json.loads((failed / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "params" / "sweeps")
                                        .glob("*.yaml")))
def test_committed_sweeps_name_only_notebook_parameters(root, name):
    sweep = root / "params" / "sweeps" / f"{name}.yaml"
    assert sweep.read_text().startswith("# "), f"{sweep.name}: start with a comment saying what it is for"
    assert runs.plan_sweep(sweep, root)["points"]


def test_cases_are_one_axis_of_several_parameters():
    grid = {"cases": [{"method": "byol", "method_params": {}}, {"method": "moco_v2", "method_params": {"q": 1}}],
            "strategy": ["image", "gt"]}
    points = runs.expand_grid(grid)
    assert points[0] == {"method": "byol", "method_params": {}, "strategy": "image"}
    assert points[3] == {"method": "moco_v2", "method_params": {"q": 1}, "strategy": "gt"} and len(points) == 4
    assert runs.grid_keys(Path("x.yaml"), grid) == ["strategy", "method", "method_params"]
    with pytest.raises(ValueError, match="strategy both in a case and in the grid"):
        runs.grid_keys(Path("x.yaml"), {"cases": [{"strategy": "gt"}], "strategy": ["image"]})


def test_preset_option_and_per_preset_grid_entries(root):
    spec = {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [1, 3]},
            "presets": {"smoke": {"seed": [0]}, "quick": {"seed": [0, 1]}}}
    path = write_sweep(root, "per_preset", spec)
    smoke = runs.plan_sweep(path, root)
    quick = runs.plan_sweep(path, root, preset="quick")
    assert [p["point"] for p in smoke["points"]] == [{"seed": 0, "n": 1}, {"seed": 0, "n": 3}]
    # the preset's entries vary slowest, so a partly run sweep has every point at seed 0 first
    assert [p["point"] for p in quick["points"]][:2] == [{"seed": 0, "n": 1}, {"seed": 0, "n": 3}]
    assert len(quick["points"]) == 4 and quick["preset"] == "quick"
    quick_values = yaml.safe_load((root / "params" / "quick" / "01_crops.yaml").read_text())
    assert quick["points"][0]["task"]["record"]["parameters"]["num_images"] == quick_values["num_images"]
    with pytest.raises(FileNotFoundError, match=r"no preset file .*qiuck/01_crops\.yaml.*the presets with a "
                       r"01_crops\.yaml are: .*quick, smoke"):
        runs.plan_sweep(path, root, preset="qiuck")
    bad = write_sweep(root, "bad_presets", {**spec, "fixed": {"seed": 5}})
    with pytest.raises(ValueError, match="presets.(quick|smoke) sets seed, which 'fixed' sets too"):
        runs.read_sweep(bad)


def test_a_preset_entry_replaces_the_grid_axis_of_its_name_in_place_and_the_other_presets_keep_theirs(root):
    """Tables 1, 14 and 15: the reference preset runs other cases (an extra row, its own BYOL recipe); the other
    presets (and a preset the file does not list) keep the grid's points, so the point indices their committed
    run.json files name do not move."""
    cases = [{"strategy": "image"}, {"strategy": "gt", "n": 3}]
    spec = {"notebook": "02_pretrain", "preset": "smoke", "fixed": {"num_images": 2},
            "grid": {"cases": cases, "image_size": [16]},
            "presets": {"quick": {"seed": [0, 1], "cases": [cases[0], {"strategy": "grid", "n": 1}, cases[1]],
                                  "lr": [0.5]}}}
    path = write_sweep(root, "preset_cases", spec)
    smoke = [p["point"] for p in runs.plan_sweep(path, root)["points"]]
    quick = [p["point"] for p in runs.plan_sweep(path, root, preset="quick")["points"]]
    assert smoke == [{"strategy": "image", "image_size": 16}, {"strategy": "gt", "n": 3, "image_size": 16}]
    # the new entries (seed, lr) vary slowest; the replaced cases stay where the grid has them
    assert quick[:3] == [{"seed": 0, "lr": 0.5, "strategy": "image", "image_size": 16},
                         {"seed": 0, "lr": 0.5, "strategy": "grid", "n": 1, "image_size": 16},
                         {"seed": 0, "lr": 0.5, "strategy": "gt", "n": 3, "image_size": 16}] and len(quick) == 6
    with pytest.raises(ValueError, match="presets.quick sets num_images, which 'fixed' sets too"):
        runs.read_sweep(write_sweep(root, "case_fixed", {**spec, "presets": {
            "quick": {"cases": [{"strategy": "image", "num_images": 3}]}}}))
    with pytest.raises(ValueError, match="image_size both in a case and in the grid"):
        runs.read_sweep(write_sweep(root, "case_axis", {**spec, "presets": {
            "quick": {"cases": [{"strategy": "image", "image_size": 8}]}}}))


def test_checkpoints_of_makes_one_transfer_point_per_pretraining_run(root, tmp_path):
    """A transfer sweep over a pretraining sweep: a random-init point per seed first, then a point per
    pretraining run (shared runs once) on its own trunk, backbone, seed and scene set; a point whose pretraining
    has not run fails at once with the sweep to run; a remade trunk makes its transfer stale."""
    write_sweep(root, "pre", {"notebook": "02_pretrain", "preset": "smoke",
                              "grid": {"strategy": ["gt", "image"]}, "presets": {"smoke": {"seed": [0, 1]}}})
    write_sweep(root, "pre_again", {"notebook": "02_pretrain", "preset": "smoke", "grid": {"strategy": ["gt"]},
                                    "presets": {"smoke": {"seed": [0]}}})  # a run shared with "pre"
    path = write_sweep(root, "tr", {"notebook": "03_transfer", "preset": "smoke",
                                    "checkpoints_of": ["pre", "pre_again"], "fixed": {"tasks": ["linear"]}})
    pre = runs.plan_sweep(root / "params" / "sweeps" / "pre.yaml", root)
    plan = runs.plan_sweep(path, root)
    points = [p["point"] for p in plan["points"]]
    assert len(points) == 2 + 4
    # the dry run: every point waits for its pretraining run (the built-in scenes come with it)
    assert list(runs.plan_table(plan)["state"]) == ["waiting"] * 6
    assert runs.missing_inputs(plan, root) == []  # the scenes come with the pretraining runs
    assert [(p["checkpoints"], p["random_init"], p["first_seed"]) for p in points[:2]] == [({}, True, 0), ({}, True, 1)]
    plan["points"] = plan["points"][2:]  # the random-init baselines come first
    points = points[2:]
    for p, q in zip(points, pre["points"]):
        rid = q["run_dir"].name
        assert p["checkpoints"] == {"pretrained": f"runs/02_pretrain/{rid}/train/backbone.pt"}
        assert p["first_seed"] == q["point"]["seed"] and p["random_init"] is False
        assert p["backbone"] == q["task"]["record"]["parameters"]["backbone"]
        assert p["scenes"] == "runs/02_pretrain/_scenes/12x64px-seed0" and p["train_split"] == "train"
    assert plan["points"][0]["task"]["requires"] == ("pre", pre["points"][0]["run_dir"].name)

    result = runs.execute_point(plan["points"][0]["task"])  # its pretraining has not run
    assert result["status"] == "failed"
    assert "coarsecrop sweep params/sweeps/pre.yaml --preset smoke` first" in result["error"]
    failed = Path(plan["points"][0]["task"]["run_dir"]) / "FAILED.txt"  # as every failed run has (the docs)
    assert failed.read_text() == f"not run: {result['error']}\n"

    task = plan["points"][0]["task"]
    checkpoint = root / task["inject"]["checkpoints"]["pretrained"]
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"trunk 1")
    run_dir = Path(task["run_dir"])
    from coarsecrop.io import file_sha256 as sha256
    (run_dir / "metrics.json").write_text(json.dumps(
        {"tasks": {"linear": {"rows": {"pretrained": {"sha256": sha256(checkpoint)}}}}}))
    assert not runs.stale_checkpoint(task)
    pre_dir = root / "runs" / "02_pretrain" / task["requires"][1]
    runs.write_record(pre_dir, {"status": "ok"})  # its pretraining run, complete
    (run_dir / f"{task['record']['notebook']}.ipynb").write_text("{}")
    runs.write_record(run_dir, {**task["record"], "status": "ok"})
    assert runs.point_state(plan["points"][0], plan["code"]) == "complete"
    checkpoint.write_bytes(b"trunk 2, the pretraining run made again")
    assert runs.stale_checkpoint(task)
    assert runs.point_state(plan["points"][0], plan["code"]) == "stale"
    runs.write_record(run_dir, {**task["record"], "status": "running"})  # a crash mid-run
    assert runs.point_state(plan["points"][0], plan["code"]) == "unfinished"


def test_a_transfer_sweep_of_some_of_its_pretraining_sweeps_keeps_their_run_ids(root):
    """--of: the transfer points of the named checkpoints_of sweeps only, with the random-init points their
    scenes need, each with the run id the whole sweep gives it (so the chapters find them); a name the sweep
    does not read is refused, naming those it does."""
    write_sweep(root, "pre", {"notebook": "02_pretrain", "preset": "smoke",
                              "grid": {"strategy": ["gt", "image"]}, "presets": {"smoke": {"seed": [0, 1]}}})
    write_sweep(root, "other", {"notebook": "02_pretrain", "preset": "smoke", "grid": {"strategy": ["grid"]},
                                "presets": {"smoke": {"seed": [2]}}})
    path = write_sweep(root, "tr_of", {"notebook": "03_transfer", "preset": "smoke",
                                       "checkpoints_of": ["pre", "other"], "fixed": {"tasks": ["linear"]}})
    whole = {p["run_dir"].name: p["point"] for p in runs.plan_sweep(path, root)["points"]}
    part = runs.plan_sweep(path, root, of=["pre"])["points"]
    assert len(whole) == 3 + 5 and len(part) == 2 + 4  # random init at seeds 0, 1 (and 2); the trunks
    assert all(whole[p["run_dir"].name] == p["point"] for p in part)
    assert [p["point"]["random_init"] for p in part] == [True, True, False, False, False, False]
    assert {p["point"]["first_seed"] for p in part} == {0, 1}
    with pytest.raises(ValueError, match=r"--of table1: not among its checkpoints_of \(pre, other\)"):
        runs.plan_sweep(path, root, of=["table1"])
    with pytest.raises(ValueError, match="not a transfer sweep"):
        runs.plan_sweep(root / "params" / "sweeps" / "pre.yaml", root, of=["pre"])


def test_checkpoints_of_is_checked(root):
    bad = write_sweep(root, "bad_of", {"notebook": "01_crops", "checkpoints_of": ["table1"]})
    with pytest.raises(ValueError, match="'checkpoints_of' feeds 03_transfer"):
        runs.read_sweep(bad)
    bad = write_sweep(root, "bad_of2", {"notebook": "03_transfer", "checkpoints_of": ["nope"]})
    with pytest.raises(FileNotFoundError, match="checkpoints_of names 'nope'"):
        runs.plan_sweep(bad, root)
    bad = write_sweep(root, "bad_of3", {"notebook": "03_transfer", "checkpoints_of": ["smoke_crops_n"]})
    with pytest.raises(ValueError, match="a sweep of '01_crops'; it must be a sweep of 02_pretrain"):
        runs.plan_sweep(bad, root)
    bad = write_sweep(root, "bad_of4", {"notebook": "03_transfer", "preset": "smoke", "checkpoints_of": ["table15"],
                                        "fixed": {"first_seed": 3}})
    with pytest.raises(ValueError, match="checkpoints_of sets first_seed"):
        runs.plan_sweep(bad, root)


def test_a_random_init_transfer_point_needs_only_its_scene_set(root):
    """A pretraining sweep run in part (e.g. only its MoCo-v2 rows) still gets its random-init baselines: the
    baseline waits for the scene set, which any run on it writes, not for one particular pretraining run."""
    write_sweep(root, "part_pre", {"notebook": "02_pretrain", "preset": "smoke", "fixed": {"scene_seed": 7},
                                   "grid": {"strategy": ["gt", "image"]}, "presets": {"smoke": {"seed": [0]}}})
    path = write_sweep(root, "part_tr", {"notebook": "03_transfer", "preset": "smoke",
                                         "checkpoints_of": ["part_pre"], "fixed": {"tasks": ["linear"]}})
    init, trunk = runs.plan_sweep(path, root)["points"][:2]
    assert init["point"]["random_init"] and not trunk["point"]["random_init"]
    assert "the scenes" in runs.missing_pretraining(init["task"])  # nothing has run: no scenes yet
    scenes = root / init["task"]["inject"]["scenes"]
    scenes.mkdir(parents=True)
    (scenes / "annotations.json").write_text("{}")  # the second run wrote them; the first never ran
    assert runs.missing_pretraining(init["task"]) == ""
    assert "is not complete" in runs.missing_pretraining(trunk["task"])  # a trunk still needs its own run


def test_a_preset_adds_extra_points_after_its_grid_and_the_grid_points_keep_their_indices(root):
    """Issue 13: five seeds for the rows a comparison near its threshold needs, three for the others. A preset's
    extra_points come after its grid's points (so committed run.json files keep their --point K), other presets
    do not see them, and a repeated point, a bad entry or a key 'fixed' sets is refused naming the entry."""
    spec = {"notebook": "02_pretrain", "preset": "smoke", "fixed": {"num_images": 2},
            "grid": {"strategy": ["image", "gt", "grid"]},
            "presets": {"quick": {"seed": [0, 1], "extra_points": [{"seed": [2, 3], "strategy": ["gt", "grid"]},
                                                                   {"seed": [2], "strategy": ["image"]}]}}}
    path = write_sweep(root, "extra", spec)
    plain = runs.plan_sweep(write_sweep(root, "plain", {**spec, "presets": {"quick": {"seed": [0, 1]}}}), root,
                            preset="quick")["points"]
    quick = runs.plan_sweep(path, root, preset="quick")["points"]
    assert [p["run_dir"] for p in quick[:6]] == [p["run_dir"] for p in plain]  # the grid's points, in place
    assert [p["point"] for p in quick[6:]] == [{"seed": 2, "strategy": "gt"}, {"seed": 2, "strategy": "grid"},
                                               {"seed": 3, "strategy": "gt"}, {"seed": 3, "strategy": "grid"},
                                               {"seed": 2, "strategy": "image"}]
    assert len({p["run_dir"] for p in quick}) == 11
    assert len(runs.plan_sweep(path, root)["points"]) == 3  # smoke: the grid alone
    repeated = {**spec, "presets": {"quick": {"seed": [0, 1], "extra_points": [{"seed": [1], "strategy": ["gt"]}]}}}
    with pytest.raises(ValueError, match=r"extra_points\[0\] repeats the point .*point 4"):
        runs.plan_sweep(write_sweep(root, "repeated", repeated), root, preset="quick")
    for bad in ([{"seed": 3}], [{}], ["seed: 3"]):
        with pytest.raises(ValueError, match=r"presets.quick.extra_points\[0\] must be a grid"):
            runs.read_sweep(write_sweep(root, "bad_extra", {**spec, "presets": {"quick": {"extra_points": bad}}}))
    with pytest.raises(ValueError, match=r"presets.quick.extra_points\[1\] sets num_images, which 'fixed' sets"):
        runs.read_sweep(write_sweep(root, "extra_fixed", {**spec, "presets": {"quick": {"extra_points": [
            {"seed": [3]}, {"num_images": [5]}]}}}))
    with pytest.raises(ValueError, match="unknown parameter.*sede"):
        runs.plan_sweep(write_sweep(root, "extra_typo", {**spec, "presets": {"quick": {"extra_points": [
            {"sede": [3]}]}}}), root, preset="quick")


def test_a_point_another_sweep_completed_meanwhile_is_reused(tmp_path):
    """Sweeps sharing a row plan their points at their start; the later one, reaching a run the other has
    finished since, reuses it instead of setting it aside and making it again."""
    root = copy_book_sources(tmp_path)  # its own runs/: no other test has made this point
    sweep = write_sweep(root, "meanwhile", {"notebook": "01_crops", "preset": "smoke", "grid": {"n": [2]},
                                            "fixed": TINY})
    point = runs.plan_sweep(sweep, root)["points"][0]
    assert runs.point_state(point, point["task"]["record"]["code"]) == "new"
    fake_execute([])(point["task"])  # the other sweep finishes the run
    made = (point["run_dir"] / "metrics.json").read_text()
    result = runs.execute_point({**point["task"], "resume": True})
    assert result == {"status": "ok", "wall_time_s": 0.0, "error": "", "reused": True}
    assert (point["run_dir"] / "metrics.json").read_text() == made
    assert not (point["run_dir"].parent / runs.REPLACED / point["run_dir"].name).exists()
