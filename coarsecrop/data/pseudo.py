"""Pseudo object-centric images: a crop manifest as an SSL data set (paper Sec. 3.2).

Each sample is one crop box cut from its original image *before* the SSL augmentations, so the
method's RandomResizedCrop acts inside the pseudo-image. N crops per image give N samples per
epoch; images the manifest marks as skipped give none. The manifest of the ``image`` strategy
(one whole-image box per image) is the paper's Image-Crop baseline.

Reproducibility: a sample's augmentation randomness is a function of (seed, epoch, index) only,
never of the worker, the rank or what ran before, so an interrupted and resumed run sees exactly
the same views. The sampler hands ``(epoch, index)`` pairs to ``__getitem__`` (see
``coarsecrop.train.sampler``); a plain int index means epoch 0.

Memory stays flat: the index is three numpy arrays (no per-crop Python objects that DataLoader
workers would copy on access), and images are decoded per sample, not cached.
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from coarsecrop.data.images import load_image


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (SeedSequence mixes the three numbers well)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch / numpy / random seeded from ``seed``, then restore the caller's states.

    torchvision transforms draw from the global RNGs; forking them keeps a workers=0 loader from
    disturbing the training loop's own random stream (needed for exact resume)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def cut_crop(image: np.ndarray, box, scale: float = 1.0) -> torch.Tensor:
    """Cut ``box`` (x1 y1 x2 y2, pixels of the original image) from a decoded image.

    image: uint8 [H, W, 3] decoded at 1/scale of the original size. Returns uint8 [3, h, w], h, w >= 1."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) / scale for v in box)
    left = min(max(int(np.floor(x1)), 0), width - 1)
    top = min(max(int(np.floor(y1)), 0), height - 1)
    right = max(min(int(np.ceil(x2)), width), left + 1)
    bottom = max(min(int(np.ceil(y2)), height), top + 1)
    crop = np.ascontiguousarray(image[top:bottom, left:right])   # [h, w, 3]
    return torch.from_numpy(crop).permute(2, 0, 1).contiguous()  # [3, h, w]


def _manifest_crops(manifest) -> tuple[list[str], list[int], list[list[float]], int]:
    """(files, file index per crop, box per crop, number of skipped images) from a Manifest."""
    files, file_index, boxes, skipped = [], [], [], 0
    for record in manifest.records():
        if record.get("skipped"):
            skipped += 1
            continue
        if not record.get("boxes"):
            continue
        files.append(str(record["file"]))
        for box in record["boxes"]:
            file_index.append(len(files) - 1)
            boxes.append([float(v) for v in box])
    return files, file_index, boxes, skipped


class PseudoImageDataset(Dataset):
    """The crops of a manifest as a data set of pseudo-images.

    manifest: a Manifest (``coarsecrop.crops.manifest.read_manifest(folder)``) or anything with a
        ``records()`` iterator of manifest lines (``file`` absolute). data/ does not import crops/,
        so the caller reads the folder.
    transform: callable(uint8 [3, h, w]) -> anything (``coarsecrop.data.views.method_views(method, size)``: a list
        of views); None returns the crop itself.
    seed: base of the per-sample seeds (see ``sample_seed``).
    max_side: decode images no larger than this (``load_image``), boxes are rescaled to match.
    """

    def __init__(self, manifest, transform: Callable | None = None, seed: int = 0,
                 max_side: int | None = None):
        files, file_index, boxes, skipped = _manifest_crops(manifest)
        self.files = np.array(files, dtype=np.str_)                       # [F]
        self.file_index = np.array(file_index, dtype=np.int64)           # [M]
        self.boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)    # [M, 4]
        self.num_skipped = skipped
        self.transform = transform
        self.seed = int(seed)
        self.max_side = max_side

    @property
    def num_images(self) -> int:
        return len(self.files)

    def __len__(self) -> int:
        return len(self.boxes)

    def crop(self, index: int) -> torch.Tensor:
        """The pseudo-image ``index`` before augmentation: uint8 [3, h, w]."""
        image, scale = load_image(self.files[self.file_index[index]], max_side=self.max_side)
        return cut_crop(image, self.boxes[index], scale)

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        crop = self.crop(index)
        if self.transform is None:
            return crop
        with seeded(sample_seed(self.seed, epoch, index)):
            return self.transform(crop)
