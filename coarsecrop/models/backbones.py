"""phi: a torchvision ResNet trunk (conv1 .. layer4, no avgpool / fc) and its checkpoint loader.

The crop engine only needs phi's last feature map (Sec. 3.3). phi is either a random initialisation
(the paper's s5, seeded so that the same seed always gives the same weights) or weights from a
checkpoint: a torchvision state_dict, or a training checkpoint that wraps one (MoCo / BYOL / DenseCL
style key prefixes are stripped). The trunk keeps torchvision's parameter names, so its state_dict
loads back into a torchvision ResNet (``strict=False``: only ``fc.*`` is missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from coarsecrop.io import load_torch
from coarsecrop.models.narrow import build_narrow, is_narrow_name

ARCHS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}

# Block type and number of blocks per stage of each torchvision ResNet, used to name the
# architecture a checkpoint was saved from.
LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

# Prefixes that training code puts before the backbone's own keys, tried longest first.
# The query / online encoder is preferred over the key / target (momentum) encoder.
PREFIXES = (
    "online_network.encoder.",
    "online_network.backbone.",
    "online_network.net.",
    "online_encoder.net.",
    "online_encoder.",
    "online_network.",
    "base_encoder.",
    "encoder_q.",
    "backbone.",
    "encoder.",
    "model.",
    "net.",
    "trunk.",
    "",
)
WRAPPER_KEYS = ("model", "state_dict", "backbone", "online_network", "network", "module")


class ResNetTrunk(nn.Module):
    """A torchvision ResNet up to layer4: [B, 3, H, W] -> [B, C, ceil(H/32), ceil(W/32)].

    Keeps torchvision's attribute names (conv1, bn1, layer1 ..) so state_dict keys match."""

    def __init__(self, resnet: torchvision.models.ResNet, arch: str):
        super().__init__()
        self.arch = arch
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.out_channels = resnet.fc.in_features  # 512 (basic blocks) or 2048 (bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, H/4, W/4]
        x = self.layer2(self.layer1(x))  # [B, C/4, H/8, W/8]
        return self.layer4(self.layer3(x))  # [B, C, H/32, W/32]


def build_backbone(name: str = "resnet50", checkpoint: str | Path | None = None, seed: int = 0) -> ResNetTrunk:
    """phi for the objectness map: a ResNet trunk in eval mode, random (seeded) or from a checkpoint.

    The random init draws from a private RNG seeded with ``seed`` (global RNG state untouched), so the
    same seed gives the same weights in every process."""
    if not is_backbone_name(name):
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(ARCHS)} or a narrow ResNet "
                         "such as resnet10_w16 / resnet18_w32_cifar (coarsecrop.models.narrow)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if is_narrow_name(name):  # CPU-scale trunks; same attribute and key names as torchvision's
            model = build_narrow(name)
            model.arch = name
        else:
            model = ResNetTrunk(ARCHS[name](weights=None), name)
    if checkpoint is not None:
        load_backbone_weights(model, checkpoint)
    return model.eval()


def is_backbone_name(name: str) -> bool:
    """True for a torchvision ResNet name (ARCHS) or a narrow ResNet name (resnet10_w16 ...)."""
    return name in ARCHS or is_narrow_name(name)


def load_backbone_weights(model: ResNetTrunk, path: str | Path) -> ResNetTrunk:
    """Load a checkpoint's backbone weights into ``model`` in place; every trunk key must be present.

    Accepts a torchvision state_dict or a dict that wraps one under "model" / "state_dict" /
    "backbone" (nested wrappers too), with prefixes such as "module.", "encoder_q.", "backbone.",
    "online_network.encoder." stripped; ``fc.*`` (classifier or projection head) is ignored.
    Raises ValueError naming the file when it is unreadable, and naming the architecture the
    checkpoint looks like when keys or shapes do not match."""
    state = _read_state_dict(Path(path))
    state = _backbone_keys(state, model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            problems.append(
                f"{len(wrong_shape)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise ValueError(
            f"{path}: checkpoint does not fit backbone {model.arch}: {'; '.join(problems)}. "
            f"The checkpoint looks like {guess_architecture(state)}; expected {model.arch} "
            f"({_describe_layout(model.arch)}). Pass the matching --backbone."
        )
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent
    return model


def checkpoint_architecture(path: str | Path) -> str:
    """The torchvision ResNet name (one of ARCHS) a checkpoint holds; ValueError when none fits."""
    state = _backbone_keys(_read_state_dict(Path(path)), build_skeleton())
    guess = guess_architecture(state)
    name = guess.split(" ", 1)[0]
    if name not in ARCHS:
        raise ValueError(f"{path}: checkpoint holds {guess}; supported: {', '.join(ARCHS)}")
    return name


def build_skeleton() -> nn.Module:
    """A ResNet-50 trunk on the meta device: only its key names are used (prefix detection)."""
    with torch.device("meta"):
        return ResNetTrunk(torchvision.models.resnet50(weights=None), "resnet50")


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """Name the torchvision ResNet a state_dict (backbone keys, no prefix) was saved from."""
    block = "bottleneck" if any(k.startswith("layer1.0.conv3.") for k in state) else "basic"
    counts = []
    for stage in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.") and k.split(".")[1].isdigit()}
        counts.append(max(idx) + 1 if idx else 0)
    if not any(counts):
        first = ", ".join(list(state)[:3]) or "no tensors"
        return f"no torchvision ResNet (first keys: {first})"
    for name, layout in LAYOUTS.items():
        if layout == (block, tuple(counts)):
            return f"{name} ({_describe_layout(name)})"
    return f"an unknown ResNet ({block} blocks, {'/'.join(map(str, counts))} per stage)"


def _describe_layout(name: str) -> str:
    if name not in LAYOUTS:
        return "a narrow ResNet, see coarsecrop.models.narrow"
    block, counts = LAYOUTS[name]
    return f"{block} blocks, {'/'.join(map(str, counts))} per stage"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True, unwrapped to a flat {key: tensor} dict."""
    obj = load_torch(path, "a torch.save file of tensors (a state_dict)")
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state_dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _backbone_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Strip "module." and the wrapper prefix that matches most trunk keys; drop fc.* and other
    sub-networks (keys outside the chosen prefix, e.g. a momentum encoder or projection head)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    trunk = set(model.state_dict())
    best, best_hits = "", 0  # no match at all: keep every key, so the error can describe them
    for prefix in PREFIXES:
        hits = sum(1 for k in state if k.startswith(prefix) and k[len(prefix):].removeprefix("module.") in trunk)
        if hits > best_hits:
            best, best_hits = prefix, hits
    out = {}
    for k, v in state.items():
        if not k.startswith(best):
            continue
        k = k[len(best):].removeprefix("module.")
        if k.startswith("fc."):
            continue
        out[k] = v
    return out
