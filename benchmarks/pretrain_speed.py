"""Pretraining speed: training images/s of each SSL method, ours beside lightly's, on CPU; and on a
GPU (when there is one) ResNet-50 MoCo-v2 at 224 px with data loading included.

    python benchmarks/pretrain_speed.py                     # CPU table (+ GPU section if CUDA)
    python benchmarks/pretrain_speed.py --methods moco_v2 byol --steps 20 --threads 2
    python benchmarks/pretrain_speed.py --gpu-only --gpu-batch 256 --workers 15
    python benchmarks/pretrain_speed.py --whole-run          # a short trainer run vs the model alone

CPU section: a fixed small configuration (default: torchvision ResNet-18 trunk at 64 px, batch 32;
MAE on vit_micro_patch8 at 64 px), paper-default heads and queues, one training step = forward,
backward, optimiser step, momentum update. Our method and lightly's composition of the same
method (built as lightly's examples do: its heads, NTXentLoss with a memory bank,
NegativeCosineSimilarity, update_momentum, select_most_similar, MAE TIMM modules) get the same
trunk weights, the same views and the same optimiser; they run in alternating rounds (who goes
first swaps each round) and the median step time counts, so load on the machine hits both
alike. An image = one sample (its 2 views). A second table times the view pipelines (ours vs
lightly's transforms, one 256 x 300 uint8 image to 224-px views). lightly is optional: without
it only our numbers are printed.

GPU section (only with CUDA): ResNet-50 MoCo-v2, 224-px views, bf16 autocast, channels_last,
SGD; images/s per GPU for (a) the model alone on device tensors, (b) the loader alone (JPEG
decode + our MoCo-v2 views in DataLoader workers), (c) both together, the number that counts;
(b) and (c) twice: with the photometric steps in the workers, and batched on the GPU
(coarsecrop.data.batch_photometric, what the trainer does on CUDA). Then model-only img/s of every
method at paper scale (ResNet-50; MAE on ViT-B/16).

Whole run (only with --whole-run; nothing else then runs): a short real trainer run
(``coarsecrop.train.pretrain``: synthetic scenes, their `gt` crops, MoCo-v2, checkpoints every
epoch, no probe) against the same model's model-only rate on device tensors. The trainer's whole-run
rate counts images from the first step done to the final checkpoint written, epoch ends included;
the ratio whole-run / model-only is checked against 0.85 (PASS / FAIL). Also printed: the same rate
from the end of the first epoch (the first epoch's new shapes, cuDNN autotuning and the loader's
first pass left out), beside the model-only rate, which is timed after warm-up steps too. On CUDA the
defaults are the issue's setting (ResNet-50, 224 px, batch 256, epochs of ~10 steps): 1000 scenes give
~2,780 pseudo-images, 10 steps per epoch, 6 epochs (60 steps: ~10 s of training on an H200). (600
scenes and 4 epochs gave 6 steps per epoch, 24 in all, so the first steps' autotuning and the workers'
start weighed on the whole run.) On CPU a tiny one (it shows the code path; the ratio there measures a
CPU-bound loader, not the GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from coarsecrop.data.views import view_pipeline  # noqa: E402
from coarsecrop.ssl import build_method  # noqa: E402

METHOD_NAMES = ("moco_v2", "byol", "densecl", "mae")


# ---- lightly's versions of the four methods (as in lightly's examples/pytorch/*.py) --------------

def lightly_method(name: str, trunk: nn.Module, image_size: int):
    """lightly's composition of method ``name`` on ``trunk`` (a copy), or None without lightly."""
    try:
        import lightly.loss  # noqa: F401  (is lightly installed?)
    except ImportError:
        return None
    if name == "moco_v2":
        return LightlyMoCo(copy.deepcopy(trunk))
    if name == "byol":
        return LightlyBYOL(copy.deepcopy(trunk))
    if name == "densecl":
        return LightlyDenseCL(copy.deepcopy(trunk))
    return LightlyMAE(copy.deepcopy(trunk))


def trunk_dim(trunk: nn.Module) -> int:
    from coarsecrop.models.narrow import trunk_channels
    return trunk_channels(trunk)


class LightlyMoCo(nn.Module):
    def __init__(self, trunk):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        self.backbone, self.head = trunk, MoCoProjectionHead(trunk_dim(trunk), 2048, 128)
        self.backbone_m, self.head_m = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_m)
        deactivate_requires_grad(self.head_m)
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(65536, 128))

    def forward(self, views):
        q = self.head(self.backbone(views[0]).flatten(2).mean(2))
        with torch.no_grad():
            k = self.head_m(self.backbone_m(views[1]).flatten(2).mean(2))
        return self.criterion(q, k)

    def momentum_update(self, progress):
        from lightly.models.utils import update_momentum
        update_momentum(self.backbone, self.backbone_m, 0.999)
        update_momentum(self.head, self.head_m, 0.999)


class LightlyBYOL(nn.Module):
    def __init__(self, trunk):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        self.backbone = trunk
        self.projection_head = BYOLProjectionHead(trunk_dim(trunk), 4096, 256)
        self.prediction_head = BYOLPredictionHead(256, 4096, 256)
        self.backbone_m, self.projection_head_m = copy.deepcopy(trunk), copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_m)
        deactivate_requires_grad(self.projection_head_m)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views):
        p = [self.prediction_head(self.projection_head(self.backbone(v).flatten(2).mean(2))) for v in views[:2]]
        with torch.no_grad():
            z = [self.projection_head_m(self.backbone_m(v).flatten(2).mean(2)) for v in views[:2]]
        return 0.5 * (self.criterion(p[0], z[1]) + self.criterion(p[1], z[0]))

    def momentum_update(self, progress):
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule
        m = cosine_schedule(int(progress * 1000), 1001, 0.99, 1.0)
        update_momentum(self.backbone, self.backbone_m, m)
        update_momentum(self.projection_head, self.projection_head_m, m)


class LightlyDenseCL(nn.Module):
    """lightly's DenseCL example, with the momentum heads used for the keys (the example reuses the
    online heads there) and its per-location memory bank for the dense branch."""

    def __init__(self, trunk):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import DenseCLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        c = trunk_dim(trunk)
        self.backbone = trunk
        self.head_global, self.head_local = DenseCLProjectionHead(c, 2048, 128), DenseCLProjectionHead(c, 2048, 128)
        self.backbone_m = copy.deepcopy(trunk)
        self.head_global_m, self.head_local_m = copy.deepcopy(self.head_global), copy.deepcopy(self.head_local)
        for m in (self.backbone_m, self.head_global_m, self.head_local_m):
            deactivate_requires_grad(m)
        self.criterion_global = NTXentLoss(temperature=0.2, memory_bank_size=(65536, 128))
        self.criterion_local = NTXentLoss(temperature=0.2, memory_bank_size=(65536, 128))

    @staticmethod
    def encode(backbone, head_global, head_local, x):
        features = backbone(x)
        glob = head_global(features.flatten(2).mean(2))
        features = features.flatten(start_dim=2).permute(0, 2, 1)  # [B, HW, C]
        return features, glob, head_local(features)

    def forward(self, views):
        from lightly.models.utils import select_most_similar
        qf, qg, ql = self.encode(self.backbone, self.head_global, self.head_local, views[0])
        with torch.no_grad():
            kf, kg, kl = self.encode(self.backbone_m, self.head_global_m, self.head_local_m, views[1])
            kl = select_most_similar(qf.detach(), kf, kl)
        loss_local = self.criterion_local(ql.flatten(end_dim=1), kl.flatten(end_dim=1))
        return 0.5 * (self.criterion_global(qg, kg) + loss_local)

    def momentum_update(self, progress):
        from lightly.models.utils import update_momentum
        for a, b in ((self.backbone, self.backbone_m), (self.head_global, self.head_global_m),
                     (self.head_local, self.head_local_m)):
            update_momentum(a, b, 0.999)


class LightlyMAE(nn.Module):
    def __init__(self, vit):
        super().__init__()
        from lightly.models.modules import masked_autoencoder_timm, masked_vision_transformer_timm
        self.patch_size = vit.patch_embed.patch_size[0]
        self.backbone = masked_vision_transformer_timm.MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        with warnings.catch_warnings():  # deprecated in lightly 1.6 but what its MAE example uses
            warnings.simplefilter("ignore", FutureWarning)
            self.decoder = masked_autoencoder_timm.MAEDecoderTIMM(
                num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size, embed_dim=vit.embed_dim,
                decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0,
                proj_drop_rate=0.0, attn_drop_rate=0.0)

    def forward(self, views):
        from lightly.models import utils
        images = views[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(images.shape[0], self.sequence_length),
                                                     mask_ratio=0.75, device=images.device)
        x = self.backbone.encode(images=images, idx_keep=idx_keep)
        x = self.decoder.embed(x)
        x_masked = utils.repeat_token(self.decoder.mask_token, (images.shape[0], self.sequence_length))
        x_masked = utils.set_at_index(x_masked, idx_keep, x.type_as(x_masked))
        x = self.decoder.predict(utils.get_at_index(self.decoder.decode(x_masked), idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
        return F.mse_loss(x, target)

    def momentum_update(self, progress):
        pass


# ---- CPU: ours vs lightly ---------------------------------------------------------------------------

def make_trunk(name: str, backbone: str, size: int) -> nn.Module:
    if name == "mae":
        from coarsecrop.models.vit import build_vit
        return build_vit("vit_micro_patch8", size)
    if backbone.startswith("resnet") and "_w" not in backbone:
        import torchvision
        from coarsecrop.models.backbones import ResNetTrunk
        return ResNetTrunk(getattr(torchvision.models, backbone)(weights=None), backbone)
    from coarsecrop.models.narrow import build_narrow
    return build_narrow(backbone)


def train_step_fn(model: nn.Module, name: str, ours: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "mae":
        opt = torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    else:
        opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)

    def step(views, progress):
        loss = model(views)["loss"] if ours else model(views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.momentum_update(progress)
        return loss
    return step


def cpu_table(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"\nCPU: {args.backbone} (MAE: vit_micro_patch8) at {args.size} px, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"{'method':<10}{'ours img/s':>12}{'lightly img/s':>15}{'ours/lightly':>14}")
    for name in args.methods:
        torch.manual_seed(0)
        trunk = make_trunk(name, args.backbone, args.size)
        ours = build_method(name, copy.deepcopy(trunk), args.size, seed=0)
        theirs = lightly_method(name, trunk, args.size)
        if theirs is not None and name != "mae":  # same trunk weights
            theirs.backbone.load_state_dict(ours.backbone.state_dict())
        ours.train()
        n_views = 1 if name == "mae" else 2
        views = [torch.randn(args.batch, 3, args.size, args.size) for _ in range(n_views)]
        runners = {"ours": train_step_fn(ours, name, True)}
        if theirs is not None:
            theirs.train()
            runners["lightly"] = train_step_fn(theirs, name, False)
        times = {k: [] for k in runners}
        for k, run in runners.items():  # warm-up
            for _ in range(args.warmup):
                run(views, 0.0)
        rounds = max(1, args.steps // args.round)
        for r in range(rounds):  # alternate (and swap who goes first), so load on the machine hits both
            for k, run in (list(runners.items()) if r % 2 == 0 else list(runners.items())[::-1]):
                for i in range(args.round):
                    t0 = time.perf_counter()
                    run(views, (r * args.round + i) / max(args.steps, 1))
                    times[k].append(time.perf_counter() - t0)
        ours_ips = args.batch / statistics.median(times["ours"])
        if "lightly" in times:
            lightly_ips = args.batch / statistics.median(times["lightly"])
            print(f"{name:<10}{ours_ips:>12.1f}{lightly_ips:>15.1f}{ours_ips / lightly_ips:>14.2f}")
        else:
            print(f"{name:<10}{ours_ips:>12.1f}{'(no lightly)':>15}{'':>14}")


def view_table(args) -> None:
    torch.set_num_threads(1)  # as in a DataLoader worker
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 256, 300), dtype=torch.uint8, generator=g)
    try:
        from lightly.transforms import BYOLTransform, MAETransform, MoCoV2Transform
        from PIL import Image
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        theirs = {"moco_v2": MoCoV2Transform(input_size=224), "byol": BYOLTransform(),
                  "mae": MAETransform(input_size=224)}
    except ImportError:
        theirs, pil = {}, None
    print("\nView pipelines, one 256 x 300 image -> 224-px views, 1 thread (ours: uint8 tensor in; lightly: PIL in)")
    print(f"{'pipeline':<10}{'ours img/s':>12}{'lightly img/s':>15}{'ours/lightly':>14}")
    for name in ("moco_v2", "byol", "mae"):
        ours = view_pipeline(name, 224)
        calls = {"ours": lambda: ours(image)}
        if name in theirs:
            calls["lightly"] = lambda: theirs[name](pil)
        rates = alternating_rates(calls, args.view_iters)
        if "lightly" in rates:
            print(f"{name:<10}{rates['ours']:>12.1f}{rates['lightly']:>15.1f}{rates['ours'] / rates['lightly']:>14.2f}")
        else:
            print(f"{name:<10}{rates['ours']:>12.1f}")


def alternating_rates(calls: dict, iters: int, chunk: int = 5) -> dict:
    """Calls per second of each function: chunks of calls in alternating (swapped) order, median time."""
    times = {k: [] for k in calls}
    for fn in calls.values():
        fn()
    for r in range(max(1, iters // chunk)):
        for k, fn in (list(calls.items()) if r % 2 == 0 else list(calls.items())[::-1]):
            for _ in range(chunk):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: 1.0 / statistics.median(v) for k, v in times.items()}


# ---- GPU: ResNet-50 MoCo-v2 with data loading ---------------------------------------------------------

class JpegViews(torch.utils.data.Dataset):
    """N in-memory JPEGs (smooth synthetic scenes), decoded and turned into MoCo-v2 views per sample."""

    def __init__(self, n: int, size: int, view_size: int, photometric_on: str = "worker"):
        from torchvision.io import encode_jpeg
        g = torch.Generator().manual_seed(0)
        self.jpegs = []
        for _ in range(n):
            low = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8).float()
            img = F.interpolate(low[None], size=(size, size * 4 // 3), mode="bicubic", align_corners=False)[0]
            img = (img + torch.randn(img.shape, generator=g) * 12).clamp(0, 255).to(torch.uint8)
            self.jpegs.append(encode_jpeg(img, quality=90))
        self.views = view_pipeline("moco_v2", view_size, photometric_on=photometric_on)

    def __len__(self):
        return 10 ** 9  # sampled with replacement

    def __getitem__(self, i):
        from torchvision.io import decode_jpeg
        return self.views(decode_jpeg(self.jpegs[i % len(self.jpegs)]))


def gpu_section(args) -> None:
    device = torch.device(args.gpu_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("\nGPU: no CUDA device here; section skipped")
        return
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    method = build_method("moco_v2", "resnet50", 224, seed=0).to(device).to(memory_format=torch.channels_last)
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.3 * args.gpu_batch / 256, momentum=0.9, weight_decay=1e-4)

    def step(views):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = method(views)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.momentum_update(0.0)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (dry run)"
    print(f"\nGPU: {name}, ResNet-50 MoCo-v2, 224 px, batch {args.gpu_batch}, bf16 autocast, channels_last")
    fixed = [torch.randn(args.gpu_batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
             for _ in range(2)]
    for _ in range(args.gpu_warmup):
        step(fixed)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.gpu_steps):
        step(fixed)
    sync()
    model_ips = args.gpu_steps * args.gpu_batch / (time.perf_counter() - t0)
    print(f"  (a) model only, device tensors:        {model_ips:8.0f} img/s")

    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    from coarsecrop.data.batch_photometric import batch_photometric
    for photometric_on in ("worker", "device"):
        # Steady state: the first workers * prefetch + 3 batches (the buffer the workers filled while
        # idle) are pulled untimed, then args.gpu_steps batches are timed.
        loader = torch.utils.data.DataLoader(
            JpegViews(512, 256, 224, photometric_on), batch_size=args.gpu_batch,
            sampler=torch.utils.data.RandomSampler(range(10 ** 6), replacement=True, num_samples=10 ** 7),
            num_workers=workers, pin_memory=device.type == "cuda", drop_last=True, persistent_workers=True,
            prefetch_factor=2)
        buffered = workers * 2 + 3
        finish = [m.to(device) for m in batch_photometric("moco_v2", 224)] if photometric_on == "device" else None
        it = iter(loader)
        for _ in range(buffered):
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.gpu_steps):
            next(it)
        loader_ips = args.gpu_steps * args.gpu_batch / (time.perf_counter() - t0)

        def to_device(views):
            views = [v.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last) for v in views]
            return [f(v) for f, v in zip(finish, views)] if finish else views
        for _ in range(buffered):
            step(to_device(next(it)))
        sync()
        t0 = time.perf_counter()
        for _ in range(args.gpu_steps):
            step(to_device(next(it)))
        sync()
        total_ips = args.gpu_steps * args.gpu_batch / (time.perf_counter() - t0)
        where = "in the workers" if photometric_on == "worker" else "batched on the GPU"
        print(f"  photometric steps {where}:")
        print(f"    (b) loader only, {workers:2d} workers:           {loader_ips:8.0f} img/s")
        print(f"    (c) training with data loading:       {total_ips:8.0f} img/s per GPU "
              f"({'loader' if loader_ips < model_ips else 'model'}-bound; target 1,000 on an H100, "
              f"published MoCo-v2 anchor ~168 on a V100)", flush=True)
        del loader, it
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB")
    del method, opt
    gpu_methods_table(args, device, sync)


def gpu_methods_table(args, device: torch.device, sync) -> None:
    """Model-only img/s (device tensors, bf16 autocast, channels_last) for each method at paper scale:
    ResNet-50 at 224 px for MoCo-v2 / BYOL / DenseCL, ViT-B/16 at 224 px for MAE."""
    print(f"\nGPU, model only, batch {args.gpu_batch}, 224 px (one training step = forward, backward, "
          f"optimiser step, momentum update)")
    for name in args.gpu_methods:
        trunk = "vit_base_patch16" if name == "mae" else "resnet50"
        method = build_method(name, trunk, 224, seed=0).to(device).to(memory_format=torch.channels_last)
        method.train()
        opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        views = [torch.randn(args.gpu_batch, 3, 224, 224, device=device).contiguous(
            memory_format=torch.channels_last) for _ in range(1 if name == "mae" else 2)]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = method(views)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if hasattr(method, "momentum_update"):
                method.momentum_update(0.0)
            return loss.detach()

        for _ in range(args.gpu_warmup):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.gpu_steps):
            loss = step()
        sync()
        ips = args.gpu_steps * args.gpu_batch / (time.perf_counter() - t0)
        mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
        print(f"  {name:8s} {trunk:17s} {ips:8.0f} img/s   loss {float(loss):.3f}   peak {mem:.1f} GiB", flush=True)
        del method, opt, views
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---- whole run: the trainer's whole-run rate against the model alone ---------------------------------

WHOLE_RUN_TARGET = 0.85
RUN_DEFAULTS = {"cuda": dict(backbone="resnet50", size=224, batch=256, scenes=1000, scene_size=256, epochs=6),
                "cpu": dict(backbone="resnet10_w8", size=32, batch=16, scenes=24, scene_size=96, epochs=3)}


def model_only_rate(backbone: str, size: int, batch: int, device: torch.device, steps: int, warmup: int) -> float:
    """img/s of MoCo-v2 training steps on device tensors (bf16 autocast and channels_last on CUDA), as the
    trainer builds it (paper-default heads and queue, SGD), no data loading."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    method = build_method("moco_v2", backbone, size, seed=0).to(device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    method = method.to(memory_format=fmt)
    method.train()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.03, momentum=0.9,
                          weight_decay=1e-4)
    views = [torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt) for _ in range(2)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step():
        with autocast:
            loss = method(views)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.momentum_update(0.0)

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - t0)


def whole_run(args) -> bool:
    """Print the trainer's whole-run and steady rates beside the model-only rate; True when the ratio passes."""
    from coarsecrop.crops.job import run_crop_job
    from coarsecrop.data.synthetic import write_scenes
    from coarsecrop.train import make_params, pretrain

    device = torch.device(args.run_device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = {**RUN_DEFAULTS["cuda" if device.type == "cuda" else "cpu"],
           **{k: v for k, v in dict(backbone=args.run_backbone, size=args.run_size, batch=args.run_batch,
                                    scenes=args.run_scenes, epochs=args.run_epochs).items() if v is not None}}
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_scenes(root / "scenes", num_images=cfg["scenes"], seed=0, size=cfg["scene_size"], progress=False)
        run_crop_job(root / "scenes", split="train", out=root / "gt", strategy="gt", n=5, workers=0,
                     progress=False, device="cpu")
        params = make_params(dict(method="moco_v2", backbone=cfg["backbone"], image_size=cfg["size"],
                                  batch_size=cfg["batch"], epochs=cfg["epochs"], workers=workers,
                                  threads=args.threads, monitor="none", log_every=5, progress=False,
                                  device=str(device), manifest=str(root / "gt"), out=str(root / "run")))
        summary = pretrain(params)
    model_ips = model_only_rate(cfg["backbone"], cfg["size"], cfg["batch"], device, args.gpu_steps, args.gpu_warmup)
    ratio = summary["run_images_per_s"] / model_ips
    verdict = "PASS" if ratio >= WHOLE_RUN_TARGET else "FAIL"
    r = summary["resolved"]
    print(f"\nWhole run: MoCo-v2 {cfg['backbone']} at {cfg['size']} px, batch {cfg['batch']}, on {device}, "
          f"{cfg['scenes']} scenes ({r['num_samples']} pseudo-images), {cfg['epochs']} epochs of "
          f"{r['steps_per_epoch']} steps, loader workers {workers}, a checkpoint every epoch")
    rows = [(f"model only ({args.gpu_steps} steps after {args.gpu_warmup} warm-up)", model_ips, ""),
            ("trainer, steady (median log window)", summary["steady_images_per_s"], ""),
            (f"trainer, whole run ({summary['run_images']} images)", summary["run_images_per_s"],
             "  (first step done to final checkpoint written)"),
            (f"trainer, after the first epoch ({summary['after_epoch_images']} images)",
             summary["after_epoch_images_per_s"], "  (first epoch's end to final checkpoint written)")]
    for label, ips, note in rows:
        print(f"  {label:<44}{ips or float('nan'):8.0f} img/s{note}")
    print(f"  whole run / model only: {ratio:.2f} (target >= {WHOLE_RUN_TARGET}): {verdict}", flush=True)
    return ratio >= WHOLE_RUN_TARGET


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    parser.add_argument("--backbone", default="resnet18", help="resnet18/resnet50 or a narrow name, e.g. resnet10_w16")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--round", type=int, default=2, help="steps per alternation round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--view-iters", type=int, default=60)
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--gpu-warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: CPUs - 1)")
    parser.add_argument("--gpu-methods", nargs="*", default=list(METHOD_NAMES), choices=METHOD_NAMES,
                        help="methods of the GPU model-only table (none: skip it)")
    parser.add_argument("--gpu-device", default="cuda", help="'cpu' dry-runs the GPU section's code")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cpu-only", action="store_true")
    group.add_argument("--gpu-only", action="store_true")
    group.add_argument("--whole-run", action="store_true",
                       help="only: a short trainer run's whole-run rate vs the model-only rate (exit 1 on FAIL)")
    parser.add_argument("--run-device", default=None, help="whole run: cuda (default when present) or cpu")
    parser.add_argument("--run-backbone", default=None, help="whole run: trunk (cuda: resnet50, cpu: resnet10_w8)")
    parser.add_argument("--run-size", type=int, default=None, help="whole run: view size (cuda: 224, cpu: 32)")
    parser.add_argument("--run-batch", type=int, default=None, help="whole run: batch (cuda: 256, cpu: 16)")
    parser.add_argument("--run-scenes", type=int, default=None, help="whole run: synthetic scenes (cuda: 1000, cpu: 24)")
    parser.add_argument("--run-epochs", type=int, default=None, help="whole run: epochs (cuda: 6, cpu: 3)")
    args = parser.parse_args(argv)
    if args.whole_run:
        sys.exit(0 if whole_run(args) else 1)
    if not args.gpu_only:
        cpu_table(args)
        view_table(args)
    if not args.cpu_only:
        gpu_section(args)


if __name__ == "__main__":
    main()
