"""The paper-scale presets (voc07, coco) as a researcher runs them: every committed sweep plans at every
preset into parameters its notebook accepts; a sweep whose data set is missing stops before anything runs
and says where to put it; and, on tiny data in the real layouts (a VOC root under data/VOCdevkit/VOC2007, a
split-less COCO train2017 json), a table sweep (Table 15 cut to one Our-Crop rule, with and without
RandomResizedCrop), its transfer sweep (mAP^l on VOC07 trainval -> test) and the table's chapter run at the
voc07 and coco presets with only their sizes shrunk."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from coarsecrop.runs import sweep as runs
from coarsecrop.cli import main as cli_main
from coarsecrop.studies.crops import CropStudyParams
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.data.synthetic_voc import write_voc
from coarsecrop.studies.transfer import TransferParams
from coarsecrop.params import load_params
from coarsecrop.studies.pretrain import PretrainStudyParams
from tests.conftest import ROOT, copy_book_sources, cut_strategies

PRESETS = ("smoke", "quick", "cpu-full", "cpu-full-v1", "gpu", "voc07", "coco")
CLASSES = {"01_crops": CropStudyParams, "02_pretrain": PretrainStudyParams, "03_transfer": TransferParams}
TABLE_SWEEPS = sorted(p.stem for p in (ROOT / "params" / "sweeps").glob("table*.yaml"))
SWEEPS = sorted(p.stem for p in (ROOT / "params" / "sweeps").glob("*.yaml"))


def sweep_notebook(name: str) -> str:
    return yaml.safe_load((ROOT / "params" / "sweeps" / f"{name}.yaml").read_text())["notebook"]


@pytest.mark.parametrize("name", [*TABLE_SWEEPS, "transfer", "transfer_finetune"])
def test_the_book_sweeps_have_every_preset(name):
    notebook = sweep_notebook(name)
    missing = [p for p in PRESETS if not (ROOT / "params" / p / f"{notebook}.yaml").is_file()]
    assert not missing, f"{name}: no params/<preset>/{notebook}.yaml for {missing}"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_plans_valid_parameters_at_every_preset(name, preset):
    notebook = sweep_notebook(name)
    if not (ROOT / "params" / preset / f"{notebook}.yaml").is_file():
        pytest.skip(f"no {preset} preset for {notebook}")  # smoke_crops_n: 01_crops has no cpu-full preset
    plan = runs.plan_sweep(ROOT / "params" / "sweeps" / f"{name}.yaml", ROOT, preset)
    assert plan["points"] and plan["preset"] == preset
    for p in plan["points"]:
        load_params(CLASSES[notebook], p["task"]["record"]["parameters"], source=f"{name} at {preset}")
    if preset in ("voc07", "coco"):  # real data sets, read where the preset says
        assert all(p["task"]["record"]["parameters"]["scenes"].startswith("data/") for p in plan["points"])


def test_a_missing_data_set_stops_the_sweep_before_anything_runs(tmp_path, capsys):
    root = copy_book_sources(tmp_path)
    sweep = root / "params" / "sweeps" / "table1.yaml"
    with pytest.raises(FileNotFoundError) as err:
        runs.run_sweep(sweep, root=root, preset="voc07", progress=False)
    text = str(err.value)
    assert "scenes: data/VOCdevkit/VOC2007 does not exist (set in params/voc07/02_pretrain.yaml)" in text
    assert "symlink" in text and not (root / "runs" / "02_pretrain").exists()
    # the dry run says the same, and runs nothing
    assert cli_main(["sweep", str(sweep), "--preset", "voc07", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10 point(s) of 02_pretrain at preset voc07: 10 new" in out
    assert "missing input: scenes: data/VOCdevkit/VOC2007" in out
    assert not (root / "runs" / "02_pretrain").exists()


# ---------------------------------------------------------------- the presets end to end, on tiny data

TINY_PRETRAIN = {"backbone": "resnet10_w8", "image_size": 16, "epochs": 1, "batch_size": 8, "processes": 1,
                 "device": "cpu", "workers": 0, "threads": 1,
                 "train_params": {"log_every": 1, "monitor_every": 1, "monitor_size": 16}}
TINY_TRANSFER = {"device": "cpu", "threads": 1, "task_params": {"linear": {"image_size": 32, "epochs": 5}}}


def shrink(path: Path, changes: dict) -> None:
    """A preset with only its sizes changed: the data paths, splits and protocols stay the preset's."""
    values = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**values, **changes}, sort_keys=False))


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    """A copy of the book's sources with VOC2007 and COCO train2017 where the presets look for them
    (data/VOCdevkit/VOC2007: trainval = train and test = val, disjoint as VOC's own; data/coco: a json
    without splits), and
    the voc07 and coco presets shrunk to a CPU."""
    root = copy_book_sources(tmp_path_factory.mktemp("paper"))
    made = tmp_path_factory.mktemp("scenes")
    write_scenes(made / "voc", num_images=16, seed=0, size=64, progress=False)
    voc = write_voc(made / "voc", root / "data" / "VOCdevkit" / "VOC2007")
    shutil.copy(voc / "ImageSets" / "Main" / "val.txt", voc / "ImageSets" / "Main" / "test.txt")
    shutil.copy(voc / "ImageSets" / "Main" / "train.txt", voc / "ImageSets" / "Main" / "trainval.txt")  # test apart
    write_scenes(made / "coco", num_images=16, seed=1, size=64, progress=False)
    coco = root / "data" / "coco"
    shutil.copytree(made / "coco" / "images", coco / "train2017" / "images")
    data = json.loads((made / "coco" / "annotations.json").read_text())
    for image in data["images"]:
        image.pop("split")
    (coco / "annotations").mkdir()
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    for preset in ("voc07", "coco"):
        shrink(root / "params" / preset / "02_pretrain.yaml", TINY_PRETRAIN)
        shrink(root / "params" / preset / "03_transfer.yaml", TINY_TRANSFER)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["voc07", "coco"])
def test_table_sweep_transfer_sweep_and_chapter_at_the_paper_presets(paper_root, preset):
    from coarsecrop.book import run_notebook

    os.environ.setdefault("MPLBACKEND", "Agg")
    sweeps = paper_root / "params" / "sweeps"
    # CI's time: one Our-Crop rule per preset (its crop job reads that layout), with and without RRC
    cut_strategies(sweeps / "table15.yaml", preset, [{"voc07": "ours", "coco": "ours_coarse"}[preset]])
    table = runs.run_sweep(sweeps / "table15.yaml", jobs=2, progress=False, root=paper_root, preset=preset)
    assert list(table["status"]) == ["ok"] * 2, table["error"].tolist()
    for run_dir in table["run_dir"]:
        params = json.loads((paper_root / run_dir / "run.json").read_text())["parameters"]
        assert params["scenes"] == runs.read_preset(paper_root / "params" / preset / "02_pretrain.yaml",
                                                    params)["scenes"]
    # mAP^l of those trunks on VOC07 trainval -> test, and a random init (transfer.yaml restricted to table15)
    transfer = runs.run_sweep(sweeps / "transfer.yaml", jobs=2, progress=False, root=paper_root, preset=preset,
                              of=["table15"])
    assert list(transfer["status"]) == ["ok"] * 3, transfer["error"].tolist()
    mapl = []  # each transfer run's mAP^l (percent), which the chapter must show
    for run_dir in transfer["run_dir"]:
        metrics = json.loads((paper_root / run_dir / "metrics.json").read_text())
        assert metrics["params"]["scenes"] == "data/VOCdevkit/VOC2007" and metrics["params"]["val_split"] == "test"
        (row,) = metrics["tasks"]["linear"]["rows"].values()
        mapl.append(row["summary"]["mAP_l"]["mean"])
    # the chapter at that preset reads those runs: a "this build" table of Table 15's 6 rows and the init,
    # the 2 rows run and the init with mAP^l
    run_dir = run_notebook(paper_root, "15_random_resized_crop", preset, log_output=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (header,) = [h for label, h in metrics["headers"].items() if label.startswith("this build")]
    assert f"preset **{preset}**" in header and "2 of 2 runs complete" in header
    (rows,) = [r for label, r in metrics["summaries"].items() if label.startswith("this build")]
    done = [r for r in rows if r["mAP_l_n"]]
    assert rows[-1]["row"] == "random init" and len(rows) == 7 and len(done) == 3 and done[-1] is rows[-1]
    assert all(r["mAP_l_n"] == 1 for r in done)
    # the very numbers of those runs, as fractions: the chapter read the transfer runs of its own rows
    assert sorted(r["mAP_l"] for r in done) == pytest.approx(sorted(m / 100 for m in mapl))


@pytest.mark.parametrize("preset, num_images", [("cpu-full", 1000), ("quick", 320)])
def test_the_transfer_points_of_a_scenes_v3_preset_evaluate_each_trunk_on_its_own_v3_scenes(preset, num_images):
    """cpu-full (the reference results) and quick (make book's runs) pretrain on scenes v3, with the anchors
    and phi that the crops chapter (params/quick/01_crops.yaml) analyses on the same generator: their transfer
    points must read the very scene set each trunk was pretrained on (the -v3 folder), not a v1 set of the
    same size and seed."""
    crops = yaml.safe_load((ROOT / "params" / "quick" / "01_crops.yaml").read_text())
    pretrain = {p["run_dir"].name: p["task"]["record"]["parameters"]
                for p in runs.plan_sweep(ROOT / "params" / "sweeps" / "table1.yaml", ROOT, preset)["points"]}
    assert {(q["scene_version"], tuple(q["anchor_sizes"]), q["crop_backbone"], q["crop_checkpoint"])
            for q in pretrain.values()} == {(crops["scene_version"], tuple(crops["anchor_sizes"]), crops["backbone"],
                                             None)}
    transfer = runs.plan_sweep(ROOT / "params" / "sweeps" / "transfer.yaml", ROOT, preset)["points"]
    scenes = {p["task"]["record"]["parameters"]["scenes"] for p in transfer}
    assert scenes == {f"runs/02_pretrain/_scenes/{num_images}x128px-seed0-v3"}
    if preset == "quick":  # make book's transfer chapter scores the newest of those trunks on the same generator
        chapter = yaml.safe_load((ROOT / "params" / "quick" / "03_transfer.yaml").read_text())
        assert chapter["scene_version"] == crops["scene_version"]
    v1 = runs.plan_sweep(ROOT / "params" / "sweeps" / "transfer.yaml", ROOT, "cpu-full-v1")["points"]
    assert {p["task"]["record"]["parameters"]["scenes"] for p in v1} == {"runs/02_pretrain/_scenes/1000x128px-seed0"}


@pytest.mark.parametrize("preset, full_epochs", [("cpu-full", 36), ("gpu", 30), ("quick", 4)])
def test_every_cpu_full_byol_row_runs_the_one_calibrated_recipe_and_the_tables_share_their_rows(preset, full_epochs):
    """The calibrated BYOL recipe (params/cpu-full/02_pretrain.yaml's comments: no RandomResizedCrop, base lr
    4.8) is written into each table sweep's cpu-full entry, and copied into its gpu and quick entries (quick:
    make book's runs, on the same scenes v3): one copy gone astray would train a row on another recipe and
    split a shared row into two runs, so the tables would no longer compare like with like."""
    tables = ["table1", "table2", "table10", "table11", "table12_13", "table14", "table15"]
    ablation = {"table15": "random_resized_crop", "table11": "local_views"}  # the key each ablation varies
    shared = {}
    for table in tables:
        for p in runs.plan_sweep(ROOT / "params" / "sweeps" / f"{table}.yaml", ROOT, preset)["points"]:
            q = p["task"]["record"]["parameters"]
            if q["method"] != "byol":
                continue
            recipe = {k: v for k, v in q["method_params"].items() if k != ablation.get(table)}
            assert q["lr"] == 4.8 and q["optimizer"] is None and q["scene_version"] == 3, (table, q)
            assert recipe == ({} if table == "table15" else {"random_resized_crop": False}), (table, q)
            if q["method_params"] == {"random_resized_crop": False} and q["n"] == 5 and q["epochs"] == full_epochs \
                    and q["phi"] == "random":
                # a row is also its phi (Table 11's s5 on a random phi of s6's trunk is another row)
                shared.setdefault((q["strategy"], q["seed"], q["crop_backbone"]), set()).add(p["run_dir"].name)
    assert {k: ids for k, ids in shared.items() if len(ids) > 1} == {}
    # Table 1's rows are the ones the other tables reuse (its Image-Crop seed 0 sits in all seven)
    assert {(s, 0, "resnet18") for s in ("image", "gt", "grid", "ours", "ours_coarse")} <= set(shared)


def seed0_rows(plan: dict) -> list[str]:
    """The rows a table sweep trains at seed 0: what each varies, without the preset's scale (MoCo-v2's queue
    grows with the data at gpu)."""
    rows = set()
    for p in plan["points"]:
        q = p["task"]["record"]["parameters"]
        if q["seed"] == 0:
            method_params = {k: v for k, v in q["method_params"].items() if k != "queue_size"}
            rows.add(json.dumps({"method_params": method_params, **{k: q[k] for k in ("strategy", "method", "n",
                                                                                        "phi", "lr")}}, sort_keys=True))
    return sorted(rows)


def test_the_gpu_preset_runs_the_cpu_full_tables_on_larger_scenes_and_evaluates_each_trunk_on_its_own_set():
    """params/gpu (issue 13, item 6; not yet run on a GPU): every table sweep has the cpu-full rows at three
    seeds on 5,000 scenes v3 of 256 px with the paper's anchors, 64-px views of a 32-wide ResNet-18 on CUDA;
    its transfer points read that very scene set with the same trunk, and the seeds run one at a time."""
    for table in TABLE_SWEEPS:
        cpu = runs.plan_sweep(ROOT / "params" / "sweeps" / f"{table}.yaml", ROOT, "cpu-full")
        gpu = runs.plan_sweep(ROOT / "params" / "sweeps" / f"{table}.yaml", ROOT, "gpu")
        values = [p["task"]["record"]["parameters"] for p in gpu["points"]]
        assert {(v["num_images"], v["scene_size"], v["scene_version"], v["backbone"], v["image_size"], v["device"])
                for v in values} == {(5000, 256, 3, "resnet18_w32_cifar", 64, "cuda")}, table
        assert {tuple(v["anchor_sizes"]) for v in values} == {(32, 64, 128, 256)}
        assert sorted({v["seed"] for v in values}) == [0, 1, 2]
        if table != "table10":  # the budget table halves each preset's own epochs
            assert seed0_rows(gpu) == seed0_rows(cpu), f"{table}: the gpu rows differ from cpu-full's"
    transfer = runs.plan_sweep(ROOT / "params" / "sweeps" / "transfer.yaml", ROOT, "gpu")["points"]
    values = [p["task"]["record"]["parameters"] for p in transfer]
    assert {(v["scenes"], v["backbone"], v["device"]) for v in values} == {
        ("runs/02_pretrain/_scenes/5000x256px-seed0-v3", "resnet18_w32_cifar", "cuda")}
    assert {v["task_params"]["linear"]["image_size"] for v in values} == {128}
    assert runs.select_points("transfer.yaml", {"points": transfer, "preset": "gpu"}, None, [1]) == \
        [i for i, v in enumerate(values) if v["first_seed"] == 1]


@pytest.mark.slow
def test_a_gpu_seed_runs_exports_and_appears_in_its_chapter_beside_cpu_full(tmp_path):
    """The gpu preset's way, with only its sizes shrunk to a CPU: Table 15's sweep and its transfer sweep at
    seed 0 (--seed), `tables export --preset gpu`, then the chapter of a smoke build shows results/gpu/ as a
    reference source beside cpu-full; without that folder the chapters show no gpu source at all."""
    from coarsecrop.book import run_notebook
    from coarsecrop.studies.results import REFERENCE_PRESETS, committed_presets, export_results

    os.environ.setdefault("MPLBACKEND", "Agg")
    root = copy_book_sources(tmp_path)
    shrink(root / "params" / "gpu" / "02_pretrain.yaml", {**TINY_PRETRAIN, "num_images": 16, "scene_size": 64,
                                                          "anchor_sizes": [16, 32, 64]})
    shrink(root / "params" / "gpu" / "03_transfer.yaml", TINY_TRANSFER)
    sweeps = root / "params" / "sweeps"
    cut_strategies(sweeps / "table15.yaml", "gpu", ["image"])  # CI's time: Image-Crop with and without RRC only

    assert committed_presets(REFERENCE_PRESETS, root) == ["cpu-full", "cpu-full-v1"]  # no results/gpu/ yet
    table = runs.run_sweep(sweeps / "table15.yaml", jobs=2, progress=False, root=root, preset="gpu", seeds=[0])
    assert sorted(table["status"]) == ["missing"] * 4 + ["ok"] * 2, table["error"].tolist()  # 2 rows x 3 seeds
    transfer = runs.run_sweep(sweeps / "transfer.yaml", jobs=2, progress=False, root=root, preset="gpu", seeds=[0],
                              of=["table15"])
    assert sorted(transfer["status"]) == ["missing"] * 6 + ["ok"] * 3  # 2 trunks and the random init of seed 0
    assert len(export_results("gpu", root, root)) == 2 + 3
    assert committed_presets(REFERENCE_PRESETS, root) == ["cpu-full", "gpu", "cpu-full-v1"]
    run_dir = run_notebook(root, "15_random_resized_crop", "smoke", log_output=False)
    headers = json.loads((run_dir / "metrics.json").read_text())["headers"]
    assert set(headers) == {"this build (smoke)", "reference (cpu-full)", "reference (gpu)", "reference (cpu-full-v1)"}
    assert "preset **gpu** (committed, results/gpu/; built-in scenes v3): 2 of 6 runs complete" in \
        headers["reference (gpu)"]
