"""detectron2 glue, optional: the shipped config files, MoCo's extra-norm res5 head, and the paper-scale
detection / instance segmentation runs (MoCo's detection/train_net.py, driven from a checkpoint).

detectron2 is not on PyPI, so it is imported only inside these functions. From the command line:

    coarsecrop detectron2 runs/02_pretrain/<id>/train/backbone.pt --config voc0712_faster_rcnn_R_50_C4_24k \
        --datasets /data --num-gpus 8 --out runs/d2/voc-ours [--opt SOLVER.MAX_ITER 100 ...]

exports the trunk (``coarsecrop export --format detectron2``), trains and tests with the shipped config
(its data sets are detectron2's built-in names: voc_2007_trainval, voc_2012_trainval, voc_2007_test,
coco_2017_train, coco_2017_val, read below ``--datasets``, i.e. $DETECTRON2_DATASETS: VOC2007/, VOC2012/,
coco/) and writes the test metrics (AP, AP50, AP75 per task, in %) to OUT/metrics.json. Like the SSL
trainer it runs outside a notebook kernel (detectron2's ``launch`` spawns one process per GPU). In Python:

    from coarsecrop.evaluate import d2
    d2.register_extra_norm_head()                  # once, before building a C4 model
    cfg = d2.load_config("voc0712_faster_rcnn_R_50_C4_24k", ["MODEL.WEIGHTS", "backbone.pkl"])
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"


def config_names() -> list[str]:
    """Shipped experiment configs (the Base-* files are only bases)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("Base-"))


def config_path(name: str) -> Path:
    """Path of a shipped config file by name (without .yaml)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown detectron2 config {name!r}; shipped: {', '.join(config_names())}")
    return path


def _require_detectron2():
    try:
        import detectron2  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "detectron2 is not installed (it is not on PyPI): install it from its repository for the "
            "paper-scale detection runs; the toy-scale runs use torchvision (coarsecrop.evaluate.detection)"
        ) from err


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


def run_options(weights: str | Path, out: str | Path, opts: list[str] | None = None,
                ims_per_batch: int | None = None) -> list[str]:
    """The KEY VALUE list merged over a shipped config: the exported weights, the output folder, an
    optional total batch (with the learning rate scaled linearly from the config's 16 images at 0.02,
    as detectron2's configs are written for 8 GPUs x 2 images) and the user's own options last."""
    if opts and len(opts) % 2:
        raise ValueError(f"detectron2 options come in KEY VALUE pairs; got an odd list: {opts}")
    options = ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out)]
    if ims_per_batch is not None:
        if ims_per_batch < 1:
            raise ValueError(f"ims_per_batch must be >= 1, got {ims_per_batch}")
        options += ["SOLVER.IMS_PER_BATCH", str(ims_per_batch), "SOLVER.BASE_LR", repr(0.02 * ims_per_batch / 16)]
    return options + list(opts or [])


def headline(results: dict) -> dict:
    """detectron2's test results ({"bbox": {"AP": ..}, "segm": {..}}, VOC's AP50 under "bbox") as flat
    {"AP_bbox", "AP50_bbox", "AP75_bbox", "AP_seg", ...} in %, the names the toy-scale runs use."""
    suffix = {"bbox": "bbox", "segm": "seg"}
    flat = {}
    for task, metrics in results.items():
        if task not in suffix or not isinstance(metrics, dict):
            continue
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            if name in metrics:
                flat[f"{name}_{suffix[task]}"] = float(metrics[name])
    return flat


def _trainer_class():
    """MoCo's Trainer: DefaultTrainer with COCO or Pascal VOC evaluation by the data set's name."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            if "coco" in dataset_name:
                return COCOEvaluator(dataset_name, cfg, True, output_folder)
            if "voc" in dataset_name:
                return PascalVOCDetectionEvaluator(dataset_name)
            raise ValueError(f"no evaluator for data set {dataset_name!r}: name a coco_* or voc_* data set")

    return Trainer


def _main(config: str, options: list[str], resume: bool, eval_only: bool) -> dict:
    """One process of the run (detectron2's ``launch`` calls it once per GPU)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import default_setup
    from detectron2.utils import comm

    register_extra_norm_head()
    cfg = load_config(config, options)
    cfg.freeze()
    default_setup(cfg, argparse_namespace(config, options, resume, eval_only))
    trainer_cls = _trainer_class()
    if eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        results = trainer_cls.test(cfg, model)
    else:
        trainer = trainer_cls(cfg)
        trainer.resume_or_load(resume=resume)
        results = trainer.train()
    if comm.is_main_process():
        write_metrics(Path(cfg.OUTPUT_DIR), config, options, results)
    return results


def argparse_namespace(config: str, options: list[str], resume: bool, eval_only: bool):
    """The ``args`` that detectron2's ``default_setup`` logs and reads (config_file, opts, resume, eval_only)."""
    import argparse

    return argparse.Namespace(config_file=str(config_path(config)), opts=options, resume=resume,
                              eval_only=eval_only)


def write_metrics(out: Path, config: str, options: list[str], results: dict) -> Path:
    """OUT/metrics.json (atomic): the config, the options, detectron2's results and the headline."""
    from coarsecrop.io import write_json

    record = {"engine": "detectron2", "config": config, "options": options,
              "results": json.loads(json.dumps(results, default=float)), "headline": headline(results)}
    path = out / "metrics.json"
    write_json(path, record)
    return path


def train_net(checkpoint: str | Path, config: str, out: str | Path, datasets: str | Path | None = None,
              num_gpus: int = 1, ims_per_batch: int | None = None, opts: list[str] | None = None,
              resume: bool = False, eval_only: bool = False, backbone: str | None = None) -> Path:
    """Finetune and test a pretrained trunk with detectron2 and a shipped config; returns OUT/metrics.json.

    checkpoint: a trainer checkpoint or backbone.pt (exported to OUT/backbone.pkl first) or an exported .pkl.
    datasets: the folder holding VOC2007/, VOC2012/, coco/ (sets $DETECTRON2_DATASETS; default: as set).
    ims_per_batch: total images per iteration (default: the config's 16); the lr is scaled with it."""
    config_path(config)  # an unknown config fails before anything else
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be >= 1, got {num_gpus}")
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint file does not exist")
    if datasets is not None:
        if not Path(datasets).is_dir():
            raise FileNotFoundError(f"{datasets}: no such folder (it should hold VOC2007/, VOC2012/ or coco/)")
        os.environ["DETECTRON2_DATASETS"] = str(Path(datasets).resolve())  # read when detectron2 registers them
    _require_detectron2()
    out.mkdir(parents=True, exist_ok=True)
    weights = checkpoint
    if checkpoint.suffix != ".pkl":
        from coarsecrop.evaluate.export import export_checkpoint

        weights = export_checkpoint(checkpoint, "detectron2", out / "backbone.pkl", backbone=backbone)
    options = run_options(weights, out, opts, ims_per_batch)
    from detectron2.engine import launch

    launch(_main, num_gpus, args=(config, options, resume, eval_only))
    return out / "metrics.json"
