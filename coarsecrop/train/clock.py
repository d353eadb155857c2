"""The trainer's whole-run clock: what ``pretrain`` reports as its whole-run rate beside the steady
(median log window) rate, measured on the host with as few device syncs as the figures need."""

from __future__ import annotations

import time

import torch


class RunClock:
    """The whole-run rate: images over the wall time from the end of the first step (one device sync
    there; it leaves out worker start-up and cuDNN autotuning) to the final checkpoint on disk; and the
    same from the end of the first epoch this run finished (one more sync there), which leaves out the
    first epoch's new shapes and the loader's first pass too."""

    def __init__(self, device: torch.device):
        self.device, self.first_step, self.start, self.end, self.end_step = device, None, None, None, None
        self.epoch_step, self.epoch_end = None, None

    def stepped(self, step: int) -> None:
        if self.first_step is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_step, self.start = step, time.time()

    def epoch_ended(self, step: int) -> None:
        if self.epoch_end is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.epoch_step, self.epoch_end = step, time.time()

    def finished(self, step: int) -> None:
        self.end, self.end_step = time.time(), step

    def summary(self, batch_size: int) -> dict:
        if self.end is None or self.first_step is None or self.end_step <= self.first_step:
            return {"run_images": 0, "run_s": None, "run_images_per_s": None,
                    "after_epoch_images": 0, "after_epoch_images_per_s": None}
        images, seconds = (self.end_step - self.first_step) * batch_size, self.end - self.start
        later = (self.end_step - self.epoch_step) * batch_size if self.epoch_end is not None else 0
        return {"run_images": images, "run_s": seconds, "run_images_per_s": images / max(seconds, 1e-9),
                "after_epoch_images": later,
                "after_epoch_images_per_s": later / max(self.end - self.epoch_end, 1e-9) if later else None}
