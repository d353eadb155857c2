"""Backbones (torchvision ResNets) and checkpoint loading."""
