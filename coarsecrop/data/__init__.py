"""Scene data: the built-in synthetic scenes and readers for COCO json, VOC xml and plain folders."""
