"""The detectron2 path (coarsecrop.evaluate.d2.train_net, `coarsecrop detectron2`) against a stand-in for
detectron2's API, so that CI (no detectron2: it is not on PyPI) checks our glue: the export, the options
merged over the shipped config, the data registered in every launched process, MoCo's evaluator choice,
where the results come from, and the metrics file. tests/test_detectron2_real.py runs the same path
against a real detectron2 where one is installed.

The stand-in behaves as the real API does where our code depends on it: ``DefaultTrainer.train()`` returns
None unless TEST.EXPECTED_RESULTS is set (the results are in ``_last_eval_results``, which the eval hook
sets only when it runs); ``launch`` with K > 1 processes runs each in a fresh registry (spawned processes
start empty: a data set registered in the parent alone is not there); building a trainer looks its data
sets up in the registry and fails on a name that is not registered."""

from __future__ import annotations

import ast
import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import torchvision

from coarsecrop.cli import main as cli_main
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.data.synthetic_voc import write_voc
from coarsecrop.evaluate import d2, d2_data


class _Registry(dict):
    def register(self):
        def add(cls):
            self[cls.__name__] = cls
            return cls
        return add


class _Node(types.SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


def _fake_detectron2(calls: dict, results: dict | None, eval_hook: bool = True) -> dict[str, types.ModuleType]:
    """Modules standing in for the parts of detectron2 that d2 and d2_data import."""
    catalog: dict[str, object] = {}  # this "process"'s DatasetCatalog
    metadata: dict[str, types.SimpleNamespace] = {}

    class Cfg:
        def __init__(self):
            self.OUTPUT_DIR = "./output"
            self.SEED, self.CUDNN_BENCHMARK = -1, False
            self.MODEL = _Node(WEIGHTS="", DEVICE="cuda", MASK_ON=False, RESNETS=_Node(NORM="SyncBN"))
            self.SOLVER = _Node(MAX_ITER=90000, IMS_PER_BATCH=16)
            self.DATASETS = _Node(TRAIN=("coco_2017_train",), TEST=("coco_2017_val",))
            self.TEST = _Node(EXPECTED_RESULTS=[])
            calls.setdefault("cfgs", []).append(self)
            self.files, self.opts, self.frozen = [], [], False

        def merge_from_file(self, path):
            self.files.append(path)
            for key in ("DATASETS.TRAIN", "DATASETS.TEST", "SOLVER.MAX_ITER", "MODEL.MASK_ON"):  # what tests read
                value = d2._config_value(Path(path).stem, key)
                if value is not None:
                    self.merge_from_list([key, str(value)])
            self.opts = []

        def merge_from_list(self, opts):
            self.opts += list(opts)
            for key, value in zip(opts[::2], opts[1::2]):
                node, *path = [self, *key.split(".")[:-1]]
                for part in path:
                    if not hasattr(node, part):
                        setattr(node, part, _Node())
                    node = getattr(node, part)
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    pass
                setattr(node, key.split(".")[-1], value)

        def freeze(self):
            self.frozen = True

        def get(self, key, default=None):
            return getattr(self, key, default)

        def dump(self):
            return "fake: config\n"

    def _check_registered(cfg):
        for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
            if not name.startswith("coarsecrop_"):
                continue  # detectron2's own names are registered by detectron2 itself
            if name not in catalog:
                raise KeyError(f"Dataset '{name}' is not registered!")
            calls.setdefault("loaded", []).append((name, catalog[name]()))

    class DefaultTrainer:
        def __init__(self, cfg):
            self.cfg, self.model = cfg, "model"
            _check_registered(cfg)
            calls["trainer_cfg"] = cfg

        def resume_or_load(self, resume):
            calls["resume"] = resume

        def train(self):
            calls["trained"] = calls.get("trained", 0) + 1
            if eval_hook:  # the EvalHook's after_train: test_and_save_results
                self._last_eval_results = type(self).test(self.cfg, self.model)
            if len(self.cfg.TEST.EXPECTED_RESULTS):
                return self._last_eval_results
            return None  # the real DefaultTrainer.train() without EXPECTED_RESULTS

        @classmethod
        def test(cls, cfg, model):
            calls["tested"] = calls.get("tested", 0) + 1
            evaluators = [cls.build_evaluator(cfg, name) for name in cfg.DATASETS.TEST]
            calls["evaluators"] = [type(e).__name__ for e in evaluators]
            return dict(results) if evaluators and results is not None else {}

        @classmethod
        def build_model(cls, cfg):
            _check_registered(cfg)
            return "model"

    def launch(fn, num_gpus, dist_url=None, args=()):
        calls["num_gpus"], calls["dist_url"] = num_gpus, dist_url
        assert num_gpus == 1 or dist_url is not None, "detectron2's launch needs a dist_url for K > 1"
        for rank in range(num_gpus):
            if num_gpus > 1:  # a spawned process: detectron2 imported anew, nothing registered
                catalog.clear()
                metadata.clear()
            calls["rank"] = rank
            fn(*args)

    class Evaluator:
        def __init__(self, name, *rest, **kw):
            self.name, self.kw = name, kw

    class COCOEvaluator(Evaluator):
        pass

    class PascalVOCDetectionEvaluator(Evaluator):
        pass

    class Checkpointer:
        def __init__(self, model, save_dir):
            calls["checkpointer_dir"] = save_dir

        def resume_or_load(self, weights, resume):
            calls["eval_weights"], calls["resume"] = weights, resume

    class DatasetCatalog:
        @staticmethod
        def register(name, fn):
            assert name not in catalog, f"Dataset '{name}' is already registered!"
            catalog[name] = fn

        @staticmethod
        def list():
            return list(catalog)

    class MetadataCatalog:
        @staticmethod
        def get(name):
            if name not in metadata:
                meta = types.SimpleNamespace()
                meta.set = lambda **kw: meta.__dict__.update(kw)
                metadata[name] = meta
            return metadata[name]

    def load_coco_json(json_file, image_root, name):
        data = json.loads(Path(json_file).read_text())
        return [{"file_name": str(Path(image_root) / img["file_name"]), "image_id": img["id"]}
                for img in data["images"]]

    names = ("detectron2", "detectron2.config", "detectron2.engine", "detectron2.evaluation",
             "detectron2.checkpoint", "detectron2.utils", "detectron2.utils.comm", "detectron2.utils.env",
             "detectron2.utils.logger", "detectron2.utils.events", "detectron2.layers", "detectron2.modeling",
             "detectron2.modeling.roi_heads", "detectron2.data", "detectron2.data.datasets",
             "detectron2.structures")
    modules = {name: types.ModuleType(name) for name in names}
    modules["detectron2"].__version__ = "stand-in"
    modules["detectron2.config"].get_cfg = Cfg
    engine = modules["detectron2.engine"]
    engine.DefaultTrainer, engine.launch = DefaultTrainer, launch
    modules["detectron2.evaluation"].COCOEvaluator = COCOEvaluator
    modules["detectron2.evaluation"].PascalVOCDetectionEvaluator = PascalVOCDetectionEvaluator
    modules["detectron2.checkpoint"].DetectionCheckpointer = Checkpointer
    comm = modules["detectron2.utils.comm"]
    comm.is_main_process = lambda: calls.get("rank", 0) == 0
    comm.get_rank = lambda: calls.get("rank", 0)
    comm.get_world_size = lambda: calls.get("num_gpus", 1)
    modules["detectron2.utils"].comm = comm
    modules["detectron2.utils.env"].seed_all_rng = lambda seed: calls.setdefault("seeds", []).append(seed)
    modules["detectron2.utils.logger"].setup_logger = lambda *a, **k: types.SimpleNamespace(info=lambda m: None)
    events = modules["detectron2.utils.events"]
    events.CommonMetricPrinter = events.JSONWriter = events.TensorboardXWriter = Evaluator
    modules["detectron2.layers"].get_norm = lambda norm, channels: torch.nn.BatchNorm2d(channels)
    heads = modules["detectron2.modeling.roi_heads"]
    heads.ROI_HEADS_REGISTRY, heads.Res5ROIHeads = _Registry(), type("Res5ROIHeads", (), {})
    modules["detectron2.data"].DatasetCatalog = DatasetCatalog
    modules["detectron2.data"].MetadataCatalog = MetadataCatalog
    modules["detectron2.data.datasets"].load_coco_json = load_coco_json
    modules["detectron2.structures"].BoxMode = types.SimpleNamespace(XYXY_ABS=0)
    calls["catalog"], calls["metadata"] = catalog, metadata
    return modules


RESULTS = {"bbox": {"AP": 50.0, "AP50": 80.0, "AP75": 55.0}, "segm": {"AP": 44.0}}


def _install(monkeypatch, results=RESULTS, eval_hook=True) -> dict:
    calls = {}
    for name, module in _fake_detectron2(calls, results, eval_hook).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("DETECTRON2_DATASETS", "x")  # so that the teardown removes what train_net sets
    monkeypatch.delenv("DETECTRON2_DATASETS")
    return calls


@pytest.fixture
def fake(monkeypatch):
    return _install(monkeypatch)


@pytest.fixture
def r50_state(tmp_path) -> Path:
    path = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("d2scenes") / "scenes"
    write_scenes(out, num_images=12, seed=3, size=64, progress=False)
    return out


def _values(opts: list[str]) -> dict[str, str]:
    return dict(zip(opts[::2], opts[1::2]))


def test_train_net_exports_merges_launches_and_writes_metrics(fake, r50_state, tmp_path):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    out = tmp_path / "run"
    path = d2.train_net(r50_state, "voc0712_faster_rcnn_R_50_C4_24k", out, datasets=datasets, num_gpus=1,
                        ims_per_batch=8, opts=["SOLVER.MAX_ITER", "100"], backbone="resnet50")
    weights = out / "backbone.pkl"
    model = pickle.loads(weights.read_bytes())["model"]
    assert "stem.conv1.weight" in model and "res5.2.conv3.norm.running_var" in model
    cfg = fake["trainer_cfg"]
    assert cfg.files == [str(d2.config_path("voc0712_faster_rcnn_R_50_C4_24k"))] and cfg.frozen
    assert cfg.opts[:8] == ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out / "detectron2"),
                            "SOLVER.IMS_PER_BATCH", "8", "SOLVER.BASE_LR", "0.01"]
    assert cfg.opts[-2:] == ["SOLVER.MAX_ITER", "100"]  # the user's options last
    values = _values(cfg.opts)
    assert values["MODEL.RESNETS.DEPTH"] == "50"  # read from the weights
    assert values["TEST.PRECISE_BN.NUM_ITER"] == "100"  # at most MAX_ITER batches
    if not torch.cuda.is_available():
        assert values["MODEL.DEVICE"] == "cpu"
    assert fake["num_gpus"] == 1 and fake["trained"] == 1 and fake["resume"] is False
    assert "Res5ROIHeadsExtraNorm" in sys.modules["detectron2.modeling.roi_heads"].ROI_HEADS_REGISTRY
    import os
    assert os.environ["DETECTRON2_DATASETS"] == str(datasets.resolve())
    record = json.loads(path.read_text())
    # train() returned None (as the real one does): the numbers come from the eval hook's last results
    assert record["headline"] == {"AP_bbox": 50.0, "AP50_bbox": 80.0, "AP75_bbox": 55.0, "AP_seg": 44.0}
    assert fake["tested"] == 1 and fake["evaluators"] == ["PascalVOCDetectionEvaluator"]
    assert record["engine"] == "detectron2" and record["config"] == "voc0712_faster_rcnn_R_50_C4_24k"
    assert record["max_iter"] == 100 and record["eval_only"] is False and "note" not in record


def test_without_an_evaluation_during_training_the_final_model_is_tested(monkeypatch, r50_state, tmp_path):
    calls = _install(monkeypatch, eval_hook=False)
    path = d2.train_net(r50_state, "coco_mask_rcnn_R_50_FPN_1x", tmp_path / "run", backbone="resnet50")
    assert calls["trained"] == 1 and calls["tested"] == 1
    assert json.loads(path.read_text())["headline"]["AP_seg"] == 44.0


def test_eval_only_and_resume_write_the_same_file(fake, r50_state, tmp_path):
    out = tmp_path / "run"
    d2.train_net(r50_state, "coco_mask_rcnn_R_50_FPN_1x", out, backbone="resnet50", eval_only=True, resume=True)
    record = json.loads((out / "metrics.json").read_text())
    assert "trained" not in fake and fake["tested"] == 1 and fake["resume"] is True
    assert fake["eval_weights"] == str(out / "backbone.pkl") and fake["checkpointer_dir"] == str(out / "detectron2")
    assert record["eval_only"] is True and record["headline"]["AP_bbox"] == 50.0 and record["seconds_per_iter"] is None


def test_built_in_scenes_are_registered_in_every_launched_process(fake, r50_state, scenes, tmp_path):
    out = tmp_path / "run"
    d2.train_net(r50_state, "coco_mask_rcnn_R_50_FPN_1x", out, backbone="resnet50", scenes=scenes,
                 opts=["MODEL.DEVICE", "cpu"], num_gpus=2)
    cfg = fake["trainer_cfg"]
    train_name, val_name = cfg.DATASETS.TRAIN[0], cfg.DATASETS.TEST[0]
    assert train_name.startswith("coarsecrop_") and val_name.startswith("coarsecrop_") and train_name != val_name
    # two "processes", each with a fresh registry: each registered and loaded both sets itself
    assert fake["trained"] == 2 and [name for name, _ in fake["loaded"]].count(train_name) == 2
    annotations = json.loads((scenes / "annotations.json").read_text())
    by_split = {s: {img["id"] for img in annotations["images"] if img["split"] == s} for s in ("train", "val")}
    loaded = dict(fake["loaded"])
    assert {d["image_id"] for d in loaded[train_name]} == by_split["train"]
    assert {d["image_id"] for d in loaded[val_name]} == by_split["val"]
    assert fake["metadata"][val_name].evaluator_type == "coco" and fake["evaluators"] == ["COCOEvaluator"]
    values = _values(cfg.opts)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(annotations["categories"])
    assert values["INPUT.MASK_FORMAT"] == "bitmask"  # the scenes' masks are RLE
    assert cfg.INPUT.MIN_SIZE_TRAIN == (64,) and cfg.INPUT.MIN_SIZE_TEST == 64 and cfg.INPUT.MAX_SIZE_TEST == 64
    record = json.loads((out / "metrics.json").read_text())  # written once, by rank 0
    assert record["data"]["mask_format"] == "bitmask" and record["data"]["names"] == [train_name, val_name]
    assert record["world_size"] == 2


def test_scene_options_follow_the_data_unless_the_user_sets_them(scenes):
    data = d2_data.describe(scenes)
    opts = d2_data.options(data, ["INPUT.MIN_SIZE_TEST", "200"], mask_on=True)
    values = _values(opts)
    assert "INPUT.MIN_SIZE_TEST" not in values and values["INPUT.MIN_SIZE_TRAIN"] == "(64,)"
    no_test = d2_data.describe(scenes, test=False)
    assert no_test.val_name is None and _values(d2_data.options(no_test, [], True))["DATASETS.TEST"] == "()"
    with pytest.raises(ValueError, match="NUM_CLASSES 3 disagrees with the data: .* has 12 classes"):
        d2_data.options(data, ["MODEL.ROI_HEADS.NUM_CLASSES", "3"], mask_on=True)


def test_masks_follow_the_annotations(tmp_path, scenes):
    annotations = json.loads((scenes / "annotations.json").read_text())
    polygons = dict(annotations, annotations=[dict(a, segmentation=[[0, 0, 10, 0, 10, 10]])
                                              for a in annotations["annotations"]])
    boxes_only = dict(annotations, annotations=[{k: v for k, v in a.items() if k != "segmentation"}
                                                for a in annotations["annotations"]])
    crowd_rle = dict(polygons, annotations=polygons["annotations"] + [
        dict(annotations["annotations"][0], id=10 ** 6, iscrowd=1)])  # COCO 2017: only crowds are RLE
    mixed = dict(annotations, annotations=boxes_only["annotations"][:3] + annotations["annotations"][3:])
    expected = {"polygons": "polygon", "boxes_only": None, "crowd_rle": "polygon"}
    for name, data in {"polygons": polygons, "boxes_only": boxes_only, "crowd_rle": crowd_rle}.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        described = d2_data.describe(path, images=scenes)
        assert described.mask_format == expected[name], name
    values = _values(d2_data.options(d2_data.describe(tmp_path / "boxes_only.json", images=scenes), [], True))
    assert values["MODEL.MASK_ON"] == "False" and "INPUT.MASK_FORMAT" not in values
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    with pytest.raises(ValueError, match="3 of .* instances have no segmentation"):
        d2_data.describe(tmp_path / "mixed.json", images=scenes)


def test_bad_data_is_a_one_line_error_before_anything_trains(fake, r50_state, scenes, tmp_path, capsys):
    args = ["detectron2", str(r50_state), "--backbone", "resnet50", "--config", "coco_mask_rcnn_R_50_FPN_1x",
            "--out", str(tmp_path / "o"), "--scenes", str(scenes)]
    assert cli_main(args + ["--val-split", "test"]) == 2
    assert "no images in split 'test'; available splits: train, val" in capsys.readouterr().err
    assert cli_main(args + ["--opt", "MODEL.ROI_HEADS.NUM_CLASSES", "80"]) == 2
    assert "disagrees with the data" in capsys.readouterr().err
    empty = json.loads((scenes / "annotations.json").read_text())
    (tmp_path / "empty.json").write_text(json.dumps(dict(empty, annotations=[])))
    assert cli_main(args[:-1] + [str(tmp_path / "empty.json"), "--images", str(scenes)]) == 2
    assert "no boxes: nothing to train a detector on" in capsys.readouterr().err
    assert cli_main(args + ["--datasets", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(args[:-1] + [str(tmp_path / "empty")]) == 2
    assert "not a data set with boxes (no annotations.json, no VOC Annotations/)" in capsys.readouterr().err
    if torch.cuda.device_count() < 2:
        assert cli_main(args + ["--num-gpus", "2", "--opt", "MODEL.DEVICE", "cuda"]) == 2
        assert "--num-gpus 2 needs 2 CUDA devices" in capsys.readouterr().err
    assert "trained" not in fake and "num_gpus" not in fake  # nothing was launched


def test_a_voc_root_gets_its_classes_and_the_voc_evaluator(fake, r50_state, scenes, tmp_path):
    voc = write_voc(scenes, tmp_path / "VOCdevkit" / "VOC2007")
    data = d2_data.describe(voc)
    assert data.format == "voc" and data.evaluator == "pascal_voc" and data.mask_format is None
    names = json.loads((scenes / "annotations.json").read_text())["categories"]
    assert set(data.classes) <= {c["name"] for c in names} and list(data.classes) == sorted(data.classes)
    dicts = d2_data.voc_dicts(data.val, data.classes)
    from coarsecrop.data.scenes import open_scenes

    val = open_scenes(voc, split="val")
    assert [d["image_id"] for d in dicts] == [s.id for s in val.scenes]
    assert [a["bbox"] for a in dicts[0]["annotations"]] == val.scenes[0].boxes.tolist()
    d2.train_net(r50_state, "voc0712_faster_rcnn_R_50_C4_24k", tmp_path / "run", backbone="resnet50", scenes=voc)
    meta = fake["metadata"][fake["trainer_cfg"].DATASETS.TEST[0]]
    assert meta.evaluator_type == "pascal_voc" and meta.year == 2007 and meta.split == "val"
    assert fake["evaluators"] == ["PascalVOCDetectionEvaluator"]


def test_a_run_without_a_test_set_says_so(monkeypatch, r50_state, scenes, tmp_path, capsys):
    _install(monkeypatch)
    out = tmp_path / "run"
    assert cli_main(["detectron2", str(r50_state), "--backbone", "resnet50", "--config", "coco_mask_rcnn_R_50_FPN_1x",
                     "--out", str(out), "--scenes", str(scenes), "--no-test"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["headline"] == {} and "no test set" in record["note"]
    assert "no test set" in capsys.readouterr().err


def test_the_trunk_must_fit_detectron2s_resnet(fake, tmp_path):
    r18 = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), r18)
    d2.train_net(r18, "coco_mask_rcnn_R_50_FPN_1x", tmp_path / "fpn", backbone="resnet18")
    values = _values(fake["trainer_cfg"].opts)
    assert values["MODEL.RESNETS.DEPTH"] == "18" and values["MODEL.RESNETS.RES2_OUT_CHANNELS"] == "64"
    with pytest.raises(ValueError, match="fits only the FPN configs"):
        d2.train_net(r18, "coco_mask_rcnn_R_50_C4_1x", tmp_path / "c4", backbone="resnet18")
    with pytest.raises(ValueError, match="disagrees with the weights"):
        d2.train_net(r18, "coco_mask_rcnn_R_50_FPN_1x", tmp_path / "x", backbone="resnet18",
                     opts=["MODEL.RESNETS.DEPTH", "50"])
    narrow = tmp_path / "narrow.pt"
    from coarsecrop.evaluate.checkpoints import make_trunk

    torch.save(make_trunk("resnet10_w16_cifar", None).state_dict(), narrow)
    with pytest.raises(ValueError, match="narrow and CIFAR-stem trunks cannot be finetuned there"):
        d2.train_net(narrow, "coco_mask_rcnn_R_50_FPN_1x", tmp_path / "n", backbone="resnet10_w16_cifar")


def test_evaluator_follows_the_metadata_or_the_data_set_name_as_moco(fake):
    trainer = d2._trainer_class()
    cfg = types.SimpleNamespace(OUTPUT_DIR="/tmp/x", MODEL=types.SimpleNamespace(MASK_ON=True))
    coco = trainer.build_evaluator(cfg, "coco_2017_val")
    assert type(coco).__name__ == "COCOEvaluator" and coco.kw["tasks"] == ("bbox", "segm")  # even if none predicted
    assert type(trainer.build_evaluator(cfg, "voc_2007_test")).__name__ == "PascalVOCDetectionEvaluator"
    sys.modules["detectron2.data"].MetadataCatalog.get("mine").evaluator_type = "pascal_voc"
    assert type(trainer.build_evaluator(cfg, "mine")).__name__ == "PascalVOCDetectionEvaluator"
    with pytest.raises(ValueError, match="no evaluator for data set 'cityscapes'"):
        trainer.build_evaluator(cfg, "cityscapes")


def test_no_detections_is_an_ap_of_zero_not_a_missing_number(tmp_path):
    nan = float("nan")
    results = {"bbox": {m: nan for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
               "segm": {"AP": 3.0, "AP50": 9.0, "AP75": 1.0, "APl": nan}}
    record = json.loads(d2.write_metrics(tmp_path, "c", [], results, {"test_sets": ["v"]}).read_text())
    assert record["headline"]["AP_bbox"] == 0.0 and record["headline"]["AP50_bbox"] == 0.0
    assert record["headline"]["APs_bbox"] is None and record["headline"]["APl_seg"] is None  # no such objects
    assert record["headline"]["AP_seg"] == 3.0 and record["results"]["bbox"]["AP"] is None
    assert "no detections above" in record["note"] and "bbox" in record["note"] and "segm" not in record["note"]


def test_headline_of_one_or_several_test_sets():
    assert d2.headline(None) == {} and d2.headline({}) == {}
    assert d2.headline({"voc_2007_test": {"bbox": {"AP50": 70.0}}, "b": {"bbox": {"AP50": 1.0}}}) == {"AP50_bbox": 70.0}


def test_cli_runs_it_and_bad_input_is_one_line(fake, r50_state, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["detectron2", str(r50_state), "--backbone", "resnet50", "--config", "coco_mask_rcnn_R_50_FPN_1x",
                     "--out", str(out), "--opt", "SOLVER.MAX_ITER", "5"]) == 0
    assert fake["trainer_cfg"].opts[-2:] == ["SOLVER.MAX_ITER", "5"] and (out / "metrics.json").is_file()
    assert "AP_bbox 50.00" in capsys.readouterr().out
    assert cli_main(["detectron2", str(tmp_path / "nope.pt"), "--config", "coco_mask_rcnn_R_50_FPN_1x",
                     "--out", str(out)]) == 2
    assert "nope.pt: checkpoint file does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        d2.run_options("w.pkl", "out", ["SOLVER.MAX_ITER"])


def test_without_detectron2_the_error_says_how_to_get_it(r50_state, scenes, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import detectron2 -> ImportError
    assert not d2.available()
    assert cli_main(["detectron2", str(r50_state), "--config", "voc0712_faster_rcnn_R_50_C4_24k",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "detectron2 is not installed (it is not on PyPI)" in err and "--no-build-isolation" in err
    assert len(err.strip().splitlines()) == 1
    # `evaluate --task detectron2` said it as a traceback
    assert cli_main(["evaluate", "--task", "detectron2", "--checkpoint", str(r50_state), "--scenes", str(scenes),
                     "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coarsecrop evaluate: error: detectron2 is not installed") and len(err.splitlines()) == 1


def test_the_transfer_task_runs_coarsecrop_detectron2_as_a_subprocess(scenes, monkeypatch):
    """The runner's ``detectron2`` task: the trunk exported, the CLI launched with the data, seed, schedule,
    device and the user's options; its headline returned; a failed run raises with the end of its log."""
    import subprocess

    from coarsecrop.data.scenes import open_scenes
    from coarsecrop.evaluate.checkpoints import make_trunk

    monkeypatch.setattr(d2, "_require_detectron2", lambda: None)
    data = d2.prepare_data(open_scenes(scenes, split="train"), open_scenes(scenes, split="val"))
    seen = {}

    def fake_run(cmd, stdout, stderr, **_):
        seen["cmd"] = cmd
        args = cmd[cmd.index("detectron2") + 1:]
        weights, out = Path(args[0]), Path(args[args.index("--out") + 1])
        seen["depth"] = d2.trunk_layout(pickle.loads(weights.read_bytes())["model"])
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"headline": {"AP_bbox": 12.5, "APl_bbox": None},
                                                      "seconds_per_iter": 0.5}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    trunk = make_trunk("resnet50", None, seed=0)
    metrics = d2.run_finetune(trunk, data, seed=3, device=torch.device("cpu"), iterations=20, ims_per_batch=4,
                              opts=["MODEL.RPN.POST_NMS_TOPK_TEST", 50])
    assert metrics == {"AP_bbox": 12.5, "seconds_per_iter": 0.5} and seen["depth"] == (50, "bottleneck")
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "coarsecrop", "detectron2"]
    pairs = [cmd[i + 1:i + 3] for i, a in enumerate(cmd) if a == "--opt"]
    assert ["SEED", "3"] in pairs and ["SOLVER.MAX_ITER", "20"] in pairs and ["MODEL.DEVICE", "cpu"] in pairs
    assert pairs[-1] == ["MODEL.RPN.POST_NMS_TOPK_TEST", "50"]
    assert cmd[cmd.index("--train-split") + 1] == "train" and cmd[cmd.index("--val-split") + 1] == "val"
    assert cmd[cmd.index("--scenes") + 1] == str(scenes / "annotations.json")

    def failing(cmd, stdout, stderr, **_):
        stdout.write("loading\nKeyError: boom\n")
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(RuntimeError, match="failed with exit code 1:\nloading\nKeyError: boom"):
        d2.run_finetune(trunk, data, seed=0, device=torch.device("cpu"), iterations=2)
    with pytest.raises(ValueError, match="narrow and CIFAR-stem"):
        d2.run_finetune(make_trunk("resnet10_w16_cifar", None), data, seed=0, device=torch.device("cpu"))


def test_the_transfer_task_without_detectron2_stops_before_any_work(tmp_path, monkeypatch):
    from coarsecrop.studies.transfer import TransferParams, run_transfer

    monkeypatch.setitem(sys.modules, "detectron2", None)
    out = tmp_path / "run"
    with pytest.raises(ImportError, match="detectron2 is not installed"):
        run_transfer(TransferParams(tasks=["detectron2"], backbone="resnet50", out=str(out)))
    assert not out.exists()  # no scenes written, nothing trained
