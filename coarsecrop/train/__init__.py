"""Pretraining: the DDP loop (torchrun entry point), parameters, optimisers and schedules, checkpoints,
and the object-probe quality monitor.

    from coarsecrop.train import load_pretrain_params, pretrain
    summary = pretrain(load_pretrain_params("params/smoke/02_pretrain.yaml", ["epochs=1"]))
"""

from coarsecrop.train.losses import TrainingDiverged
from coarsecrop.train.loop import pretrain
from coarsecrop.train.params import PretrainParams, load_pretrain_params, make_params

__all__ = ["PretrainParams", "TrainingDiverged", "load_pretrain_params", "make_params", "pretrain"]
