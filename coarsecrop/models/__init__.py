"""Backbones (torchvision and narrow ResNets, ViTs), SSL heads, checkpoint loading, and the object probe
(``probe``: frozen features + classifiers, shared by the trainer's monitor and the ``objects`` task)."""
