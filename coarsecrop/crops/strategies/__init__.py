"""Every cropping strategy of the paper behind one signature (CONTRACT, other modules rely on it):

    strategy = make_strategy(name, device="cpu", **params)     # unknown name/param -> ValueError listing valid ones
    results = strategy(images, scenes)                          # one call per batch
      images: list of uint8 tensors [3, H, W] (RGB, CPU), one per scene, sizes may differ
      scenes: list of coarsecrop.data.scenes.Scene (annotations used only by gt, gtpad, poor)
      results: list of (boxes float32 [M, 4] xyxy pixels, scores float32 [M]), M <= n
    strategy.name, strategy.params (dict of the effective parameters, JSON-able),
    strategy.needs_annotations (bool: boxes and labels), strategy.needs_masks (bool: instance masks, poor only)

STRATEGIES maps each name to its class; names: image, gt, gtpad, grid, poor, random, selective_search,
edgebox, ours, plus the documented coarse variant(s) of ours: ours_coarse (centre-surround contrast,
recommended) and ours_zscore (per-shape standardised mean). ``strategy_parameters(name)`` gives a
strategy's parameters and defaults.

Common rules
- Boxes are in pixels of the image tensor handed in, clipped, w, h >= 1 (``coarsecrop.boxes.is_valid``),
  also for images smaller than the smallest anchor or 1-3 px thin. GT boxes and masks are rescaled to
  the image tensor when the scene's annotated size differs (an image decoded smaller than its file).
- Every strategy returns at most ``n`` boxes (default 5, as the paper). Fewer only when the image cannot
  give more: ``image`` gives 1 box, ``grid`` 5, ``gt`` / ``gtpad`` one per GT object (0 for a scene
  without objects), ``selective_search`` / ``edgebox`` what the method proposes (at least the whole
  image), ``random`` / ``ours`` / variants fewer only when the image has fewer anchors left after
  suppression (images of a few pixels, where all anchors clip to the same box).
- Scores: the strategy's own ranking score, highest first (box mean objectness for ours, EdgeBox score,
  1 - rank / K for selective search, the crop's GT objectness for poor); 1.0 for strategies that do
  not rank (image, gt, gtpad, grid, random).
- Stochastic strategies (poor, random, selective_search) seed a private generator per image from their
  ``seed`` parameter and the scene id, so results never depend on batch composition or order, nor on
  the global RNG state.

Modules: ``base`` (the base class, the registry, the shared checks), ``baselines`` (image, gt, gtpad, grid,
poor, random), ``proposals`` (selective_search, edgebox), ``ours`` (ours and its variants). Importing this
package registers them all, in that order.
"""

from coarsecrop.crops.strategies.base import (STRATEGIES, Strategy, image_seed, make_strategy, phi_input_size,
                                              register, strategy_parameters)
from coarsecrop.crops.strategies.baselines import (GridCrop, GTCrop, GTPadCrop, ImageCrop, PoorCrop, RandomCrop,
                                                   grid_boxes, gt_boxes, labelled_masks_at, pad_boxes)
from coarsecrop.crops.strategies.proposals import EdgeBox, SelectiveSearch, edge_maps, thin_edges
from coarsecrop.crops.strategies.ours import (PRE_NMS_TOP, OurCoarseCrop, OurCrop, OurZScoreCrop, ring_contrast,
                                              standardise_per_shape, suppress)

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "strategy_parameters", "register", "image_seed",
           "phi_input_size", "ImageCrop", "GTCrop", "GTPadCrop", "GridCrop", "PoorCrop", "RandomCrop", "grid_boxes",
           "gt_boxes", "labelled_masks_at", "pad_boxes", "SelectiveSearch", "EdgeBox", "edge_maps", "thin_edges",
           "OurCrop", "OurCoarseCrop", "OurZScoreCrop", "PRE_NMS_TOP", "ring_contrast", "standardise_per_shape",
           "suppress"]
