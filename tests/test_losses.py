"""The steps' losses and the stop on divergence (coarsecrop.train.losses): the first NaN / inf is named by
its step whenever the losses are read, and a divergence seen by one process stops every process together
instead of leaving the others waiting in their next collective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from coarsecrop.train import TrainingDiverged
from coarsecrop.train.distributed import Dist
from coarsecrop.train.losses import StepLosses, stop_if_diverged

ALONE = Dist(0, 1, 0, torch.device("cpu"), None)


def test_the_first_non_finite_loss_is_kept_and_later_reads_do_not_replace_it():
    losses = StepLosses()
    for step, value in enumerate([1.0, 2.0, math.inf, math.nan, 3.0], start=1):
        losses.add(step, 0, 0.1, torch.tensor(value))
    losses.read()
    assert losses.diverged.startswith("loss is inf at step 3 (epoch 0, lr 0.1)")
    assert losses.last == 2.0 and losses.read_through == 2 and losses.epoch_sums == {0: [3.0, 2]}
    losses.add(6, 1, 0.1, torch.tensor(math.nan))
    losses.read()
    assert "at step 3 " in losses.diverged
    with pytest.raises(TrainingDiverged, match="at step 3 "):
        stop_if_diverged(losses, ALONE)


def test_finite_losses_go_on():
    losses = StepLosses()
    losses.add(1, 0, 0.1, torch.tensor(0.5))
    losses.read()
    stop_if_diverged(losses, ALONE)  # no raise
    assert losses.diverged is None


def _rank(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    d = Dist(rank, world, rank, torch.device("cpu"), "gloo")
    losses = StepLosses()
    losses.add(7, 1, 0.5, torch.tensor(math.nan if rank == world - 1 else 1.0))  # the last rank alone diverges
    losses.read()
    try:
        stop_if_diverged(losses, d)
        results[rank] = "went on"
    except TrainingDiverged as err:
        results[rank] = str(err)
    dist.barrier()  # every process is still in the group: none was left waiting
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2])
def test_one_process_diverging_stops_every_process(tmp_path, world):
    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_rank, args=(world, str(tmp_path / "store"), results), nprocs=world, join=True)
    assert results[world - 1].startswith("loss is nan at step 7 (epoch 1, lr 0.5)")
    for rank in range(world - 1):
        assert results[rank].startswith("another process's loss became NaN or infinite"), results[rank]
