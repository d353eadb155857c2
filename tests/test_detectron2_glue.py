"""The detectron2 path (coarsecrop.evaluate.d2.train_net, `coarsecrop detectron2`), run against a stand-in
for detectron2's API: detectron2 is not on PyPI and never installed here, so these tests check our glue
(the export, the options merged over the shipped config, the launch, MoCo's evaluator choice, the metrics
file), not detectron2 itself. The stand-in records what it is called with; it mimics only the calls that
MoCo's detection/train_net.py makes."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import torchvision

from coarsecrop.cli import main as cli_main
from coarsecrop.evaluate import d2


class _Registry(dict):
    def register(self):
        def add(cls):
            self[cls.__name__] = cls
            return cls
        return add


def _fake_detectron2(calls: dict, results: dict) -> dict[str, types.ModuleType]:
    """Modules standing in for the parts of detectron2 that d2 imports."""
    class Cfg:
        def __init__(self):
            self.OUTPUT_DIR = "./output"
            self.MODEL = types.SimpleNamespace(WEIGHTS="", RESNETS=types.SimpleNamespace(NORM="SyncBN"))
            calls["cfg"] = self
            self.files, self.opts, self.frozen = [], [], False

        def merge_from_file(self, path):
            self.files.append(path)

        def merge_from_list(self, opts):
            self.opts += list(opts)
            values = dict(zip(opts[::2], opts[1::2]))
            self.OUTPUT_DIR = values.get("OUTPUT_DIR", self.OUTPUT_DIR)
            self.MODEL.WEIGHTS = values.get("MODEL.WEIGHTS", self.MODEL.WEIGHTS)

        def freeze(self):
            self.frozen = True

    class DefaultTrainer:
        def __init__(self, cfg):
            calls["trainer_cfg"] = cfg

        def resume_or_load(self, resume):
            calls["resume"] = resume

        def train(self):
            calls["trained"] = True
            return results

    def launch(fn, num_gpus, args=()):
        calls["num_gpus"] = num_gpus
        return fn(*args)

    class Evaluator:
        def __init__(self, name, *rest):
            self.name = name

    class COCOEvaluator(Evaluator):
        pass

    class PascalVOCDetectionEvaluator(Evaluator):
        pass

    modules = {name: types.ModuleType(name) for name in (
        "detectron2", "detectron2.config", "detectron2.engine", "detectron2.evaluation", "detectron2.checkpoint",
        "detectron2.utils", "detectron2.utils.comm", "detectron2.layers", "detectron2.modeling",
        "detectron2.modeling.roi_heads")}
    modules["detectron2.config"].get_cfg = Cfg
    engine = modules["detectron2.engine"]
    engine.DefaultTrainer, engine.launch = DefaultTrainer, launch
    engine.default_setup = lambda cfg, args: calls.setdefault("setup_args", args)
    modules["detectron2.evaluation"].COCOEvaluator = COCOEvaluator
    modules["detectron2.evaluation"].PascalVOCDetectionEvaluator = PascalVOCDetectionEvaluator
    modules["detectron2.checkpoint"].DetectionCheckpointer = object
    modules["detectron2.utils.comm"].is_main_process = lambda: True
    modules["detectron2.utils"].comm = modules["detectron2.utils.comm"]
    modules["detectron2.layers"].get_norm = lambda norm, channels: torch.nn.BatchNorm2d(channels)
    heads = modules["detectron2.modeling.roi_heads"]
    heads.ROI_HEADS_REGISTRY, heads.Res5ROIHeads = _Registry(), type("Res5ROIHeads", (), {})
    return modules


@pytest.fixture
def fake(monkeypatch):
    calls = {}
    results = {"bbox": {"AP": 50.0, "AP50": 80.0, "AP75": 55.0}, "segm": {"AP": 44.0}}
    for name, module in _fake_detectron2(calls, results).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("DETECTRON2_DATASETS", "x")  # so that the teardown removes what train_net sets
    monkeypatch.delenv("DETECTRON2_DATASETS")
    return calls


@pytest.fixture
def r18_state(tmp_path) -> Path:
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_train_net_exports_merges_launches_and_writes_metrics(fake, r18_state, tmp_path, monkeypatch):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    out = tmp_path / "run"
    path = d2.train_net(r18_state, "voc0712_faster_rcnn_R_50_C4_24k", out, datasets=datasets, num_gpus=2,
                        ims_per_batch=8, opts=["SOLVER.MAX_ITER", "100"], backbone="resnet18")
    weights = out / "backbone.pkl"
    model = pickle.loads(weights.read_bytes())["model"]
    assert "stem.conv1.weight" in model and "res5.1.conv2.norm.running_var" in model
    cfg = fake["cfg"]
    assert cfg.files == [str(d2.config_path("voc0712_faster_rcnn_R_50_C4_24k"))] and cfg.frozen
    assert cfg.opts == ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out), "SOLVER.IMS_PER_BATCH", "8",
                        "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", "100"]  # the user's options last
    assert fake["num_gpus"] == 2 and fake["trained"] and fake["resume"] is False
    assert fake["setup_args"].config_file.endswith("voc0712_faster_rcnn_R_50_C4_24k.yaml")
    assert "Res5ROIHeadsExtraNorm" in sys.modules["detectron2.modeling.roi_heads"].ROI_HEADS_REGISTRY
    import os
    assert os.environ["DETECTRON2_DATASETS"] == str(datasets.resolve())
    record = json.loads(path.read_text())
    assert record["headline"] == {"AP_bbox": 50.0, "AP50_bbox": 80.0, "AP75_bbox": 55.0, "AP_seg": 44.0}
    assert record["engine"] == "detectron2" and record["config"] == "voc0712_faster_rcnn_R_50_C4_24k"


def test_evaluator_follows_the_data_set_name_as_moco(fake):
    trainer = d2._trainer_class()
    cfg = types.SimpleNamespace(OUTPUT_DIR="/tmp/x")
    assert type(trainer.build_evaluator(cfg, "coco_2017_val")).__name__ == "COCOEvaluator"
    assert type(trainer.build_evaluator(cfg, "voc_2007_test")).__name__ == "PascalVOCDetectionEvaluator"
    with pytest.raises(ValueError, match="no evaluator for data set 'cityscapes'"):
        trainer.build_evaluator(cfg, "cityscapes")


def test_cli_runs_it_and_bad_input_is_one_line(fake, r18_state, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["detectron2", str(r18_state), "--backbone", "resnet18", "--config", "coco_mask_rcnn_R_50_FPN_1x",
                     "--out", str(out), "--opt", "SOLVER.MAX_ITER", "5"]) == 0
    assert fake["cfg"].opts[-2:] == ["SOLVER.MAX_ITER", "5"] and (out / "metrics.json").is_file()
    assert cli_main(["detectron2", str(tmp_path / "nope.pt"), "--config", "coco_mask_rcnn_R_50_FPN_1x",
                     "--out", str(out)]) == 2
    assert "nope.pt: checkpoint file does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        d2.run_options("w.pkl", "out", ["SOLVER.MAX_ITER"])


def test_without_detectron2_the_error_says_how_to_get_it(r18_state, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import detectron2 -> ImportError
    assert cli_main(["detectron2", str(r18_state), "--config", "voc0712_faster_rcnn_R_50_C4_24k",
                     "--out", str(tmp_path / "o")]) == 2
    assert "detectron2 is not installed (it is not on PyPI)" in capsys.readouterr().err
