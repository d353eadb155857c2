"""The strategies' contract and registry (see ``coarsecrop.crops.strategies`` for the contract itself):
the ``Strategy`` base class, ``register`` / ``STRATEGIES`` / ``make_strategy`` / ``strategy_parameters``,
the per-image seeding and the parameter checks every strategy shares."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from coarsecrop.boxes import clip_boxes
from coarsecrop.io import json_safe

# name -> class, in registration order (the order of the paper's tables: baselines, proposals, ours);
# filled by the @register of each strategy module, all of which coarsecrop.crops.strategies imports.
STRATEGIES: dict[str, type["Strategy"]] = {}


class Strategy:
    """One cropping strategy. Subclasses set ``name``, ``defaults`` and implement ``crop`` (one image)
    or ``crop_batch`` (a batch)."""

    name = ""
    needs_annotations = False  # crops from the GT boxes / labels (the crop job fingerprints them)
    needs_masks = False  # reads the GT masks (fingerprinted too)
    defaults: dict = {"n": 5}

    def __init__(self, device: str | torch.device = "cpu", **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"strategy {self.name!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.defaults))}"
            )
        merged = {**self.defaults, **params}
        self.n = _positive_int(self.name, "n", merged["n"])
        self.device = torch.device(device)
        self.params = {k: json_safe(v) for k, v in sorted(merged.items())}
        self.check_params(self.params)

    def check_params(self, params: dict) -> None:
        """Validate the effective parameters (raise ValueError naming the bad one)."""

    def __call__(self, images: list[torch.Tensor], scenes: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(images) != len(scenes):
            raise ValueError(f"strategy {self.name!r}: {len(images)} images but {len(scenes)} scenes")
        for image in images:
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"strategy {self.name!r}: images must be uint8 [3, H, W] tensors, "
                    f"got {image.dtype} {tuple(image.shape)}"
                )
        if self.needs_annotations:
            for scene in scenes:
                if not getattr(scene, "annotated", True):
                    raise ValueError(
                        f"strategy {self.name!r} needs annotations, but scene {scene.id} ({scene.file}) has none; "
                        "use an unsupervised strategy (image, grid, random, selective_search, edgebox, ours ...)"
                    )
        results = self.crop_batch(images, scenes)
        return [_finish(boxes, scores, image, self.n) for (boxes, scores), image in zip(results, images)]

    def crop_batch(self, images, scenes):
        return [self.crop(image, scene) for image, scene in zip(images, scenes)]

    def crop(self, image: torch.Tensor, scene) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _finish(boxes, scores, image, n):
    """The contract's output: float32 CPU boxes clipped to the image, at most n, scores float32."""
    H, W = image.shape[-2:]
    boxes = clip_boxes(torch.as_tensor(boxes).detach().cpu().reshape(-1, 4), W, H)[:n]
    scores = torch.as_tensor(scores).detach().cpu().to(torch.float32).reshape(-1)[:n]
    return boxes, scores.clone()


def _ones(m: int) -> torch.Tensor:
    return torch.ones(m, dtype=torch.float32)


def image_seed(seed: int, scene_id) -> int:
    """A 31-bit seed from (strategy seed, scene id): stable across processes and platforms."""
    return zlib.crc32(f"{int(seed)}/{scene_id}".encode()) & 0x7FFFFFFF


def _generator(seed: int, scene_id) -> torch.Generator:
    return torch.Generator().manual_seed(image_seed(seed, scene_id))


def _positive_int(strategy: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"strategy {strategy!r}: {key} must be a positive integer, got {value!r}")
    return int(value)


def _check_range(strategy: str, key: str, value, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"strategy {strategy!r}: {key} must be a number in [{lo}, {hi}], got {value!r}")


def _check_numbers(strategy: str, key: str, values) -> None:
    if not isinstance(values, list) or not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(f"strategy {strategy!r}: {key} must be a non-empty list of positive numbers, got {values!r}")



def _check_int(strategy: str, key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"strategy {strategy!r}: {key} must be an integer, got {value!r}")



# --------------------------------------------------------------------------------------------- anchors


def phi_input_size(height: int, width: int, input_size: int | None) -> tuple[int, int]:
    """Size phi sees: the image itself, or resized so that its shorter side is ``input_size``."""
    if not input_size:
        return height, width
    scale = input_size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _check_anchor_params(strategy: str, params: dict) -> None:
    _check_numbers(strategy, "sizes", params["sizes"])
    _check_numbers(strategy, "ratios", params["ratios"])
    if params["input_size"] is not None:
        _positive_int(strategy, "input_size", params["input_size"])



def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a strategy to ``STRATEGIES`` under its ``name``."""
    if cls.name in STRATEGIES:
        raise ValueError(f"crop strategy {cls.name!r} registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, device: str | torch.device = "cpu", **params) -> Strategy:
    """Build a strategy by name; unknown names or parameters raise ValueError listing the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown crop strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](device=device, **params)


def strategy_parameters(name: str) -> dict:
    """The parameters a strategy accepts and their defaults (for CLIs and presets)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown crop strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return {k: json_safe(v) for k, v in STRATEGIES[name].defaults.items()}

