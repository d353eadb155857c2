"""Transfer evaluation: how good is a pretrained trunk on downstream tasks (the paper's Tables 1-15).

One module per task, each ``prepare_data(train, val, ...)`` (scenes from ``coarsecrop.data.scenes``)
and ``run_*(trunk, data, seed, device, ...) -> dict`` of metrics in percent:

- ``multilabel``   multi-label classification: end-to-end finetuning (mAP) and linear probe (mAP^l)
- ``objects``      linear probe on frozen features of ground-truth object crops (top-1): the TRANSFER
                   protocol of the object probe in ``coarsecrop.models.probe``
- ``detection``    Faster R-CNN / Mask R-CNN (C4 or FPN) from torchvision, COCOeval AP (``coco``)
- ``segmentation`` FCN head on a dilated trunk: mIoU, mAcc, aAcc
- ``classify``     linear probe on a torchvision ImageFolder (Table 7)
- ``detectron2``   the paper's detection engine (``d2.run_finetune``: a shipped config, as a subprocess; optional)

Around them: ``checkpoints`` (trunk from a checkpoint or random init), ``export`` (torchvision state_dict,
detectron2 pickle), ``d2`` (optional detectron2 glue and the shipped configs), ``metrics``,
``features`` (trunk stages, the pooled frozen features), ``data``, ``coco``; the linear head ``fit_linear``
is the object probe's (``coarsecrop.models.probe``). A task over seeds with a random-init row, its
metrics.json, tables and figures, and the parameters of notebooks/03_transfer.py are the transfer study's
(``coarsecrop.studies.transfer``), above this package.

Nothing here imports detectron2 at module level: it stays optional.
"""

# The tasks, the one list of them: name -> (module, its prepare function, its run function, fixed keyword
# arguments of the prepare function). Names only, so the command line reads it without loading a task;
# coarsecrop.studies.transfer loads the functions.
TASKS = {
    "multilabel": ("multilabel", "prepare_data", "run_finetune", {}),
    "linear": ("multilabel", "prepare_data", "run_linear", {}),
    "objects": ("objects", "prepare_data", "run_probe", {}),
    "detection": ("detection", "prepare_data", "run_detection", {"masks": False}),
    "instance": ("detection", "prepare_data", "run_detection", {"masks": True}),
    "semantic": ("segmentation", "prepare_data", "run_semantic", {}),
    "classify": ("classify", "prepare_data", "run_probe", {}),
    "detectron2": ("d2", "prepare_data", "run_finetune", {}),  # the paper's engine, as a subprocess (optional)
}
# The headline metric of each task (the paper's column), for tables.
HEADLINE = {"multilabel": "mAP", "linear": "mAP_l", "objects": "top1", "detection": "AP_bbox",
            "instance": "AP_seg", "semantic": "mIoU", "classify": "top1", "detectron2": "AP_bbox"}
# Which engine makes each task's numbers (the book says so beside them).
ENGINE = {"detection": "torchvision", "instance": "torchvision", "detectron2": "detectron2"}
