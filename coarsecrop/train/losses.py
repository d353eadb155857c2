"""The steps' losses on their way to the host, and the run's stop when one is NaN or infinite.

A loss stays on the device until a log window reads every loss since the last read in one transfer
(``StepLosses``); the first non-finite one is kept, naming its step, epoch and lr. ``stop_if_diverged``
then stops every process together, at a point each reaches at the same step.
"""

from __future__ import annotations

import math

import torch

from coarsecrop.train.distributed import Dist, any_true


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StepLosses:
    """The steps' losses, kept on the device until a log window reads them all in one transfer.

    ``add`` after each step (no host wait); ``read`` brings every loss since the last read to the host
    at once, checks them in step order (the first NaN / inf is kept in ``diverged``, naming its step, epoch
    and lr; ``stop_if_diverged`` raises it on every process) and sums each epoch's losses in step order, as
    Python floats (the epoch line)."""

    def __init__(self):
        self._queued: list[tuple[int, int, float, torch.Tensor]] = []  # (step, epoch, lr, loss [])
        self.last: float | None = None  # the loss of the last step read
        self.read_through = 0  # the last step read
        self.epoch_sums: dict[int, list] = {}  # epoch -> [sum, steps]
        self.diverged: str | None = None  # what the first non-finite loss read says

    def add(self, step: int, epoch: int, lr: float, loss: torch.Tensor) -> None:
        self._queued.append((step, epoch, lr, loss))

    def read(self) -> None:
        if not self._queued:
            return
        values = torch.stack([q[3] for q in self._queued]).tolist()  # the host waits here, once
        queued, self._queued = self._queued, []
        for (step, epoch, lr, _), value in zip(queued, values):
            if not math.isfinite(value):
                self.diverged = self.diverged or (f"loss is {value} at step {step} (epoch {epoch}, lr {lr:.4g}): "
                                                  "lower lr or raise warmup_epochs")
                return
            total = self.epoch_sums.setdefault(epoch, [0.0, 0])
            total[0], total[1] = total[0] + value, total[1] + 1
            self.last, self.read_through = value, step


def stop_if_diverged(losses: StepLosses, d: Dist) -> None:
    """Raise TrainingDiverged on every process when any process's losses read so far hold a NaN / inf. A
    collective (CPU), called where every process is at the same step: a raise on one process alone (its own
    loss went non-finite first, or rank 0 read its losses after the probe) would leave the others waiting in
    their next collective (a gloo error naming no cause, or a hang until NCCL's timeout)."""
    if any_true(losses.diverged is not None, d):
        raise TrainingDiverged(losses.diverged or "another process's loss became NaN or infinite (its own error "
                               "names the step): lower lr or raise warmup_epochs")
