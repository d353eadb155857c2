"""Transfer evaluation: how good is a pretrained trunk on downstream tasks (the paper's Tables 1-15).

One module per task, each taking a trunk (``coarsecrop.models.backbones``) and scenes
(``coarsecrop.data.scenes``) and returning plain-float metrics:

- ``multilabel``   multi-label classification, end-to-end finetuning (mAP) and linear probe (mAP^l)
- ``objects``      linear probe on frozen features of ground-truth object crops (top-1)
- ``detection``    Faster R-CNN / Mask R-CNN (C4 or FPN) from torchvision, COCOeval AP
- ``segmentation`` FCN head on a dilated trunk: mIoU, mAcc, aAcc
- ``classify``     linear probe on a torchvision ImageFolder (Table 7)
- ``export``       a checkpoint as a torchvision state_dict or a detectron2 pickle
- ``runner``       ``evaluate(...)``: a task over seeds, random-init row beside, ``metrics.json``

Nothing here imports detectron2 at module level: it stays optional (``detectron2.py``).
"""

TASKS = ("multilabel", "linear", "objects", "detection", "instance", "semantic", "classify")
