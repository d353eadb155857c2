"""detectron2 glue, optional: the shipped config files, MoCo's extra-norm res5 head, and the paper-scale
detection / instance segmentation runs (MoCo's detection/train_net.py, driven from a checkpoint).

detectron2 is not on PyPI, so it is imported only inside these functions (install: README, "detectron2").
From the command line, on detectron2's own data set names (real VOC07+12 and COCO 2017 below ``--datasets``,
i.e. $DETECTRON2_DATASETS: VOC2007/, VOC2012/, coco/; the paper's protocol, sizes and schedules):

    coarsecrop detectron2 runs/02_pretrain/<id>/train/backbone.pt --config voc0712_faster_rcnn_R_50_C4_24k \
        --datasets /data --num-gpus 8 --out runs/d2/voc-ours [--opt SOLVER.MAX_ITER 100 ...]

or on any COCO json, VOC root or built-in scenes folder (``--scenes``; its classes, masks, evaluator and
sizes: ``coarsecrop.evaluate.d2_data``):

    coarsecrop detectron2 CKPT --config coco_mask_rcnn_R_50_FPN_1x --scenes data/scenes --out runs/d2-scenes

The flow: export the trunk (``coarsecrop export --format detectron2``: OUT/backbone.pkl) and read its
ResNet depth from it; the options over the shipped config (the weights, OUT/detectron2/ as detectron2's
OUTPUT_DIR, the data's options, the batch with the lr scaled, CPU where there is no CUDA, the user's
``--opt`` last); then detectron2's ``launch`` runs ``_main`` once per GPU (spawned processes for K > 1:
each registers the data and the extra-norm head itself). ``_main`` trains and tests as MoCo's Trainer,
takes the results of the trainer's last evaluation (or tests the final model when there was none) and
writes OUT/metrics.json atomically on the main process: the results, the headline (AP, AP50, AP75 per task,
in %), the data, the options, wall time and seconds per iteration. ``--resume`` goes on from OUT's last
detectron2 checkpoint; ``--eval-only`` tests the weights (or, with ``--resume``, OUT's last checkpoint);
both write the same file. In Python:

    from coarsecrop.evaluate import d2
    d2.train_net("backbone.pt", "coco_mask_rcnn_R_50_FPN_1x", "runs/d2", scenes="data/scenes")
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from coarsecrop.evaluate import d2_data
from coarsecrop.evaluate.export import export_checkpoint, to_detectron2
from coarsecrop.io import write_json
from coarsecrop.train.children import run_logged

CONFIG_DIR = Path(__file__).parent / "configs"
INSTALL_HINT = ("detectron2 is not installed (it is not on PyPI): build it from its repository against the "
                "installed torch, `pip install --no-build-isolation 'git+https://github.com/facebookresearch/"
                "detectron2.git'` (README, section detectron2); the toy-scale runs use torchvision "
                "(coarsecrop.evaluate.detection)")
# detectron2's ResNet depths by (block, blocks per stage) of an exported trunk
DEPTHS = {("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
          ("bottleneck", (3, 8, 36, 3)): 152, ("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34}


def config_names() -> list[str]:
    """Shipped experiment configs (the Base-* files are only bases)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("Base-"))


def config_path(name: str) -> Path:
    """Path of a shipped config file by name (without .yaml)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown detectron2 config {name!r}; shipped: {', '.join(config_names())}")
    return path


def available() -> bool:
    """Whether ``import detectron2`` works here."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def _require_detectron2():
    try:
        import detectron2  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err


def register_extra_norm_head() -> None:
    """Register ``Res5ROIHeadsExtraNorm`` (the MoCo paper's extra BN after res5) with detectron2."""
    _require_detectron2()
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY:
        return

    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """Res5ROIHeads with a norm layer after res5, as in MoCo's detection code."""

        def __init__(self, cfg, input_shape):
            super().__init__(cfg, input_shape)
            self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))


def load_config(name: str, opts: list[str] | None = None):
    """A detectron2 CfgNode from a shipped config, with ``opts`` (KEY VALUE ...) merged on top."""
    _require_detectron2()
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(name)))
    cfg.merge_from_list(list(opts or []))
    return cfg


def _config_value(name: str, key: str):
    """A key of a shipped config as written there or in its _BASE_ (None when neither sets it); read
    without detectron2, so options can be checked before anything is imported."""
    import yaml

    path = config_path(name)
    node = yaml.safe_load(path.read_text())
    value = node
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and "_BASE_" in node:
        return _config_value(Path(node["_BASE_"]).stem, key)
    return value


def trunk_layout(model: dict) -> tuple[int, str]:
    """(depth, block) of a detectron2 ResNet state (an exported trunk's "model"); ValueError for a trunk
    detectron2's ResNet cannot hold (a CIFAR stem, a narrow width, a depth it does not build)."""
    stem = model.get("stem.conv1.weight")
    if stem is None:
        raise ValueError("the weights hold no stem.conv1: not a ResNet trunk exported for detectron2")
    if tuple(stem.shape) != (64, 3, 7, 7):
        raise ValueError(f"the trunk's stem conv is {tuple(stem.shape)}; detectron2's ResNet has a 7x7 stem of 64 "
                         "channels (resnet18/34/50/101/152): narrow and CIFAR-stem trunks cannot be finetuned there")
    block = "bottleneck" if "res2.0.conv3.weight" in model else "basic"
    blocks = tuple(len({k.split(".")[1] for k in model if k.startswith(f"res{i}.")}) for i in range(2, 6))
    depth = DEPTHS.get((block, blocks))
    if depth is None:
        raise ValueError(f"a {block} ResNet with {blocks} blocks per stage is not a depth detectron2 builds "
                         "(18, 34, 50, 101, 152)")
    return depth, block


def _trunk_options(weights: Path, config: str, user: list[str]) -> list[str]:
    """MODEL.RESNETS.DEPTH (and the basic block's res2 width) from the exported weights; a depth the user
    sets that disagrees, or a basic-block trunk for a C4 config (its res5 head is a bottleneck), fails."""
    with open(weights, "rb") as f:
        depth, block = trunk_layout(pickle.load(f)["model"])
    given = d2_data.option_pairs(user)
    if "MODEL.RESNETS.DEPTH" in given and int(given["MODEL.RESNETS.DEPTH"]) != depth:
        raise ValueError(f"--opt MODEL.RESNETS.DEPTH {given['MODEL.RESNETS.DEPTH']} disagrees with the weights "
                         f"({weights}: a ResNet-{depth}); leave the option out (it is read from the weights)")
    if block == "basic" and _config_value(config, "MODEL.BACKBONE.NAME") != "build_resnet_fpn_backbone":
        raise ValueError(f"{config}: the C4 configs' res5 head is a bottleneck stage; a ResNet-{depth} trunk "
                         "(basic blocks) fits only the FPN configs")
    return ["MODEL.RESNETS.DEPTH", str(depth)] + (["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"] if block == "basic" else [])


def run_options(weights: str | Path, out: str | Path, opts: list[str] | None = None,
                ims_per_batch: int | None = None) -> list[str]:
    """The KEY VALUE list merged over a shipped config: the exported weights, detectron2's output folder
    (OUT/detectron2: its checkpoints, events, log; OUT/metrics.json is ours), an optional total batch (with
    the learning rate scaled linearly from the config's 16 images at 0.02, as detectron2's configs are written
    for 8 GPUs x 2 images) and the user's own options last."""
    d2_data.option_pairs(list(opts or []))
    options = ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(Path(out) / "detectron2")]
    if ims_per_batch is not None:
        if ims_per_batch < 1:
            raise ValueError(f"ims_per_batch must be >= 1, got {ims_per_batch}")
        options += ["SOLVER.IMS_PER_BATCH", str(ims_per_batch), "SOLVER.BASE_LR", repr(0.02 * ims_per_batch / 16)]
    return options + list(opts or [])


def headline(results: dict | None) -> dict:
    """detectron2's test results ({"bbox": {"AP": ..}, "segm": {..}}, VOC's AP50 under "bbox"; with several
    test sets one such dict per set name: the first set's) as flat {"AP_bbox", "AP50_bbox", "AP75_bbox",
    "AP_seg", ...} in %, the names the toy-scale runs use. No results (no test set): {}."""
    suffix = {"bbox": "bbox", "segm": "seg"}
    results = dict(results or {})
    if results and not set(results) & set(suffix):
        nested = [v for v in results.values() if isinstance(v, dict)]
        results = dict(nested[0]) if nested else {}
    flat = {}
    for task, metrics in results.items():
        if task not in suffix or not isinstance(metrics, dict):
            continue
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            if name in metrics:
                flat[f"{name}_{suffix[task]}"] = float(metrics[name])
    return flat


def _trainer_class():
    """MoCo's Trainer: DefaultTrainer with the evaluator the test set's metadata names (COCO or Pascal VOC),
    and log + JSON writers (tensorboard's only where it is installed)."""
    from detectron2.data import MetadataCatalog
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

    class Printer(CommonMetricPrinter):
        """detectron2's printer, without its ZeroDivisionError when a run ends within the iteration timer's
        warm-up (MAX_ITER <= 3: no "time" history, and the last write at the same iteration)."""

        def _get_eta(self, storage):
            try:
                return super()._get_eta(storage)
            except ZeroDivisionError:
                return None

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            kind = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
            if kind is None:  # a name registered elsewhere: MoCo's rule, by the name
                kind = "coco" if "coco" in dataset_name else "pascal_voc" if "voc" in dataset_name else None
            if kind == "coco":
                # our own registrations are converted anew each time (never a stale cached json)
                tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)  # both, even with no predictions
                return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder,
                                     allow_cached_coco=not dataset_name.startswith("coarsecrop_"))
            if kind == "pascal_voc":
                return PascalVOCDetectionEvaluator(dataset_name)
            raise ValueError(f"no evaluator for data set {dataset_name!r}: name a coco_* or voc_* data set, or "
                             "register it with evaluator_type 'coco' or 'pascal_voc'")

        def build_writers(self):
            writers = [Printer(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
            if importlib.util.find_spec("tensorboard") is not None:  # imported at its first write
                writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
            return writers

    return Trainer


def _setup(cfg, eval_only: bool) -> None:
    """detectron2's ``default_setup`` without ``collect_env_info`` (which crashed a run's interpreter on a
    GPU machine: a run must not die on its logging): loggers, the config saved to OUTPUT_DIR/config.yaml,
    seeds per rank, cudnn benchmark, float32 precision."""
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.logger import setup_logger

    out = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process():
        os.makedirs(out, exist_ok=True)
    setup_logger(out, distributed_rank=rank, name="fvcore")
    logger = setup_logger(out, distributed_rank=rank)
    import detectron2

    logger.info(f"rank {rank} of {comm.get_world_size()}; torch {torch.__version__}, detectron2 "
                f"{detectron2.__version__}, device {cfg.MODEL.DEVICE}, python {sys.version.split()[0]}")
    if comm.is_main_process():
        with open(os.path.join(out, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not eval_only:
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    if cfg.get("FLOAT32_PRECISION", ""):
        torch.set_float32_matmul_precision(cfg.FLOAT32_PRECISION)


def _main(config: str, options: list[str], resume: bool, eval_only: bool, data: d2_data.D2Data | None,
          out: str, record: dict) -> dict:
    """One process of the run (detectron2's ``launch`` calls it once per GPU, in spawned processes when
    there are several: the data and the head are registered here, in each)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils import comm

    t0 = time.perf_counter()
    register_extra_norm_head()
    if data is not None:
        d2_data.register(data)
    cfg = load_config(config, options)
    cfg.freeze()
    _setup(cfg, eval_only)
    trainer_cls = _trainer_class()
    if eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        results = trainer_cls.test(cfg, model)
    else:
        trainer = trainer_cls(cfg)
        trainer.resume_or_load(resume=resume)
        trainer.train()  # returns the results only when TEST.EXPECTED_RESULTS is set: read them below
        results = getattr(trainer, "_last_eval_results", None)
        if results is None:  # no evaluation ran during training: test the final model
            results = trainer_cls.test(cfg, trainer.model)
    if comm.is_main_process():
        record = {**record, "wall_time_s": round(time.perf_counter() - t0, 2), "eval_only": eval_only,
                  "resume": resume, "max_iter": cfg.SOLVER.MAX_ITER, "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
                  "device": cfg.MODEL.DEVICE, "world_size": comm.get_world_size(),
                  "seconds_per_iter": None if eval_only else seconds_per_iter(Path(cfg.OUTPUT_DIR)),
                  "test_sets": list(cfg.DATASETS.TEST)}
        write_metrics(Path(out), config, options, results, record)
    return results


def seconds_per_iter(output_dir: Path) -> float | None:
    """Median seconds per training iteration that detectron2 logged (OUTPUT_DIR/metrics.json, one JSON
    line per logged iteration, "time" over its window); None when nothing was logged."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return None
    times = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "time" in entry:
            times.append(float(entry["time"]))
    return round(statistics.median(times), 4) if times else None


def write_metrics(out: Path, config: str, options: list[str], results: dict | None, record: dict | None = None) -> Path:
    """OUT/metrics.json (atomic): the config, the options, detectron2's results and the headline; a run
    without a test set says so ("note") instead of failing."""
    results = dict(results or {})
    flat = headline(results)
    empty = sorted({key.split("_")[1] for key in flat if key.startswith("AP_")
                    if all(math.isnan(flat.get(f"{m}_{key.split('_')[1]}", math.nan)) for m in ("AP", "AP50", "AP75"))})
    for task in empty:  # detectron2's "No predictions from the model!": NaN for what is an AP of 0
        flat.update({f"{m}_{task}": 0.0 for m in ("AP", "AP50", "AP75")})
    body = {"engine": "detectron2", "config": config, "options": options,
            "results": json.loads(json.dumps(results, default=float)), "headline": flat, **(record or {})}
    if empty:
        body["note"] = (f"no detections above MODEL.ROI_HEADS.SCORE_THRESH_TEST for {', '.join(empty)}: detectron2 "
                        "reports NaN, the headline the AP of an empty detection set, 0 (results keeps NaN as null)")
    if not results:
        body["note"] = ("no test results: the run had no test set (DATASETS.TEST is empty)" if not
                        body.get("test_sets", True) else "no test results: the evaluator returned none")
    path = Path(out) / "metrics.json"
    write_json(path, body)
    return path


def _schedule_options(config: str, user: list[str]) -> list[str]:
    """Precise BN over at most MAX_ITER batches (the configs' 200 is meant for 24k-90k iterations: a short
    run would spend longer re-estimating BN than training); a NUM_ITER the user sets wins."""
    given = d2_data.option_pairs(user)
    if "TEST.PRECISE_BN.NUM_ITER" in given:
        return []
    max_iter = int(given.get("SOLVER.MAX_ITER", _config_value(config, "SOLVER.MAX_ITER") or 40000))
    return ["TEST.PRECISE_BN.NUM_ITER", str(min(200, max_iter))]


def _device_options(user: list[str], num_gpus: int) -> list[str]:
    given = d2_data.option_pairs(user)
    cuda = torch.cuda.device_count()
    device = given.get("MODEL.DEVICE", "cuda" if cuda else "cpu")
    if device.startswith("cuda") and num_gpus > cuda:
        raise ValueError(f"--num-gpus {num_gpus} needs {num_gpus} CUDA devices; this machine has {cuda}"
                         + ("" if cuda else " (on a CPU, run one process: --num-gpus 1)"))
    return [] if "MODEL.DEVICE" in given else ["MODEL.DEVICE", device]


def train_net(checkpoint: str | Path, config: str, out: str | Path, datasets: str | Path | None = None,
              num_gpus: int = 1, ims_per_batch: int | None = None, opts: list[str] | None = None,
              resume: bool = False, eval_only: bool = False, backbone: str | None = None,
              scenes: str | Path | None = None, images: str | Path | None = None,
              train_split: str | None = "train", val_split: str | None = "val",
              val_scenes: str | Path | None = None, val_images: str | Path | None = None,
              test: bool = True) -> Path:
    """Finetune and test a pretrained trunk with detectron2 and a shipped config; returns OUT/metrics.json.

    checkpoint: a trainer checkpoint or backbone.pt (exported to OUT/backbone.pkl first) or an exported .pkl.
    datasets: the folder holding VOC2007/, VOC2012/, coco/ for the config's own data set names (sets
        $DETECTRON2_DATASETS; default: as set).
    scenes (images, train_split, val_split, val_scenes, val_images, test): any COCO json, VOC root or
        built-in scenes folder instead (``coarsecrop.evaluate.d2_data``); test=False: no test set.
    ims_per_batch: total images per iteration (default: the config's 16); the lr is scaled with it.
    Every check (config, checkpoint, data, options, devices) runs before detectron2 is imported."""
    config_path(config)  # an unknown config fails before anything else
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be >= 1, got {num_gpus}")
    if datasets is not None and scenes is not None:
        raise ValueError("give --datasets (detectron2's own data set names) or --scenes (any COCO json, VOC root "
                         "or built-in scenes), not both")
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint file does not exist")
    if datasets is not None:
        if not Path(datasets).is_dir():
            raise FileNotFoundError(f"{datasets}: no such folder (it should hold VOC2007/, VOC2012/ or coco/)")
        os.environ["DETECTRON2_DATASETS"] = str(Path(datasets).resolve())  # read when detectron2 registers them
    user = list(opts or [])
    given = d2_data.option_pairs(user)
    data = None
    if scenes is not None:
        data = d2_data.describe(scenes, images, train_split, val_split, val_scenes, val_images, test=test)
    device_opts = _device_options(user, num_gpus)
    _require_detectron2()
    out.mkdir(parents=True, exist_ok=True)
    weights = checkpoint
    if checkpoint.suffix != ".pkl":
        weights = export_checkpoint(checkpoint, "detectron2", out / "backbone.pkl", backbone=backbone)
    mask_on = str(given.get("MODEL.MASK_ON", _config_value(config, "MODEL.MASK_ON"))).lower() == "true"
    data_opts = d2_data.options(data, user, mask_on) if data is not None else []
    base = run_options(weights, out, None, ims_per_batch)
    options = (base + _trunk_options(weights, config, user) + device_opts + _schedule_options(config, user)
               + data_opts + user)
    record = {"checkpoint": str(checkpoint), "weights": str(weights), "num_gpus": num_gpus,
              "data": data.record() if data is not None else {"datasets": os.environ.get("DETECTRON2_DATASETS")}}
    from detectron2.engine import launch

    logging.getLogger(__name__).info("detectron2 %s: %s", config, " ".join(options))
    launch(_main, num_gpus, dist_url="auto", args=(config, options, resume, eval_only, data, str(out), record))
    return out / "metrics.json"


# ------------------------------------------------------------------ the "detectron2" transfer task

def prepare_data(train, val, config: str = "coco_mask_rcnn_R_50_FPN_1x") -> dict:
    """The ``detectron2`` task of ``coarsecrop.studies.transfer`` (notebooks/03_transfer.py, the transfer
    sweeps): where the data is (the two SceneSets' sources, image roots and splits), checked as
    ``coarsecrop detectron2 --scenes`` checks it. Without detectron2: the install hint, before any work."""
    _require_detectron2()
    config_path(config)
    data = {"scenes": train.source, "images": train.root, "train_split": train.split,
            "val_scenes": val.source, "val_images": val.root, "val_split": val.split}
    d2_data.describe(data["scenes"], data["images"], data["train_split"], data["val_split"], data["val_scenes"],
                     data["val_images"])
    return data


def run_finetune(trunk: torch.nn.Module, data: dict, seed: int, device: torch.device,
                 config: str = "coco_mask_rcnn_R_50_FPN_1x", iterations: int = 90000, ims_per_batch: int = 16,
                 num_gpus: int = 1, opts: list | None = None) -> dict:
    """Finetune ``trunk`` with detectron2 and ``config`` on ``data`` (``prepare_data``) and test it: the
    trunk exported to a temporary folder, then ``python -m coarsecrop detectron2`` as a subprocess (as the
    SSL trainer: detectron2's ``launch`` spawns its own processes, outside any notebook kernel), with
    SEED = ``seed``, SOLVER.MAX_ITER = ``iterations``, ``ims_per_batch`` images per iteration (the lr scaled
    from the config's 16 at 0.02), ``num_gpus`` processes and ``opts`` (KEY, VALUE, ...) last. Returns the
    headline (AP_bbox, AP50_bbox, ... AP_seg ... in %) and seconds per iteration; a failed run raises with
    the end of its log. A killed run starts again from the trunk (for resumable paper-scale runs use
    ``coarsecrop detectron2 --resume``)."""
    if iterations < 1 or ims_per_batch < 1 or num_gpus < 1:
        raise ValueError(f"iterations, ims_per_batch and num_gpus must be >= 1; got {iterations}, {ims_per_batch}, "
                         f"{num_gpus}")
    opts = [str(v) for v in (opts or [])]
    d2_data.option_pairs(opts)
    exported = to_detectron2(trunk.state_dict())
    trunk_layout(exported["model"])  # a trunk detectron2 cannot hold fails here, not in the subprocess
    with tempfile.TemporaryDirectory(prefix="coarsecrop-d2-") as tmp:
        weights = Path(tmp) / "trunk.pkl"
        with open(weights, "wb") as f:
            pickle.dump(exported, f, protocol=pickle.HIGHEST_PROTOCOL)
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "coarsecrop", "detectron2", str(weights), "--config", config, "--out", str(out),
               "--scenes", str(data["scenes"]), "--images", str(data["images"]),
               "--train-split", data["train_split"] or "all", "--val-split", data["val_split"] or "all",
               "--val-scenes", str(data["val_scenes"]), "--val-images", str(data["val_images"]),
               "--ims-per-batch", str(ims_per_batch), "--num-gpus", str(num_gpus),
               "--opt", "SEED", str(seed), "--opt", "SOLVER.MAX_ITER", str(iterations),
               "--opt", "MODEL.DEVICE", "cuda" if device.type == "cuda" else "cpu"]
        for key, value in zip(opts[::2], opts[1::2]):
            cmd += ["--opt", key, value]
        log = Path(tmp) / "log.txt"
        code = run_logged(cmd, log)  # stops with this process: a killed kernel leaves no detectron2 behind
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"detectron2 ({config}, seed {seed}) failed with exit code {code}:\n{tail}")
        record = json.loads((out / "metrics.json").read_text())
    metrics = {k: v for k, v in record["headline"].items() if v is not None}
    if record.get("seconds_per_iter") is not None:
        metrics["seconds_per_iter"] = record["seconds_per_iter"]
    return metrics
