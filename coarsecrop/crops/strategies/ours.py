"""Our-Crop (Sec. 3.3): phi -> SCDA objectness map -> anchors -> mean objectness -> NMS -> the top n, and
its two documented coarse variants (ours_coarse: centre-surround contrast; ours_zscore: per-shape
standardised mean)."""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from coarsecrop.boxes import clip_boxes
from coarsecrop.crops.anchors import RATIOS, SIZES, cached_anchors
from coarsecrop.crops.objectness import objectness_maps
from coarsecrop.crops.scoring import box_means, box_sums, summed_area_table
from coarsecrop.crops.strategies.base import (Strategy, _check_anchor_params, _check_int, _check_range,
                                              phi_input_size, register)
from coarsecrop.data.images import IMAGENET_MEAN, IMAGENET_STD
from coarsecrop.models.backbones import ARCHS, build_backbone, checkpoint_architecture, is_backbone_name


@register
class OurCrop(Strategy):
    """Our-Crop, Sec. 3.3 literally: phi -> SCDA objectness map -> 12 anchors per feature location ->
    mean objectness per anchor (summed-area table) -> torchvision NMS -> the top n.

    phi: a torchvision ResNet trunk (``backbone``; None: the checkpoint's architecture, else
    resnet50), random init from ``seed`` (the paper's s5) or ``checkpoint``; ImageNet mean / std input
    normalisation; eval mode (BatchNorm uses its running statistics, so every image is processed
    independently of its batch). ``input_size`` resizes the
    shorter side before phi; the map is still upsampled to, and the anchors laid out on, the original
    image (stride = H / h in original pixels). Images of equal size share one forward pass.
    channels_last on every device (on CPU oneDNN runs it ~1.5x faster, same results alone or in a
    batch); bf16 autocast on CUDA, float32 elsewhere.

    NMS IoU default 0.5 (the paper gives none). Anchors one stride apart overlap with IoU
    (s - 32) / (s + 32) for size s: 0.33 at 64 px, 0.6 at 128, 0.78 at 256. At 0.7 (the RPN value)
    shifted copies of the large anchors survive NMS as near-duplicates; at 0.3 every anchor of 64 px
    and up suppresses its neighbours and the 5 crops must come from far-apart places. 0.5 keeps
    near-duplicates out while allowing crops of different sizes around one region, the middle of the
    range detection code uses. With the mean score, the chosen crops are nevertheless mostly the
    smallest anchors (see the variants below, and the size summary in the book).

    ``objectness_maps(images)`` returns the maps for plotting."""

    name = "ours"
    defaults = {
        "n": 5, "backbone": "resnet50", "checkpoint": None, "seed": 0,
        "sizes": list(SIZES), "ratios": list(RATIOS), "nms_iou": 0.5, "input_size": None,
    }

    def __init__(self, device="cpu", **params):
        super().__init__(device, **params)
        self._phi = None

    def check_params(self, params):
        if params["checkpoint"] is not None:
            params["checkpoint"] = str(params["checkpoint"])
            if not Path(params["checkpoint"]).is_file():
                raise ValueError(f"strategy {self.name!r}: checkpoint {params['checkpoint']} does not exist")
        if params["backbone"] is None:  # the architecture of the checkpoint, else the paper's ResNet-50
            params["backbone"] = checkpoint_architecture(params["checkpoint"]) if params["checkpoint"] else "resnet50"
        if not is_backbone_name(params["backbone"]):
            raise ValueError(
                f"strategy {self.name!r}: unknown backbone {params['backbone']!r}; valid: {', '.join(ARCHS)} "
                "or a narrow ResNet such as resnet10_w16"
            )
        _check_int(self.name, "seed", params["seed"])
        _check_anchor_params(self.name, params)
        _check_range(self.name, "nms_iou", params["nms_iou"], 0.0, 1.0)

    # phi ------------------------------------------------------------------------------------------
    @property
    def phi(self) -> torch.nn.Module:
        """The feature extractor, built on first use (tests may assign any module [B,3,H,W] -> [B,d,h,w])."""
        if self._phi is None:
            p = self.params
            model = build_backbone(p["backbone"], p["checkpoint"], p["seed"]).to(self.device)
            self._phi = model.to(memory_format=torch.channels_last)
        return self._phi

    @phi.setter
    def phi(self, module: torch.nn.Module) -> None:
        self._phi = module

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> phi's last feature map [B, d, h, w] (float)."""
        x = batch.to(self.device, non_blocking=True).float().div_(255)
        mean, std = _imagenet_stats(self.device)
        x = (x - mean) / std
        size = phi_input_size(x.shape[-2], x.shape[-1], self.params["input_size"])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.phi(x).float()
        return self.phi(x)

    def maps(self, batch: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 [B, 3, H, W] -> (objectness maps float32 [B, H, W], feature size (h, w))."""
        feats = self.features(batch)
        return objectness_maps(feats, batch.shape[-2], batch.shape[-1]), tuple(feats.shape[-2:])

    def objectness_maps(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The objectness map of each image: list of float32 [H, W] CPU tensors in [0, 1]."""
        out = [None] * len(images)
        for idx in _same_size_groups(images):
            maps, _ = self.maps(_stack([images[i] for i in idx], self.device))
            maps = maps.cpu()  # one copy per image size
            for b, i in enumerate(idx):
                out[i] = maps[b]
        return out

    # crops ----------------------------------------------------------------------------------------
    def scored_anchors(self, batch: torch.Tensor):
        """uint8 [B, 3, H, W] -> (anchors [N, 4], shape index [N], mean objectness [B, N], summed-area
        table [B, H + 1, W + 1]), all on the table's device; the anchors are cached per image size."""
        H, W = batch.shape[-2:]
        maps, (h, w) = self.maps(batch)  # [B, H, W]
        table = summed_area_table(maps)  # [B, H + 1, W + 1] float64 (on the CPU for MPS)
        anchors, shape_index = cached_anchors(H, W, h, w, self.params["sizes"], self.params["ratios"], table.device)
        return anchors, shape_index, box_means(table, anchors), table

    def crop(self, image, scene):
        """One image by the per-image rule (``select``): what ``crop_batch`` equals (tested)."""
        anchors, shape_index, scores, table = self.scored_anchors(image[None])
        return self._crop_one(anchors, shape_index, scores[0], table[0])

    def _crop_one(self, anchors, shape_index, scores, table):
        keep, kept = self.select(anchors, shape_index, scores, table)
        return anchors[keep].cpu(), kept.cpu()

    def crop_batch(self, images, scenes):
        """Images of equal size share phi's forward pass and ``select_batch``; the picks of all images
        stay on the device until ONE copy to the host per call (boxes, scores, and which images the
        per-image rule must redo), so a GPU never waits for the host inside a batch."""
        results = [None] * len(images)
        groups, packed = [], []
        for idx in _same_size_groups(images):
            anchors, shape_index, scores, table = self.scored_anchors(_stack([images[i] for i in idx], self.device))
            chosen = self.select_batch(anchors, shape_index, scores, table)
            if chosen is None:  # a variant without a batched rule: image by image
                for b, i in enumerate(idx):
                    results[i] = self._crop_one(anchors, shape_index, scores[b], table[b])
                continue
            picks, kept, redo = chosen
            packed.append(_pack(anchors, picks, kept, redo))
            groups.append((idx, anchors, shape_index, scores, table))
        if not packed:
            return results
        host = torch.cat(packed).cpu()  # [images, n, 7]: the one copy to the host
        rows = iter(host)
        for idx, anchors, shape_index, scores, table in groups:
            for b, i in enumerate(idx):
                row = next(rows)
                if row[0, 6] > 0:  # the window ran out: the per-image rule decides (see select_batch)
                    results[i] = self._crop_one(anchors, shape_index, scores[b], table[b])
                else:
                    valid = row[:, 5] > 0
                    results[i] = row[valid, :4], row[valid, 4]
        return results

    def select_batch(self, anchors, shape_index, scores, table):
        """``select`` for every image of a batch at once, on the device, or None where a variant has no
        batched rule. Returns (picks int64 [B, n]: anchor indices in pick order, -1 after the last;
        their scores float32 [B, n]; redo bool [B]: the images ``select`` itself must decide).

        ``nms_batch``: greedy NMS on the PRE_NMS_TOP best anchors of each image as n vectorised steps,
        exactly torchvision's CPU NMS (tested, ties and IoUs at the threshold included); no host
        synchronisation: on a GPU the per-image rule's kernel launches and host syncs cost more than
        phi's forward. ``redo`` marks an image whose window yields fewer than n picks while a box outside
        it would still be picked, as ``select`` then runs NMS on all anchors."""
        if type(self).select is not OurCrop.select:
            return None
        picks, redo = nms_batch(anchors, scores, self.n, self.params["nms_iou"], top=PRE_NMS_TOP)
        return picks, scores.gather(1, picks.clamp_min(0)), redo

    def select(self, anchors, shape_index, scores, table):
        """The paper's rule: NMS on the mean scores, then the top n. Returns (indices, scores).

        Greedy NMS decides each box from the higher-scored boxes alone, so running it on the
        ``PRE_NMS_TOP`` best anchors gives the same first n survivors as running it on all of them
        whenever at least n survive; only otherwise is the full set used. This cuts NMS from ~66 ms
        to ~1 ms per 640x480 image (3,600 anchors) on a CPU core."""
        order = torch.argsort(scores, descending=True, stable=True)
        for top in (order[:PRE_NMS_TOP], order):
            keep = top[torchvision.ops.nms(anchors[top], scores[top], self.params["nms_iou"])[: self.n]]
            if len(keep) >= self.n or len(top) == len(order):
                return keep, scores[keep]


PRE_NMS_TOP = 256  # anchors kept before NMS in ``ours`` (exact: see OurCrop.select)


class _SpreadSelection(OurCrop):
    """Shared by the coarse variants: same phi, map, anchors and box means as ``ours``; each variant
    ranks the anchors by its own ``box_scores``, then picks greedily with suppression by IoU >
    ``nms_iou`` (0.5, as ``ours``) *and* by containment: a box is also dropped when more than
    ``containment`` (0.8) of the smaller of it and a chosen box lies inside the other. Without the
    containment rule the 5 crops nest around one peak (a box of every size on it); with it they
    spread over different regions of the map."""

    defaults = {**OurCrop.defaults, "containment": 0.8}

    def check_params(self, params):
        super().check_params(params)
        _check_range(self.name, "containment", params["containment"], 0.0, 1.0)

    def box_scores(self, anchors, shape_index, scores, table):
        """Ranking score of every anchor: [N]."""
        raise NotImplementedError

    def batch_box_scores(self, anchors, shape_index, scores, table):
        """``box_scores`` of every image of a batch (scores [B, N], table [B, H + 1, W + 1]) -> [B, N], with
        the per-image arithmetic; here image by image (a variant overrides it with one batched call)."""
        return torch.stack([self.box_scores(anchors, shape_index, scores[b], table[b])
                            for b in range(scores.shape[0])])

    def select(self, anchors, shape_index, scores, table):
        rank = self.box_scores(anchors, shape_index, scores, table)
        keep = suppress(anchors, rank, self.n, self.params["nms_iou"], self.params["containment"])
        return keep, rank[keep].float()

    def select_batch(self, anchors, shape_index, scores, table):
        """``select`` for every image of a batch at once, on the device (``suppress_batch``: the greedy
        picks as a few vectorised steps on the best ``PRE_NMS_TOP`` anchors), as ``OurCrop.select_batch``
        returns it; equal to ``select`` (tested, ties included)."""
        ranks = self.batch_box_scores(anchors, shape_index, scores, table)  # [B, N]
        picks, redo = suppress_batch(anchors, ranks, self.n, self.params["nms_iou"], self.params["containment"],
                                     top=PRE_NMS_TOP)
        return picks, ranks.gather(1, picks.clamp_min(0)).float(), redo


@register
class OurCoarseCrop(_SpreadSelection):
    """Coarse variant of Our-Crop: rank each anchor by centre-surround contrast, its mean objectness
    minus the mean of the ring around it, then IoU + containment suppression (see ``_SpreadSelection``).

    The ring is the box grown by ``ring`` (1.0) x its width / height on each side, clipped to the
    image, minus the box; a box with no ring left (it fills the image) scores 0. Why: with the plain
    mean (``ours``) a small box on the map's peak always beats any larger box, whose mean is diluted
    by its surroundings -- the trap: on the 256-px built-in scenes ~all chosen crops are the smallest
    anchors. The contrast is highest for the box that fits a blob of the map, so the crop size follows
    the blob: small boxes inside a blob lose (their ring is as bright as they are), boxes much larger
    than the blob lose (diluted inside).

    Measured on 100 built-in 256-px scenes with random-init phi and anchors 32 .. 256, ResNet-18 /
    ResNet-50: crop sides 53/112/128/189 and 59/112/128/186 px at the 10/50/75/90th percentiles
    (ours: 32/32/32/64), 3-6 % of crop pairs nested (> 80 % of the smaller inside the other); objectness,
    measured again with today's masks (twenty-sixth session, ResNet-18): 0.47 on scenes v1 and 0.40 on v3,
    Poor/Coarse/Precise 16/74/10 and 26/67/7 % (the first measurement, on an earlier version of the masks:
    0.34, 30/67/3). On the cube of those maps (a
    stand-in for a peakier map) it stayed coarse (0.46-0.50 objectness, 64-128 px crops), and on toy
    Gaussian blobs (64-217 px), where ``ours_zscore`` falls back to the smallest anchors. With a phi
    actually trained by SSL it does not stay coarse: the committed cpu-full-v1 s6 runs (Table 11; v1 128-px
    scenes, anchors 16 .. 128, MoCo-v2 phi on Image-Crop, 3 seeds) measure 0.69 mean objectness, 57 %
    Precise crops and a median side of 28 px: precise crops (the chapter shows this beside s5); the cpu-full
    s6 runs (scenes v3, 5 seeds) measure 0.71, 53 % and 23 px. Most of that is phi's architecture, not its
    training: s6's phi is the pretraining trunk (resnet10_w16_cifar, stride 8: 3,072 anchors on a 128-px
    scene), and the same trunk randomly initialised already gives 0.61, 35 % and 31 px on 100 v3 128-px
    scenes (a random ResNet-18, stride 32, 192 anchors: 0.35, 6 % and 64 px; Table 11's "random phi of s6's
    trunk" row pretrains on those crops). Ring 0.5
    gave more Poor crops (43 %), 1.5 smaller crops; suppression at IoU 0.4 / containment 0.7 more
    Poor crops, at 0.6 / 0.9 nested crops (22-26 % of pairs)."""

    name = "ours_coarse"
    defaults = {**_SpreadSelection.defaults, "ring": 1.0}

    def check_params(self, params):
        super().check_params(params)
        _check_range(self.name, "ring", params["ring"], 0.0, 100.0)

    def box_scores(self, anchors, shape_index, scores, table):
        H, W = table.shape[-2] - 1, table.shape[-1] - 1
        return ring_contrast(table, anchors, self.params["ring"], H, W)

    # ring_contrast takes a batch of tables: one call per batch, the same numbers as image by image (its
    # arithmetic is element by element). Image by image, select_batch ran 6,981 operators per batch of 64
    # 640x480 images (~100 per image; ours: 318 in all), each a kernel launch on a GPU; batched, 866.
    batch_box_scores = box_scores


@register
class OurZScoreCrop(_SpreadSelection):
    """Size-fair variant of Our-Crop: an anchor's score is its mean objectness standardised among
    the anchors of the same size and ratio in this image (z-score, std floored at 1e-3), so that a
    256-px box exceptional among 256-px boxes ranks with a 32-px box exceptional among 32-px boxes;
    then IoU + containment suppression (see ``_SpreadSelection``).

    Measured as ``ours_coarse`` (100 scenes, random-init phi, anchors 32 .. 256, ResNet-18 / -50):
    the widest spread of sizes, 32/128/156/189 and 32/128/145/183 px, mean objectness 0.35 / 0.41,
    Poor/Coarse/Precise 27/67/5 and 20/72/8 % (again with today's masks, ResNet-18: 0.52 on v1, 0.46 on v3,
    13/69/18 and 21/66/13 %), <= 1 % nested pairs, and 65-69 % of GT objects at
    least half inside some crop (ours: 8-11 %). Its weakness: on a peaky map (few bright blobs on a
    flat background, as a trained phi gives) the small anchors' score distribution has the longest
    tail, so their z-scores win and it returns the smallest anchors again -- hence ``ours_coarse``
    is the recommended variant. Also tried and dropped: the best box per anchor size (nested around
    one peak), mixing z-score and raw mean (small boxes), local maxima of the map (small boxes)."""

    name = "ours_zscore"

    def box_scores(self, anchors, shape_index, scores, table):
        return standardise_per_shape(scores, shape_index, shapes=len(self.params["sizes"]) * len(self.params["ratios"]))


def standardise_per_shape(scores: torch.Tensor, shape_index: torch.Tensor, min_std: float = 1e-3,
                          shapes: int | None = None) -> torch.Tensor:
    """z-score of each box among the boxes of the same anchor shape: [N] -> float64 [N].

    Relies on the anchor layout (location-major, shape-minor), i.e. shape_index = arange(A) repeated;
    ``shapes`` gives A (else read from shape_index, a host sync on a GPU)."""
    A = shapes or (int(shape_index.max()) + 1 if shape_index.numel() else 1)
    s = scores.to(torch.float64).reshape(-1, A)  # [h * w, A]
    z = (s - s.mean(0, keepdim=True)) / s.std(0, unbiased=False, keepdim=True).clamp_min(min_std)
    return z.reshape(-1)


def ring_contrast(table: torch.Tensor, boxes: torch.Tensor, ring: float, height: int, width: int) -> torch.Tensor:
    """Mean inside each box minus the mean of its surrounding ring (the box grown by ``ring`` x its
    size on each side, clipped, minus the box); 0 where no ring is left. table [H+1, W+1], boxes
    [N, 4] -> float64 [N]; or a batch of tables [B, H+1, W+1] sharing the boxes -> [B, N], each row
    equal to the image's own call (element-wise arithmetic only)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    outer = clip_boxes(boxes + ring * torch.stack([-w, -h, w, h], dim=1), width, height).to(boxes.device)
    batch = table if table.ndim == 3 else table[None]
    sums, counts = box_sums(batch, torch.cat([boxes, outer]))  # [B, 2N]
    sums, counts = sums.view(len(batch), 2, -1), counts.view(len(batch), 2, -1)  # [:, 0]: inside, [:, 1]: grown
    inside = sums[:, 0] / counts[:, 0]
    ring_count = counts[:, 1] - counts[:, 0]
    ring_mean = torch.where(ring_count > 0, (sums[:, 1] - sums[:, 0]) / ring_count.clamp_min(1), inside)
    contrast = inside - ring_mean  # [B, N]
    return contrast if table.ndim == 3 else contrast[0]


def suppress(boxes: torch.Tensor, scores: torch.Tensor, n: int, iou: float, containment: float) -> torch.Tensor:
    """Greedy selection of up to n boxes by score; after each pick, drop the boxes whose IoU with it
    exceeds ``iou`` or whose intersection covers more than ``containment`` of the smaller box.
    When that leaves fewer than n boxes (small images: few anchors, all overlapping), the remaining
    places are filled by the IoU rule alone, so a variant returns n boxes whenever ``ours`` (NMS)
    does. Ties go to the lower index. Returns int64 indices in pick order."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    floor = torch.finfo(scores.dtype).min
    keep: list[int] = []

    def overlaps(i: int, use_containment: bool) -> torch.Tensor:
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        out = inter / (area[i] + area - inter) > iou
        if use_containment:
            out |= inter / torch.minimum(area, area[i]).clamp_min(1e-12) > containment
        return out

    for use_containment in (True, False):
        alive = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
        for i in keep:
            alive &= ~overlaps(i, use_containment)
            alive[i] = False
        while len(keep) < n and alive.any():
            i = int(torch.where(alive, scores, torch.full_like(scores, floor)).argmax())
            keep.append(i)
            alive &= ~overlaps(i, use_containment)
            alive[i] = False
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(intersection, IoU, area of a, area of b) of box a[:, p] with box b[:, q] as [B, P, Q] (areas [B, P],
    [B, Q]), with the float arithmetic of ``suppress`` and of torchvision's CPU NMS, element by element
    (a [B, P, 4], b [B, Q, 4])."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter, inter / (area_a[:, :, None] + area_b[:, None, :] - inter), area_a, area_b


def _iou_drops(a: torch.Tensor, b: torch.Tensor, iou: float) -> torch.Tensor:
    """[B, P, Q]: whether box a[:, p] drops box b[:, q] by IoU alone (``_drops``'s first rule, without
    computing the containment it does not need)."""
    return _overlaps(a, b)[1] > iou


def _drops(a: torch.Tensor, b: torch.Tensor, iou: float, containment: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(by IoU, by IoU or containment) [B, P, Q]: whether box a[:, p] drops box b[:, q], with ``suppress``'s
    arithmetic element by element (a [B, P, 4], b [B, Q, 4])."""
    inter, ratio, area_a, area_b = _overlaps(a, b)
    by_iou = ratio > iou  # = _iou_drops(a, b, iou), from the same _overlaps call
    contained = inter / torch.minimum(area_b[:, None, :], area_a[:, :, None]).clamp_min(1e-12) > containment
    return by_iou, by_iou | contained


def _nms_drops(a: torch.Tensor, b: torch.Tensor, iou: float) -> torch.Tensor:
    """[B, P, Q]: whether box a[:, p] suppresses box b[:, q] in torchvision's CPU NMS, which compares the
    float32 IoU with the threshold as a double (an IoU of 0.6f = 0.6000000238 exceeds 0.6 there, not in
    a float32 comparison)."""
    return _overlaps(a, b)[1].double() > iou


def _greedy(alive: torch.Tensor, drop_of, picks: list[torch.Tensor], n: int) -> None:
    """Append up to n - len(picks) greedy picks per image: the first alive candidate in rank order, then
    every candidate it drops is dropped. alive [B, k] bool; ``drop_of(i)``, i [B] candidate indices -> [B, k]
    bool, the candidates candidate i drops (only the picks' rows are computed: n x k, not k x k, per image);
    a pick of -1 means none was left."""
    while len(picks) < n:
        has = alive.any(dim=1)
        first = alive.to(torch.uint8).argmax(dim=1)  # the first True: the best rank, ties to the lower index
        picks.append(torch.where(has, first, torch.full_like(first, -1)))
        alive = alive & ~(drop_of(first) & has[:, None])
        alive = alive.scatter(1, first[:, None], False)


def _rows(window: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """The boxes [B, P, 4] at window indices picks [B, P] (-1 read as 0) of window [B, k, 4]."""
    return window.gather(1, picks.clamp_min(0)[..., None].expand(-1, -1, 4))


def _alive_outside(picks: torch.Tensor, order: torch.Tensor, boxes: torch.Tensor, count: int, drops) -> torch.Tensor:
    """[B]: whether some box outside the window ``order`` [B, k] of ``count`` boxes survives the picks
    (window indices [B, n], -1 for none); ``drops(a, b)`` -> [B, P, Q] is the rule."""
    b = picks.shape[0]
    valid = picks >= 0
    outside = torch.ones(b, count, dtype=torch.bool, device=order.device).scatter_(1, order, False)
    chosen = boxes[order.gather(1, picks.clamp_min(0))]  # [B, n, 4]
    dropped = drops(chosen, boxes[None].expand(b, -1, -1))  # [B, n, N]
    return (outside & ~(dropped & valid[:, :, None]).any(dim=1)).any(dim=1)


def _anchor_picks(order: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Window indices [B, n] (-1 for none) -> indices into all boxes, -1 kept."""
    return torch.where(picks >= 0, order.gather(1, picks.clamp_min(0)), picks)


def nms_batch(boxes: torch.Tensor, scores: torch.Tensor, n: int, iou: float,
              top: int = PRE_NMS_TOP) -> tuple[torch.Tensor, torch.Tensor]:
    """``OurCrop.select`` (torchvision NMS, then the first n) for B images sharing ``boxes`` [N, 4], with
    scores [B, N], on the device: returns (picks int64 [B, n]: box indices in pick order, -1 after the
    last; redo bool [B]). No host synchronisation.

    The ``top`` best boxes per image (a stable sort: ties keep the lower index first, as torchvision's
    CPU NMS orders them), then n vectorised greedy steps, each with the IoU of the pick and the window's
    boxes (``_nms_drops``).
    Greedy NMS decides each box from better-scored boxes alone, so these are the full set's first n
    survivors unless fewer than n survive in the window while a box outside it survives the picks: then
    ``redo`` (``select`` runs NMS on all boxes for that image)."""
    b, count = scores.shape
    k = min(top, count)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]  # [B, k]
    window = boxes[order]  # [B, k, 4]
    picks: list[torch.Tensor] = []
    _greedy(torch.ones(b, k, dtype=torch.bool, device=scores.device),
            lambda i: _nms_drops(_rows(window, i[:, None]), window, iou)[:, 0], picks, n)
    picked = torch.stack(picks, dim=1)  # [B, n] window indices
    redo = torch.zeros(b, dtype=torch.bool, device=scores.device)
    if k < count:
        redo = (picked < 0).any(dim=1) & _alive_outside(picked, order, boxes, count,
                                                        lambda p, q: _nms_drops(p, q, iou))
    return _anchor_picks(order, picked), redo


def suppress_batch(boxes: torch.Tensor, ranks: torch.Tensor, n: int, iou: float, containment: float,
                   top: int = PRE_NMS_TOP) -> tuple[torch.Tensor, torch.Tensor]:
    """``suppress`` for B images that share ``boxes`` [N, 4], with ranks [B, N], on the device: returns
    (picks int64 [B, n]: box indices in pick order, -1 after the last; redo bool [B]), as ``nms_batch``.

    The ``top`` best boxes per image (a stable sort, so ties keep the lower index first, as ``suppress``'s
    argmax does), then n vectorised greedy steps with both rules (IoU and containment of the pick and the
    window's boxes) and, where fewer than n were picked, steps with the IoU rule alone: no host synchronisation.
    Greedy picks depend only on better-ranked boxes, so the window gives the full set's picks unless a
    pass runs out of candidates inside it while a box outside the window would still have been picked;
    such an image is marked ``redo`` (``suppress`` on all its boxes decides)."""
    b, count = ranks.shape
    k = min(top, count)
    order = torch.argsort(ranks, dim=1, descending=True, stable=True)[:, :k]  # [B, k]
    window = boxes[order]  # [B, k, 4]

    def drops_of(i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # window indices [B, P] -> 2 x [B, P, k]
        return _drops(_rows(window, i), window, iou, containment)

    picks: list[torch.Tensor] = []
    _greedy(torch.ones(b, k, dtype=torch.bool, device=ranks.device), lambda i: drops_of(i[:, None])[1][:, 0], picks, n)
    first_phase = torch.stack(picks, dim=1) if picks else torch.zeros(b, 0, dtype=torch.long, device=ranks.device)
    alive = torch.ones(b, k, dtype=torch.bool, device=ranks.device)
    by_iou = _iou_drops(_rows(window, first_phase), window, iou)  # [B, n, k]
    for j, p in enumerate(picks):  # the IoU rule alone around what was kept, as suppress's second pass
        valid, at = p >= 0, p.clamp_min(0)[:, None]
        alive = alive & ~(by_iou[:, j] & valid[:, None])
        alive = alive.scatter(1, at, alive.gather(1, at) & ~valid[:, None])
    picked = _fill(alive, lambda i: _iou_drops(_rows(window, i[:, None]), window, iou)[:, 0], first_phase, n) \
        if n else first_phase
    redo = torch.zeros(b, dtype=torch.bool, device=ranks.device)
    if k < count and n:
        short1, short2 = (first_phase < 0).any(dim=1), (picked < 0).any(dim=1)
        redo = (short1 & _alive_outside(first_phase, order, boxes, count,
                                        lambda p, q: _drops(p, q, iou, containment)[1])) | \
               (short2 & _alive_outside(picked, order, boxes, count, lambda p, q: _iou_drops(p, q, iou)))
    return _anchor_picks(order, picked), redo


def _fill(alive: torch.Tensor, by_iou_of, first_phase: torch.Tensor, n: int) -> torch.Tensor:
    """suppress's second pass: each image's first-pass picks (-1 for none) followed by IoU-only greedy picks
    (``by_iou_of`` as ``_greedy``'s ``drop_of``) into the places left, as [B, n] (-1 where nothing was left)."""
    b = alive.shape[0]
    got = (first_phase >= 0).sum(dim=1)  # [B] picks of the first pass (they come first, no gaps)
    extra: list[torch.Tensor] = []
    _greedy(alive, by_iou_of, extra, n)
    extra_t = torch.stack(extra, dim=1)  # [B, n] candidates of the second pass, in order
    slots = torch.arange(n, device=alive.device)[None, :].expand(b, n)
    from_extra = extra_t.gather(1, (slots - got[:, None]).clamp_min(0))
    return torch.where(slots < got[:, None], first_phase, from_extra)


def _pack(anchors: torch.Tensor, picks: torch.Tensor, kept: torch.Tensor, redo: torch.Tensor) -> torch.Tensor:
    """One float32 [B, n, 7] tensor for the single copy to the host: per pick its box (4), score, whether it
    is a pick (1 / 0), and whether the image must be redone (1 / 0, the same on every row)."""
    b, n = picks.shape
    return torch.cat([anchors[picks.clamp_min(0)], kept.float()[..., None], (picks >= 0).float()[..., None],
                      redo.float()[:, None, None].expand(b, n, 1)], dim=2)


def _stack(images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The uint8 batch [B, 3, H, W]; in pinned memory when it goes to a GPU (torch.stack of pinned images
    returns pageable memory, from which a ``non_blocking`` copy is synchronous)."""
    if device.type != "cuda" or images[0].device.type != "cpu":
        return torch.stack(images)
    out = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=True)
    return torch.stack(images, out=out)


@lru_cache(maxsize=None)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std [1, 3, 1, 1] on a device, made once (a copy to a GPU waits for the host)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)


def _same_size_groups(images: list[torch.Tensor]) -> list[list[int]]:
    """Indices of images grouped by (H, W), groups in order of first appearance."""
    groups = defaultdict(list)
    for i, image in enumerate(images):
        groups[tuple(image.shape[-2:])].append(i)
    return list(groups.values())

