"""Transfer evaluation: how good is a pretrained trunk on downstream tasks (the paper's Tables 1-15).

One module per task, each ``prepare_data(train, val, ...)`` (scenes from ``coarsecrop.data.scenes``)
and ``run_*(trunk, data, seed, device, ...) -> dict`` of metrics in percent:

- ``multilabel``   multi-label classification: end-to-end finetuning (mAP) and linear probe (mAP^l)
- ``objects``      linear probe on frozen features of ground-truth object crops (top-1)
- ``detection``    Faster R-CNN / Mask R-CNN (C4 or FPN) from torchvision, COCOeval AP (``coco``)
- ``segmentation`` FCN head on a dilated trunk: mIoU, mAcc, aAcc
- ``classify``     linear probe on a torchvision ImageFolder (Table 7)
- ``detectron2``   the paper's detection engine (``d2.run_finetune``: a shipped config, as a subprocess; optional)

Around them: ``checkpoints`` (trunk from a checkpoint or random init), ``export`` (torchvision state_dict,
detectron2 pickle), ``d2`` (optional detectron2 glue and the shipped configs), ``runner`` (a task over
seeds with a random-init row, metrics.json; the notebook's parameters), ``report`` (tables, figures, the
paper's numbers), ``metrics``, ``probe``, ``features``, ``data``, ``files``.

Nothing here imports detectron2 at module level: it stays optional.
"""

TASKS = ("multilabel", "linear", "objects", "detection", "instance", "semantic", "classify", "detectron2")
