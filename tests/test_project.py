"""The project's own consistency: environment.yml agrees with pyproject.toml, presets name only real
notebook parameters, notebooks are jupytext percent files with one parameters cell that mirrors a
dataclass, the book's configuration is complete, and coarsecrop.params behaves. All fast."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import re
import typing
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from coarsecrop.params import ParameterError, load_notebook_params, load_params, run_id, run_id_of
from coarsecrop.studies.chapters import glue_key
from coarsecrop.studies.crops import CropStudyParams
from coarsecrop.studies.results import REFERENCE_PRESETS, TABLE_SWEEPS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
PRESET_FILES = sorted(p for p in (ROOT / "params").glob("*/*.yaml") if p.parent.name != "sweeps")



# ---------------------------------------------------------------- environment.yml == pyproject.toml

def _requirements(lines) -> dict[str, str]:
    reqs = {}
    for line in lines:
        req = Requirement(line)
        reqs[req.name.lower().replace("_", "-")] = str(req.specifier)
    return reqs


def _canonical(spec: str) -> set[str]:
    return {s.strip() for s in spec.split(",") if s.strip()}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _requirements(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(_requirements(extra))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert any(d.startswith("python") for d in conda) and "pip" in conda
    python = next(d for d in conda if d.startswith("python"))
    assert python.replace(" ", "") == "python" + project["requires-python"].replace(" ", "")
    got = _requirements(p for p in pip if not p.startswith("-"))
    assert set(got) == set(wanted), f"only in environment.yml: {set(got) - set(wanted)}; " \
                                    f"only in pyproject.toml: {set(wanted) - set(got)}"
    for name in wanted:
        assert _canonical(got[name]) == _canonical(wanted[name]), f"{name}: {got[name]} vs {wanted[name]}"


# ---------------------------------------------------------------- notebooks and presets

def _parameters_cells(path: Path) -> list:
    import jupytext

    nb = jupytext.read(path)
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def _parameter_names(path: Path) -> dict[str, object]:
    """name -> literal default of every assignment in the notebook's parameters cell."""
    (cell,) = _parameters_cells(path)
    values = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"{path.name}: the parameters cell holds only `name = literal` lines"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _dataclass(notebook: str):
    """The dataclass a notebook's parameters cell mirrors: the first argument of its
    ``load_notebook_params(...)`` / ``load_params(...)`` call, resolved through the notebook's imports."""
    tree = ast.parse((ROOT / "notebooks" / f"{notebook}.py").read_text())
    imports = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imports[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imports[alias.asname or alias.name] = (alias.name, None)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("load_notebook_params", "load_params"):
            arg = node.args[0]
            if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name):
                module, attr = imports[arg.value.id]
                obj = importlib.import_module(module if attr is None else f"{module}.{attr}")
                return getattr(obj, arg.attr)
            if isinstance(arg, ast.Name):
                module, attr = imports[arg.id]
                return getattr(importlib.import_module(module), attr)
    raise AssertionError(f"notebooks/{notebook}.py never calls load_notebook_params(<dataclass>, ...)")


def test_there_are_notebooks_and_presets():
    assert NOTEBOOKS and PRESET_FILES
    assert {p.parent.name for p in PRESET_FILES} >= {"smoke", "quick"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_jupytext_percent_with_one_parameters_cell(path):
    header = path.read_text().split("# ---", 2)
    assert path.read_text().startswith("# ---\n") and len(header) == 3, f"{path.name}: no jupytext header"
    assert re.search(r"format_name:\s*percent", header[1]), f"{path.name}: header is not py:percent"
    assert "name: python3" in header[1], f"{path.name}: kernelspec python3 missing from the header"
    assert len(_parameters_cells(path)) == 1, f"{path.name}: needs exactly one cell tagged parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_mirrors_its_dataclass(path):
    cls = _dataclass(path.stem)
    cell = _parameter_names(path)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(cell) == fields, f"only in the cell: {set(cell) - fields}; only in {cls.__name__}: {fields - set(cell)}"
    defaults = dataclasses.asdict(cls())
    for name, value in cell.items():
        assert value == defaults[name], f"{path.name}: {name} = {value!r} in the cell, {defaults[name]!r} in {cls.__name__}"
    load_params(cls, cell, source=str(path))  # the defaults type-check


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path, tmp_path):
    """papermill skips a parameter line it cannot parse (e.g. a comment holding '='), and then only
    warns when a preset sets it; every field must be visible to papermill."""
    import papermill

    from coarsecrop.runs.notebook import convert

    ipynb = convert(path, tmp_path / f"{path.stem}.ipynb")
    seen = set(papermill.inspect_notebook(str(ipynb)))
    assert seen == set(_parameter_names(path)), f"papermill does not see {set(_parameter_names(path)) - seen}"


@pytest.mark.parametrize("preset", PRESET_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_names_only_notebook_parameters(preset):
    """papermill only warns about a parameter the notebook lacks; this fails instead."""
    notebook = ROOT / "notebooks" / f"{preset.stem}.py"
    assert notebook.is_file(), f"{preset}: no notebook {notebook.name}"
    values = yaml.safe_load(preset.read_text()) or {}
    unknown = set(values) - set(_parameter_names(notebook))
    assert not unknown, f"{preset.relative_to(ROOT)} names {sorted(unknown)}, not in {notebook.name}'s parameters cell"
    assert not {"out", "preset"} & set(values), "out and preset are set by coarsecrop.book"
    load_params(_dataclass(preset.stem), values, source=str(preset))  # types too


@pytest.mark.parametrize("preset", PRESET_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_starts_with_a_comment_saying_what_it_is_for(preset):
    first = preset.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20


def test_every_notebook_has_smoke_and_quick_presets():
    for nb in NOTEBOOKS:
        for preset in ("smoke", "quick"):
            assert (ROOT / "params" / preset / f"{nb.stem}.yaml").is_file(), f"params/{preset}/{nb.stem}.yaml"


# ---------------------------------------------------------------- the book

def test_book_config_and_toc():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert config["only_build_toc_files"] is True
    execute = config["execute"]
    assert execute["raise_on_error"] is True and execute["timeout"] >= 60
    assert "book/generated/*" in execute["exclude_patterns"]  # papermill ran them; never again
    sphinx = config["sphinx"]["config"]
    assert sphinx["nb_execution_raise_on_error"] is True
    assert "sphinx.ext.intersphinx" not in sphinx["extensions"]  # it downloads
    assert "myst_nb" in sphinx["extensions"]

    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [c["file"] for c in part["chapters"]]
    for file in files:
        if file.startswith("book/generated/"):
            name = Path(file).name
            assert (ROOT / "notebooks" / f"{name}.py").is_file(), f"{file}: made from notebooks/{name}.py"
        else:
            assert (ROOT / f"{file}.md").is_file(), f"{file}.md missing"


def test_glue_references_name_glued_keys():
    """Every key the chapters paste from a generated notebook is glued by that notebook's source. The landing
    page's results are glued by 18_claims from the chapters' numbers (``quoted_numbers``): those keys must name
    a reference preset and a table sweep here; that each exists is the smoke book build's check (-W)."""
    quoted = tuple(f"{glue_key(preset, sweep)}_" for preset in REFERENCE_PRESETS for sweep in TABLE_SWEEPS)
    quoted_probe = {glue_key(preset, "probe") for preset in REFERENCE_PRESETS}
    for page in (ROOT / "book").glob("*.md"):
        text = page.read_text()
        refs = re.findall(r"generated/(\w+)\.ipynb::(\w+):", text)
        refs += [(m[1], m[0]) for m in re.findall(r"```\{glue\}\s+(\w+)\s*\n:doc:\s*generated/(\w+)\.ipynb", text)]
        for notebook, key in refs:
            source = (ROOT / "notebooks" / f"{notebook}.py").read_text()
            glued = set(re.findall(r'glue\(\s*"(\w+)"', source))
            prefixes = re.findall(r'glue\(\s*f"(\w+)\{', source)  # glue(f"objectness_{name}", ...)
            if "T.quoted_numbers(" in source and (key.startswith(quoted) or key in quoted_probe):
                continue
            assert key in glued or any(key.startswith(p) for p in prefixes), \
                f"{page.name}: glue key {key!r} is not glued by notebooks/{notebook}.py"


def test_readme_quick_start_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md needs a Quick start section with a code block"
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["make book", "make test"]


def test_ci_runs_make_test():
    text = (ROOT / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert re.search(r"^make test$", text, re.M)


# ---------------------------------------------------------------- coarsecrop.params

@dataclasses.dataclass
class Example:
    count: int = 3
    rate: float = 0.5
    name: str = "x"
    flag: bool = False
    sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    pair: tuple[float, float] = (0.0, 1.0)
    path: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def test_load_params_defaults_and_conversions():
    p = load_params(Example, {"rate": 2, "pair": [1, 2.5], "path": "a/b"}, source="x.yaml")
    assert p == Example(rate=2.0, pair=(1.0, 2.5), path="a/b")
    assert isinstance(p.rate, float) and isinstance(p.pair, tuple)
    assert load_params(Example, {"path": None}, source="x.yaml").path is None


def test_unknown_key_names_the_file_and_the_valid_keys():
    with pytest.raises(ParameterError) as info:
        load_params(Example, {"cuont": 3}, source="params/smoke/x.yaml")
    msg = str(info.value)
    assert msg.startswith("params/smoke/x.yaml:") and "'cuont'" in msg
    assert "valid keys: count, extra, flag, name, pair, path, rate, sizes" in msg


@pytest.mark.parametrize("key,value", [
    ("count", "3"), ("count", 2.5), ("count", True), ("rate", "fast"), ("name", 3), ("flag", 1),
    ("sizes", 3), ("sizes", [1, "2"]), ("pair", [1]), ("path", 5), ("extra", [1]),
])
def test_mistyped_value_fails_with_the_field_type(key, value):
    with pytest.raises(ParameterError, match=rf"x\.yaml: parameter '{key}'.*expected.*valid keys:"):
        load_params(Example, {key: value}, source="x.yaml")


def test_a_class_minimum_is_checked_with_the_types():
    """01_crops took n=0 and show_images=0: the first failed in the crop job after the scenes were written
    (naming a command-line flag), the second in a figure after every crop job had run."""
    @dataclasses.dataclass
    class Ranged(Example):
        MINIMUM: typing.ClassVar[dict] = {"count": 1, "rate": 0.0}

    assert load_params(Ranged, {"count": 1, "rate": 0}, source="x.yaml").count == 1
    for key, value in (("count", 0), ("rate", -0.5)):
        with pytest.raises(ParameterError, match=rf"^x\.yaml: parameter '{key}' = {value}: must be at least"):
            load_params(Ranged, {key: value}, source="x.yaml")
    with pytest.raises(ParameterError, match=r"parameter 'show_images' = 0: must be at least 1"):
        load_params(CropStudyParams, {"show_images": 0}, source="nb")


def test_load_notebook_params_catches_an_injected_typo():
    before = {"np", "In", "Out"}
    namespace = {"np": object(), "In": [], "Out": {}, "count": 4, "rate": 0.1, "_hidden": 3, "fig": object()}
    assert load_notebook_params(Example, namespace, before, source="nb").count == 4
    namespace["raet"] = 0.2  # what papermill injects for a typo in a preset
    with pytest.raises(ParameterError, match="'raet'.*valid keys: count"):
        load_notebook_params(Example, namespace, before, source="params/quick/x.yaml")


def test_run_id_is_short_stable_and_order_independent():
    a = run_id({"x": 1, "y": [1, 2], "z": None})
    assert a == run_id({"z": None, "y": (1, 2), "x": 1}) and len(a) == 10
    assert a != run_id({"x": 2, "y": [1, 2], "z": None})


def test_a_whole_number_is_one_run_whether_written_as_int_or_float():
    """A preset's ``warmup_epochs: 1`` (hashed as written by the runners) and the notebook's dataclass value
    1.0 (run by hand) name one run folder; flags and fractions keep their ids apart."""
    @dataclasses.dataclass
    class Example:
        warmup: float = 0.25
        scale: tuple[float, float] = (0.2, 1.0)
        nested: dict = dataclasses.field(default_factory=dict)
        out: str | None = None

    by_hand = load_params(Example, {"warmup": 1, "scale": [0.2, 1], "nested": {"lr": 3}}, "nb")
    assert by_hand.warmup == 1.0 and isinstance(by_hand.warmup, float)
    written = {"warmup": 1, "scale": [0.2, 1], "nested": {"lr": 3.0}, "out": "runs/x"}
    assert run_id_of(by_hand) == run_id_of(written)
    assert run_id({"x": 1}) != run_id({"x": 1.5}) != run_id({"x": True}) != run_id({"x": "1"})
    assert run_id({"x": True}) != run_id({"x": 1})


def test_run_id_of_leaves_out_where_a_run_goes():
    @dataclasses.dataclass
    class Example:
        x: int = 1
        out: str | None = None
        preset: str = ""

    a = run_id_of(Example())
    assert a == run_id_of(Example(out="runs/elsewhere", preset="params/quick/x.yaml")) == run_id({"x": 1})
    assert a == run_id_of({"x": 1, "out": "/tmp/run", "preset": "p.yaml"}) != run_id_of(Example(x=2))


def test_a_scene_version_keeps_the_ids_of_runs_made_before_it_existed(tmp_path):
    """scene_version 1 (v1, the only generator when the committed runs were made) is left out of the id, so
    their ids stay; another version is part of it, and the study writes that generator's scenes."""
    from coarsecrop.studies import pretrain as ps

    v1, v3 = ps.PretrainStudyParams(), ps.PretrainStudyParams(scene_version=3)
    legacy = {k: v for k, v in dataclasses.asdict(v1).items() if k != "scene_version"}
    assert run_id_of(v1) == run_id_of(legacy) != run_id_of(v3)
    run_dir = tmp_path / "02_pretrain" / run_id_of(v3)
    folder = ps.prepare_scenes(dataclasses.replace(v3, num_images=3, scene_size=64), run_dir)
    assert folder == tmp_path / "02_pretrain" / "_scenes" / "3x64px-seed0-v3"
    assert json.loads((folder / "annotations.json").read_text())["info"]["generator_version"] == 3


def test_chapters_that_read_other_runs_are_executed_on_every_build():
    from coarsecrop.book import EXECUTE_EVERY_BUILD

    readers = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")
                     if "T.chapter(" in p.read_text() or "T.claims_overview(" in p.read_text())
    assert readers and sorted(EXECUTE_EVERY_BUILD) == readers


def test_make_book_runs_the_notebooks_the_book_shows():
    from coarsecrop.book import book_notebooks

    names = book_notebooks(ROOT)
    assert "01_crops" in names
    for name in names:
        assert (ROOT / "params" / "quick" / f"{name}.yaml").is_file()
