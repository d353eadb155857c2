"""The benchmark's trunk rows (issue 13): the supervised loop learns, the rows run at smoke size and the
gate is computed from them, the committed calibration reads back, and the chapter runs at smoke."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest
import torch

from coarsecrop import ssl
from coarsecrop.models.probe import MONITOR, frozen_features, knn_top1
from coarsecrop.studies import benchmark as B
from coarsecrop.studies import benchmark_calibration
from coarsecrop.train.supervised import train_supervised

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [n, 3, 16, 16]: class 0 horizontal, 1 vertical stripes, random colours and phase (so the
    colour says nothing about the class; only the orientation does)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    grid = torch.arange(16)
    images = torch.zeros(n, 3, 16, 16, dtype=torch.uint8)
    for i in range(n):
        phase = int(torch.randint(0, 4, (1,), generator=gen))
        line = ((grid + phase) // 2) % 2 == 0                                 # [16]
        mask = line.view(16, 1).expand(16, 16) if labels[i] == 0 else line.view(1, 16).expand(16, 16)
        a, b = torch.randint(0, 256, (2, 3), generator=gen, dtype=torch.int64)
        images[i] = torch.where(mask, a.view(3, 1, 1), b.view(3, 1, 1)).to(torch.uint8)
    return images, labels


def test_the_supervised_loop_learns_what_only_the_labels_say():
    train_x, train_y = _stripes(160, seed=0)
    val_x, val_y = _stripes(80, seed=1)
    trunk = ssl.build_method("moco_v2", "resnet10_w16_cifar", 16, seed=0).backbone
    trunk, history = train_supervised(trunk, train_x, train_y, epochs=6, lr=0.05, batch_size=32, seed=0)
    assert [h["epoch"] for h in history] == list(range(1, 7)) and not trunk.training
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["train_top1"] > 0.85  # chance is 0.5
    # the trunk, frozen, separates held-out images: kNN on its features well above chance
    feats = [frozen_features(trunk, x, torch.device("cpu"), MONITOR) for x in (train_x, val_x)]
    assert knn_top1(feats[0], train_y, feats[1], val_y) > 0.8
    with pytest.raises(ValueError, match="as many labels as images"):
        train_supervised(trunk, train_x, train_y[:3])
    with pytest.raises(ValueError, match="uint8"):
        train_supervised(trunk, train_x.float(), train_y)


def test_the_gate_is_computed_from_the_rows():
    rows = [{"trunk": "random init", "kind": "init", "linear_top1": 0.20},
            {"trunk": "a", "kind": "ssl", "linear_top1": 0.31}, {"trunk": "b", "kind": "ssl", "linear_top1": 0.29}]
    assert B.trunk_gate(rows, "a")["passes"] and abs(B.trunk_gate(rows, "a")["gain"] - 0.11) < 1e-9
    assert not B.trunk_gate(rows, "b")["passes"]  # the reference row decides, not the best one


def test_an_ssl_row_may_not_override_what_the_benchmark_fixes(tmp_path):
    p = B.BenchmarkParams(trunk_version=2)
    with pytest.raises(ValueError, match=r"may not set \['backbone'\]"):
        B.ssl_study_params(p, tmp_path, tmp_path, {"backbone": "resnet18"})
    with pytest.raises(ValueError, match=r"unknown ssl row key\(s\) \['epoch'\]"):
        B.ssl_study_params(p, tmp_path, tmp_path, {"epoch": 3})
    byol = B.ssl_study_params(p, tmp_path, tmp_path, {"method": "byol"})
    assert byol.method_params == {} and byol.strategy == "gt" and byol.monitor == "both"
    with pytest.raises(ValueError, match="trunk_version must be None or one of"):
        B.run_benchmark(B.BenchmarkParams(num_images=20, versions=[2], trunk_version=4, out=str(tmp_path)))


def test_the_trunk_rows_run_at_smoke_size(tmp_path):
    os.environ.setdefault("MPLBACKEND", "Agg")
    p = B.BenchmarkParams(num_images=30, scene_size=96, seed=3, versions=[2], trunk_version=2, trunk_images=30,
                          image_size=16, supervised={"epochs": 1, "lr": 0.1, "batch_size": 32},
                          ssl={"MoCo-v2 tiny": {"epochs": 1, "batch_size": 16, "lr": 1.2,
                                                "method_params": {"queue_size": 64}}},
                          device="cpu", out=str(tmp_path))
    result = B.run_benchmark(p)
    trunks = result["trunks"]
    assert [r["kind"] for r in trunks["rows"]] == ["init", "init_bn", "supervised", "ssl"]
    assert trunks["scenes"] == str(tmp_path / "scenes-v2")  # the gates' set is reused
    for r in trunks["rows"]:
        assert 0 <= r["linear_top1"] <= 1 and 0 <= r["knn_top1"] <= 1
    init, _, _, ssl_row = trunks["rows"]
    assert ssl_row["steps"] >= 1 and (tmp_path / "trunks" / "moco-v2-tiny" / "train" / "backbone.pt").is_file()
    gate = trunks["gate"]
    assert gate["reference"] == "MoCo-v2 tiny" and gate["init_linear"] == init["linear_top1"]
    assert gate["passes"] == (ssl_row["linear_top1"] >= init["linear_top1"] + B.TRUNK_MARGIN)
    table = B.trunks_table(result)
    assert list(table.index) == [r["trunk"] for r in trunks["rows"]]
    assert table.loc["random init", "linear vs random init"] == "+0.0"
    assert B.plot_trunks(result).axes


def test_the_calibration_verdict_reads_the_rows(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("# commit abc; machine: test\nname,kind,linear_top1,knn_top1,steps,wall_s,config\n"
                    "random init,init,0.10,0.11,,9,{}\nx,ssl,0.15,0.12,100,60,\"{\"\"method\"\": \"\"byol\"\"}\"\n"
                    "y,ssl,0.21,0.2,200,90,\"{\"\"method\"\": \"\"moco_v2\"\"}\"\n")
    comment, rows = B.read_calibration(path)
    assert comment == "commit abc; machine: test" and len(rows) == 3
    verdict = B.calibration_verdict(rows)
    assert verdict["best"] == "y" and verdict["passes"] and verdict["tried"] == 2
    assert abs(verdict["gain"] - 0.11) < 1e-9 and abs(verdict["worst_gain"] - 0.05) < 1e-9  # y's and x's
    assert not B.calibration_verdict(rows[rows["name"] != "y"])["passes"]
    byol = B.calibration_verdict(rows, method="byol")  # one method's best, from the config's method
    assert byol["best"] == "x" and byol["tried"] == 1 and abs(byol["gain"] - 0.05) < 1e-9
    with pytest.raises(ValueError, match="at least one SSL row of mae"):
        B.calibration_verdict(rows, method="mae")
    assert B.calibration_table(rows).loc["y", "linear vs random init"] == "+11.0"
    with pytest.raises(ValueError, match="random-init row"):
        B.calibration_verdict(pd.DataFrame({"kind": ["ssl"], "linear_top1": [0.3], "name": ["x"]}))
    # the committed files (scenes v2 and v3) read and give a verdict
    assert B.calibration_verdict(B.read_calibration(version=2)[1])["tried"] >= 1
    assert B.calibration_verdict(B.read_calibration()[1])["tried"] >= 1
    assert B.calibration_verdict(B.read_calibration()[1], method="byol")["tried"] >= 1
    assert "scenes v3" in set(B.read_calibration()[1]["scenes"]).pop()


def test_calibration_rows_of_a_size_filtered_probe_are_read_apart(tmp_path):
    path = tmp_path / "c.csv"
    base, note = B.scenes_note(2, 1000, 128, 3), B.scenes_note(2, 1000, 128, 3, 16)
    assert note == base + "; probe: objects >= 16 px" and B.row_min_side(note) == 16 and B.row_min_side(base) == 0
    path.write_text("# commit abc\nname,kind,linear_top1,scenes\n"
                    f'random init,init,0.10,"{base}"\nx,ssl,0.15,"{base}"\nrandom init,init,0.30,"{note}"\n'
                    f'x,ssl,0.50,"{note}"\n')
    assert B.read_calibration(path)[1]["linear_top1"].tolist() == [0.10, 0.15]  # the benchmark's own probe
    assert B.read_calibration(path, 16)[1]["linear_top1"].tolist() == [0.30, 0.50]
    assert len(B.read_calibration(path, None)[1]) == 4


def test_the_benchmark_chapter_runs_at_smoke(book_copy):
    from coarsecrop.book import run_notebook

    os.environ.setdefault("MPLBACKEND", "Agg")
    run_dir = run_notebook(book_copy, "17_benchmark", "smoke", log_output=False)
    result = pd.read_json(run_dir / "metrics.json", typ="series")
    assert [r["kind"] for r in result["trunks"]["rows"]] == ["init", "init_bn", "supervised", "ssl"]


@pytest.mark.parametrize("config, message", [
    ("{bad json", "--config is not JSON"),
    ("[1, 2]", "--config must be a JSON object"),
    ('{"method": "byol", "epochz": 1}', "--config: unknown ssl row key.*epochz.*valid: .*batch_size"),
    ('{"seed": 1}', "--config: an ssl row may not set.*seed"),
])
def test_the_calibration_script_names_a_bad_config(tmp_path, capsys, config, message):
    """A bad --config stops the script with a usage error naming the option, before any scene is written and
    without a row in the CSV."""
    with pytest.raises(SystemExit) as stop:
        benchmark_calibration.main(["--config", config, "--out", str(tmp_path / "out"), "--csv", str(tmp_path / "c.csv")])
    assert stop.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.csv").exists()


def test_the_calibration_script_names_bad_supervised_json(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark_calibration.main(["--baselines", "--supervised", "{epochs: 1}", "--out", str(tmp_path / "o"),
                                    "--csv", str(tmp_path / "c.csv")])
    assert "--supervised is not JSON" in capsys.readouterr().err
