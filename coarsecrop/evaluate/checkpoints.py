"""The trunk to evaluate: a random initialisation (the paper's Table 5 'random' row) or a checkpoint.

Reading and key matching live in ``coarsecrop.models.backbones`` (``build_backbone``,
``load_backbone_weights``): a torchvision state_dict, our trainer's ``backbone.pt`` or a full training
checkpoint that wraps the trunk under a prefix. Here we only add what evaluation needs on top: naming the
architecture of a checkpoint when the user did not (``infer_backbone``), and per-seed random trunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from coarsecrop.io import load_torch
from coarsecrop.models import backbones
from coarsecrop.models import narrow
from coarsecrop.models.vit import is_vit_name


def make_trunk(backbone: str | None, checkpoint: str | Path | None = None, seed: int = 0) -> nn.Module:
    """A ResNet trunk (conv1 .. layer4, torchvision names), random with ``seed`` or loaded from ``checkpoint``.

    ``backbone=None`` reads the architecture from the checkpoint (``infer_backbone``). A checkpoint of
    another architecture, or a corrupt / truncated file, raises ValueError naming the file and what was
    expected (from ``load_backbone_weights``)."""
    if checkpoint is not None and Path(checkpoint).is_dir():
        inside = [p for p in (Path(checkpoint) / "backbone.pt", Path(checkpoint) / "checkpoint.pt") if p.is_file()]
        raise ValueError(f"{checkpoint} is a folder, not a checkpoint file" + (f": pass {inside[0]}" if inside else ""))
    if backbone is None:
        if checkpoint is None:
            raise ValueError("give --backbone (e.g. resnet18) when there is no checkpoint to read it from")
        backbone = infer_backbone(checkpoint)
    if is_vit_name(backbone):
        raise ValueError(f"{checkpoint or backbone}: a ViT trunk ({backbone}, e.g. from MAE); the transfer tasks and "
                         "the exports take ResNet trunks only (as the paper's detection and segmentation "
                         "transfers do); a ViT run's object probe is in its metrics.jsonl")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ValueError(f"{checkpoint}: checkpoint file does not exist")
    try:
        return backbones.build_backbone(backbone, checkpoint=checkpoint, seed=seed)
    except ValueError as err:
        if checkpoint is None or "does not fit" not in str(err):
            raise
        try:
            guess = infer_backbone(checkpoint)
        except ValueError:
            raise err from None
        raise ValueError(f"{str(err).removesuffix(' Pass the matching --backbone.')} This one matches {guess}: "
                         f"pass --backbone {guess}.") from None


def infer_backbone(checkpoint: str | Path) -> str:
    """The backbone name a checkpoint was made with: its recorded parameters if any, else the ResNet
    whose block type and blocks per stage match the keys. ValueError when neither works."""
    obj = read_checkpoint(checkpoint)
    for key in ("arch", "params", "parameters", "config", "args"):
        rec = obj.get(key) if isinstance(obj, Mapping) else None
        name = rec.get("backbone") if isinstance(rec, Mapping) else getattr(rec, "backbone", None)
        if isinstance(name, str):
            return name
    state = _flat_tensors(obj)
    layout = _layout(state)
    stems = [v for k, v in state.items() if k.endswith("conv1.weight") and ".layer" not in f".{k}" and v.ndim == 4]
    width = int(stems[0].shape[0]) if stems else 64
    if width == 64 and not (stems and stems[0].shape[-1] == 3):
        for name, known in backbones.LAYOUTS.items():
            if known == layout and name in backbones.ARCHS:
                return name
    for depth, counts in narrow.LAYOUTS.items():
        if layout == ("basic", tuple(counts)):
            return f"{depth}_w{width}" + ("_cifar" if stems and stems[0].shape[-1] == 3 else "")
    raise ValueError(
        f"{checkpoint}: cannot tell the backbone from this checkpoint (no recorded 'backbone' parameter; "
        f"block layout {layout} matches no torchvision ResNet); pass --backbone"
    )


def read_checkpoint(path: str | Path) -> object:
    """``torch.load(weights_only=True)`` on CPU with a one-line reason when the file is unusable."""
    return load_torch(path, "a torch.save file of tensors (a trainer checkpoint, backbone.pt or a torchvision "
                            "state_dict)")


def _flat_tensors(obj: object) -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) checkpoint under its dotted key, wrapper keys dropped."""
    out: dict[str, torch.Tensor] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, torch.Tensor):
            out[prefix] = node
        elif isinstance(node, Mapping):
            for k, v in node.items():
                if isinstance(k, str):
                    walk(v, f"{prefix}.{k}" if prefix else k)

    walk(obj, "")
    return out


def _layout(state: Mapping[str, torch.Tensor]) -> tuple[str, tuple[int, ...]]:
    """(block type, blocks per stage) of the trunk whose keys end in ``layerK.I.convJ.weight``."""
    block = "bottleneck" if any(".layer1.0.conv3." in f".{k}" for k in state) else "basic"
    counts = []
    for stage in range(1, 5):
        idx = set()
        for k in state:
            parts = f".{k}".split(f".layer{stage}.", 1)
            if len(parts) == 2 and parts[1].split(".", 1)[0].isdigit():
                idx.add(int(parts[1].split(".", 1)[0]))
        counts.append(max(idx) + 1 if idx else 0)
    return block, tuple(counts)
