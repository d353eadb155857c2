"""Data order as a pure function of (seed, epoch, step): resumable mid-epoch, independent of world size.

Epoch e shuffles all samples with a generator seeded by (seed, e) and cuts the permutation into
global batches (the tail that does not fill one is dropped, so every process runs the same number of
steps). Global batch b is split into equal contiguous per-process slices: process r of W takes
samples [r*B/W, (r+1)*B/W) of it. Each yielded item is ``(epoch, index)`` so the data set can seed
the sample's augmentations from (seed, epoch, index) too.

``set_epoch(e, start_step, through=E)`` makes one iteration run on over epochs e .. E-1: the trainer
takes one DataLoader iterator for the whole run, so the workers prefetch the first batches of epoch
e+1 while epoch e ends (a new iterator per epoch would empty the pipeline at every epoch end). The
batches are the same as those of one iteration per epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler):
    """Batch sampler for one process: yields lists of ``(epoch, index)``, one list per step."""

    def __init__(self, num_samples: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not divide by the world size {world_size}: "
                             f"choose batch_size as a multiple of {world_size}")
        if num_samples < global_batch:
            raise ValueError(f"only {num_samples} pseudo-images, fewer than one global batch of {global_batch}: "
                             f"lower batch_size or use more images / crops per image")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.local_batch = global_batch // world_size
        self.epoch, self.start_step, self.through = 0, 0, None

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0, through: int | None = None) -> None:
        """Select the epoch, and the step within it to start from (a resumed run skips the done ones);
        with ``through``, an iteration goes on with the epochs after it, up to ``through`` (exclusive)."""
        if through is not None and through <= epoch:
            raise ValueError(f"through={through} must come after epoch {epoch}")
        self.epoch, self.start_step, self.through = epoch, start_step, through

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __len__(self) -> int:
        epochs = 1 if self.through is None else self.through - self.epoch
        return epochs * self.steps_per_epoch - self.start_step

    def __iter__(self):
        for epoch in range(self.epoch, self.epoch + 1 if self.through is None else self.through):
            order = self.permutation(epoch).tolist()
            for step in range(self.start_step if epoch == self.epoch else 0, self.steps_per_epoch):
                start = step * self.global_batch + self.rank * self.local_batch
                yield [(epoch, index) for index in order[start:start + self.local_batch]]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start_step": self.start_step, "through": self.through,
                "num_samples": self.num_samples, "global_batch": self.global_batch}
