"""detectron2 glue, optional: the shipped config files, and MoCo's extra-norm res5 head.

detectron2 is not on PyPI, so it is imported only inside these functions. Use:

    from coarsecrop.evaluate import d2
    d2.register_extra_norm_head()                  # once, before building a C4 model
    cfg = d2.load_config("voc0712_faster_rcnn_R_50_C4_24k", ["MODEL.WEIGHTS", "backbone.pkl"])

and train with detectron2's DefaultTrainer (as MoCo's detection/train_net.py).
"""

from __future__ import annotations

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
