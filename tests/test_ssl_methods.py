"""SSL methods (coarsecrop/ssl): losses against their formulas and against lightly, queues, momentum
updates, DenseCL matching, MAE masking, the build contract, and short trainings whose loss falls."""

import io
import math
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from coarsecrop.data.views import method_views
from coarsecrop.models.heads import byol_predictor, byol_projector, dense_projector, moco_v2_projector
from coarsecrop.models.narrow import build_narrow, resnet_narrow, trunk_channels
from coarsecrop.ssl import METHODS, build_method, hyperparameters
from coarsecrop.ssl.byol import cosine_momentum, regression_loss
from coarsecrop.ssl.common import batch_shuffle, batch_unshuffle, ema_update, enqueue, info_nce
from coarsecrop.ssl.densecl import dense_correspondence, match_dense


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {  # CPU-sized methods: narrow trunks, small heads and queues
    "moco_v2": ("resnet10_w8_cifar", 16, dict(hidden_dim=64, dim=32, queue_size=64)),
    "byol": ("resnet10_w8_cifar", 16, dict(hidden_dim=64, dim=32, predictor_hidden_dim=64)),
    "densecl": ("resnet10_w8_cifar", 16, dict(hidden_dim=64, dim=32, queue_size=64)),
    "mae": ("vit_micro_patch4", 16, dict(decoder_dim=32, decoder_depth=1, decoder_heads=4)),
}


def tiny(name, **extra):
    backbone, size, hyper = TINY[name]
    if name == "mae":
        pytest.importorskip("timm")
    return build_method(name, backbone, size, seed=0, **{**hyper, **extra})


def random_views(method, batch=8, seed=0):
    """A batch of views made by the method's own pipeline from random uint8 images."""
    g = torch.Generator().manual_seed(seed)
    pipe = method_views(method)
    samples = [pipe(torch.randint(0, 256, (3, 24, 28), dtype=torch.uint8, generator=g), seed=seed * 100 + i)
               for i in range(batch)]
    return [torch.stack(v) for v in zip(*samples)]


# ---- InfoNCE and the queue ---------------------------------------------------------------------

def test_info_nce_equals_eq1_on_hand_made_tensors():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    k = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=1)
    queue = F.normalize(torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]), dim=0)  # [D=2, K=3]
    t = 0.2
    expected = []
    for n in range(2):
        pos = math.exp(float(q[n] @ k[n]) / t)
        neg = sum(math.exp(float(q[n] @ queue[:, j]) / t) for j in range(3))
        expected.append(-math.log(pos / (pos + neg)))
    loss, logits = info_nce(q, k, queue, t)
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    assert logits.shape == (2, 4) and logits[0, 0].item() == pytest.approx(float(q[0] @ k[0]) / t)


def test_info_nce_and_queue_match_lightly_ntxent_with_memory_bank():
    lightly_loss = pytest.importorskip("lightly.loss")
    torch.manual_seed(0)
    n, d, size, t = 8, 16, 32, 0.2
    queue = F.normalize(torch.randn(d, size), dim=0)
    ptr = torch.zeros(1, dtype=torch.long)
    criterion = lightly_loss.NTXentLoss(temperature=t, memory_bank_size=(size, d))
    criterion.memory_bank.bank.copy_(queue.T)  # lightly stores [K, D]
    for step in range(6):  # 6 x 8 keys through a 32-key queue: wraps around once
        q_raw, k_raw = torch.randn(n, d, requires_grad=True), torch.randn(n, d)
        ours, _ = info_nce(F.normalize(q_raw, dim=1), F.normalize(k_raw, dim=1), queue, t)
        theirs = criterion(q_raw, k_raw)  # uses the bank, then enqueues k (q requires grad)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        enqueue(queue, ptr, F.normalize(k_raw, dim=1))
        assert torch.allclose(queue.T, criterion.memory_bank.bank, atol=1e-6)
        assert int(ptr) == int(criterion.memory_bank.bank_ptr)


def test_queue_enqueue_order_pointer_and_wrap_around():
    queue, ptr = torch.zeros(2, 5), torch.zeros(1, dtype=torch.long)
    keys = [torch.tensor([[float(i), -float(i)], [float(i) + 0.5, 0.0]]) for i in (1, 2, 3)]  # 2 keys per step
    enqueue(queue, ptr, keys[0])
    assert queue[0].tolist() == [1.0, 1.5, 0, 0, 0] and int(ptr) == 2
    enqueue(queue, ptr, keys[1])
    assert queue[0].tolist() == [1.0, 1.5, 2.0, 2.5, 0] and int(ptr) == 4
    enqueue(queue, ptr, keys[2])  # writes column 4, then wraps to column 0
    assert queue[0].tolist() == [3.5, 1.5, 2.0, 2.5, 3.0] and int(ptr) == 1
    assert queue[1].tolist() == [0.0, 0.0, -2.0, 0.0, -3.0]
    with pytest.raises(ValueError, match="exceed the queue size"):
        enqueue(queue, ptr, torch.zeros(6, 2))


def test_moco_forward_loss_equals_lightly_on_its_own_queries_and_keys():
    lightly_loss = pytest.importorskip("lightly.loss")
    method = tiny("moco_v2")
    views = random_views(method)
    queue_before = method.queue.clone()
    torch.manual_seed(1)
    out = method(views)
    with torch.no_grad():
        q = method.projector(method.backbone(views[0]).mean((2, 3)))
        k = method.momentum_projector(method.momentum_backbone(views[1]).mean((2, 3)))
    criterion = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(64, 32))
    criterion.memory_bank.bank.copy_(queue_before.T)
    assert out["loss"].item() == pytest.approx(criterion(q, k).item(), rel=1e-4)
    assert torch.allclose(method.queue[:, :8].T, F.normalize(k, dim=1), atol=1e-5)  # keys of view 2 enqueued
    assert int(method.queue_ptr) == 8


def test_symmetric_moco_averages_both_directions_and_enqueues_both_keys():
    method = tiny("moco_v2", symmetric=True)
    views = random_views(method)
    queue = method.queue.clone()
    out = method(views)
    with torch.no_grad():
        q = [method.encode_query(v) for v in views]
        k = [method.encode_key(v) for v in views]
    expected = (info_nce(q[0], k[1], queue, 0.2)[0] + info_nce(q[1], k[0], queue, 0.2)[0]) / 2
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert int(method.queue_ptr) == 16


# ---- momentum updates ----------------------------------------------------------------------------

def test_ema_update_is_the_exact_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)


def test_ema_update_matches_lightly_update_momentum():
    utils = pytest.importorskip("lightly.models.utils")
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    theirs = nn.Linear(4, 3)
    theirs.load_state_dict(dict(zip(["weight", "bias"], before)))
    utils.update_momentum(online, theirs, m=0.9)
    assert all(torch.allclose(a, b) for a, b in zip(target.parameters(), theirs.parameters()))


def test_cosine_momentum_schedule_end_points():
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == 1.0 and cosine_momentum(0.99, 1.5) == 1.0


def test_cosine_momentum_matches_lightly_cosine_schedule():
    scheduler = pytest.importorskip("lightly.utils.scheduler")
    for step in range(11):
        assert cosine_momentum(0.99, step / 10) == pytest.approx(scheduler.cosine_schedule(step, 11, 0.99, 1.0))


def test_moco_and_byol_momentum_update_use_their_momentum():
    moco = tiny("moco_v2")
    with torch.no_grad():
        for p in moco.backbone.parameters():
            p.add_(1.0)
    key_before = [p.clone() for p in moco.momentum_backbone.parameters()]
    moco.momentum_update(0.3)
    for k, b, q in zip(moco.momentum_backbone.parameters(), key_before, moco.backbone.parameters()):
        assert torch.allclose(k, 0.999 * b + 0.001 * q, atol=1e-6)
    byol = tiny("byol")
    with torch.no_grad():
        for p in byol.projector.parameters():
            p.add_(1.0)
    before = [p.clone() for p in byol.momentum_projector.parameters()]
    byol.momentum_update(0.0)  # tau = 0.99
    for t, b, o in zip(byol.momentum_projector.parameters(), before, byol.projector.parameters()):
        assert torch.allclose(t, 0.99 * b + 0.01 * o, atol=1e-6)
    after = [p.clone() for p in byol.momentum_projector.parameters()]
    byol.momentum_update(1.0)  # tau = 1: the target stays
    assert all(torch.equal(a, t) for a, t in zip(after, byol.momentum_projector.parameters()))
    assert float(byol.momentum) == 1.0
    assert not any(p.requires_grad for p in byol.momentum_backbone.parameters())


# ---- BYOL -----------------------------------------------------------------------------------------

def test_byol_regression_loss_equals_eq2():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # row 0: cos = 24/25; row 1: cos = 0
    assert regression_loss(p, z).item() == pytest.approx(((2 - 2 * 24 / 25) + 2) / 2)
    unit = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1).mean()
    assert regression_loss(p, z).item() == pytest.approx(unit.item(), rel=1e-6)


def test_byol_regression_loss_matches_lightly_negative_cosine_similarity():
    lightly_loss = pytest.importorskip("lightly.loss")
    torch.manual_seed(0)
    a, b = torch.randn(16, 8), torch.randn(16, 8)
    theirs = lightly_loss.NegativeCosineSimilarity()(a, b).item()
    assert regression_loss(a, b).item() == pytest.approx(2 + 2 * theirs, rel=1e-5)


def test_byol_loss_is_symmetrised_sum_and_target_gets_no_gradient():
    method = tiny("byol")
    views = random_views(method)
    out = method(views)
    with torch.no_grad():
        p = [method.predict(v) for v in views]
        z = [method.target(v) for v in views]
    expected = regression_loss(p[0], z[1]) + regression_loss(p[1], z[0])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    out["loss"].backward()
    assert all(p.grad is None for p in method.momentum_backbone.parameters())
    assert all(p.grad is not None for p in method.predictor.parameters())


# ---- DenseCL --------------------------------------------------------------------------------------

def test_dense_correspondence_recovers_a_known_permutation():
    torch.manual_seed(0)
    b, c, s = 2, 16, 9
    k_feat = F.normalize(torch.randn(b, c, s), dim=1)
    perm = torch.stack([torch.randperm(s) for _ in range(b)])  # query location i = key location perm[i]
    q_feat = torch.gather(k_feat, 2, perm.unsqueeze(1).expand(-1, c, -1))
    q_feat = F.normalize(q_feat + 0.01 * torch.randn_like(q_feat), dim=1)
    assert torch.equal(dense_correspondence(q_feat, k_feat), perm)
    k_grid = torch.randn(b, 4, s)
    matched = match_dense(q_feat, k_feat, k_grid)
    assert torch.equal(matched, torch.gather(k_grid, 2, perm.unsqueeze(1).expand(-1, 4, -1)))


def test_dense_matching_equals_lightly_select_most_similar():
    utils = pytest.importorskip("lightly.models.utils")
    torch.manual_seed(1)
    q_feat, k_feat = F.normalize(torch.randn(2, 16, 9), dim=1), F.normalize(torch.randn(2, 16, 9), dim=1)
    k_grid = torch.randn(2, 4, 9)
    matched = match_dense(q_feat, k_feat, k_grid)
    theirs = utils.select_most_similar(q_feat.transpose(1, 2), k_feat.transpose(1, 2), k_grid.transpose(1, 2))
    assert torch.equal(matched, theirs.transpose(1, 2))


def test_densecl_loss_combines_global_and_dense_infonce():
    method = tiny("densecl")
    views = random_views(method)
    queue, dense_queue = method.queue.clone(), method.dense_queue.clone()
    out = method(views)
    with torch.no_grad():
        q, q_grid, q_feat = method.encode_query(views[0])
        k, k_grid, k_pooled, k_feat = method.encode_key(views[1])
        matched = match_dense(q_feat, k_feat, k_grid)
        global_loss = info_nce(q, k, queue, 0.2)[0]
        dense_loss = info_nce(q_grid.transpose(1, 2).reshape(-1, 32), matched.transpose(1, 2).reshape(-1, 32),
                              dense_queue, 0.2)[0]
    assert out["loss_global"].item() == pytest.approx(global_loss.item(), rel=1e-4)
    assert out["loss_dense"].item() == pytest.approx(dense_loss.item(), rel=1e-4)
    assert out["loss"].item() == pytest.approx(0.5 * global_loss.item() + 0.5 * dense_loss.item(), rel=1e-4)
    assert q_grid.shape == (8, 32, 4)  # 16-px views, total stride 8: a 2 x 2 grid
    assert torch.allclose(method.dense_queue[:, :8].T, k_pooled, atol=1e-5)
    assert torch.allclose(k_pooled.norm(dim=1), torch.ones(8))


# ---- MAE ------------------------------------------------------------------------------------------

def test_mae_masking_keeps_a_quarter_of_the_patches():
    method = tiny("mae")
    x = torch.randn(3, 16, 5)
    kept, mask, ids_restore = method.random_masking(x, 0.75)
    assert kept.shape == (3, 4, 5) and mask.shape == (3, 16)
    assert mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]
    assert torch.equal(ids_restore.sort(dim=1).values, torch.arange(16).expand(3, -1))
    for n in range(3):  # the kept tokens are exactly the unmasked ones
        unmasked = x[n][mask[n] == 0]
        assert sorted(map(tuple, kept[n].tolist())) == sorted(map(tuple, unmasked.tolist()))


def test_mae_patchify_round_trip_and_layout():
    method = tiny("mae")  # patch 4
    imgs = torch.randn(2, 3, 16, 16)
    patches = method.patchify(imgs)
    assert patches.shape == (2, 16, 48)
    assert torch.equal(method.unpatchify(patches), imgs)
    assert torch.equal(patches[0, 1].view(4, 4, 3).permute(2, 0, 1), imgs[0, :, 0:4, 4:8])  # row-major patches


def test_mae_patchify_matches_lightly():
    utils = pytest.importorskip("lightly.models.utils")
    imgs = torch.randn(2, 3, 16, 16)
    assert torch.equal(tiny("mae").patchify(imgs), utils.patchify(imgs, 4))


def test_mae_loss_is_normalised_pixel_mse_on_masked_patches_only():
    method = tiny("mae")
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 16, 16)
    pred = torch.randn(2, 16, 48)
    mask = torch.zeros(2, 16)
    mask[:, :12] = 1
    target = method.patchify(imgs)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = ((pred - target) ** 2).mean(-1)[:, :12].mean()
    assert method.forward_loss(imgs, pred, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    pred[:, 12:] += 100  # kept patches do not count
    assert method.forward_loss(imgs, pred, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mae_uses_fixed_sincos_position_embeddings_and_a_timm_vit():
    timm = pytest.importorskip("timm")
    method = tiny("mae")
    assert not method.backbone.pos_embed.requires_grad and not method.decoder_pos_embed.requires_grad
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=96, depth=4, num_heads=3, num_classes=0)
    assert set(method.backbone.state_dict()) == set(reference.state_dict())
    assert torch.allclose(method.backbone.pos_embed[0, 0], torch.zeros(96))  # class token position
    first_patch = method.backbone.pos_embed[0, 1, :48]  # column 0: sin 0, then cos 0
    assert torch.allclose(first_patch, torch.cat([torch.zeros(24), torch.ones(24)]))


def test_mae_sincos_embedding_matches_lightly():
    utils = pytest.importorskip("lightly.models.utils")
    method = tiny("mae")
    expected = torch.as_tensor(utils.get_2d_sine_cosine_positional_embedding(96, 4, True)).float()
    assert torch.allclose(method.backbone.pos_embed[0], expected, atol=1e-6)


# ---- every method: the contract, training, checkpoints --------------------------------------------

@pytest.mark.parametrize("name", list(METHODS))
def test_a_few_steps_reduce_the_loss(name):
    method = tiny(name)
    views = random_views(method, batch=8)
    params = [p for p in method.parameters() if p.requires_grad]
    if name == "mae":
        optimizer = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95))
    else:
        optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)

    # The queues are reset after every step: trained on one repeated batch, a queue would fill with
    # this batch's own keys and turn the positives into negatives (the queue is tested above).
    queues = {k: v.clone() for k, v in method.named_buffers() if "queue" in k}

    def reset_queues():
        for k, v in queues.items():
            method.get_buffer(k).copy_(v)

    def loss_now():  # the same masks and queues each time, so only the weights differ
        torch.manual_seed(0)
        with torch.no_grad():
            value = method(views)["loss"].item()
        reset_queues()
        return value

    before = loss_now()
    for step in range(12):
        out = method(views)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.momentum_update(step / 12)
        reset_queues()
        assert torch.isfinite(out["loss"])
    assert loss_now() < before


@pytest.mark.parametrize("name", list(METHODS))
def test_contract_views_optimizer_defaults_and_checkpoint(name):
    method = tiny(name)
    views = random_views(method, batch=4)
    assert len(views) == (1 if name == "mae" else 2)
    out = method(views)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert all(not torch.is_tensor(v) or not v.requires_grad for k, v in out.items() if k != "loss")
    defaults = method.optimizer_defaults
    assert defaults["name"] in ("sgd", "lars", "adamw") and defaults["ref_batch"] == 256
    assert {"lr", "weight_decay", "paper_batch", "warmup_epochs", "exclude_bias_and_norm"} <= set(defaults)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    if name in ("moco_v2", "densecl"):
        assert "queue" in state and "queue_ptr" in state and int(state["queue_ptr"]) == 4
    if name != "mae":
        assert any(k.startswith("momentum_backbone.") for k in state)
    other = build_method(name, TINY[name][0], TINY[name][1], seed=1, **TINY[name][2])
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(method.state_dict().values(), other.state_dict().values()))


def test_paper_defaults():
    assert hyperparameters("moco_v2")["queue_size"] == 65536 and hyperparameters("moco_v2")["temperature"] == 0.2
    assert hyperparameters("moco_v2")["momentum"] == 0.999 and hyperparameters("moco_v2")["hidden_dim"] == 2048
    assert hyperparameters("moco_v2")["symmetric"] is False
    assert hyperparameters("byol")["momentum"] == 0.99 and hyperparameters("byol")["hidden_dim"] == 4096
    assert hyperparameters("byol")["dim"] == 256
    assert hyperparameters("densecl")["loss_lambda"] == 0.5
    assert hyperparameters("mae")["mask_ratio"] == 0.75 and hyperparameters("mae")["decoder_dim"] == 512
    assert hyperparameters("mae")["decoder_depth"] == 8 and hyperparameters("mae")["norm_pix_loss"] is True
    trunk = build_narrow("resnet10_w8")
    assert tiny("moco_v2").optimizer_defaults["lr"] == 0.3
    byol = METHODS["byol"](trunk)
    assert byol.projector[0].out_features == 4096 and byol.predictor[-1].out_features == 256
    assert byol.optimizer_defaults["name"] == "lars"


def test_build_method_rejects_bad_names_and_parameters():
    with pytest.raises(ValueError, match="moco_v2, byol, densecl, mae"):
        build_method("simclr", "resnet10_w8", 16)
    with pytest.raises(ValueError, match="unknown hyperparameter.*tau.*valid: .*temperature"):
        build_method("moco_v2", "resnet10_w8", 16, tau=0.2)
    with pytest.raises(ValueError, match="MAE needs a ViT"):
        build_method("mae", "resnet10_w8", 16)
    with pytest.raises(ValueError, match="ViTs are for mae"):
        build_method("byol", "vit_micro_patch8", 16)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_method("byol", "resnet7", 16)
    with pytest.raises(ValueError, match="temperature"):
        build_method("moco_v2", "resnet10_w8", 16, temperature=0.0)
    method = tiny("moco_v2")
    with pytest.raises(ValueError, match="expected 2"):
        method([torch.zeros(2, 3, 16, 16)])
    with pytest.raises(ValueError, match="batch sizes"):
        method([torch.zeros(2, 3, 16, 16), torch.zeros(3, 3, 16, 16)])
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        build_method("mae", "vit_micro_patch8", 20)


def test_build_method_is_seeded_and_leaves_the_callers_rng():
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a = build_method("moco_v2", "resnet10_w8", 16, seed=3, queue_size=16, hidden_dim=16)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_method("moco_v2", "resnet10_w8", 16, seed=3, queue_size=16, hidden_dim=16)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_torchvision_trunks_and_bf16_autocast():
    pytest.importorskip("coarsecrop.models.backbones")
    method = build_method("moco_v2", "resnet18", 32, seed=0, queue_size=16, hidden_dim=32, dim=8)
    assert trunk_channels(method.backbone) == 512 and method.backbone.training
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)])
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert method.queue.dtype == torch.float32


def test_multi_crop_views_are_queries_against_both_global_keys():
    method = tiny("byol", local_views=2)
    views = random_views(method, batch=4)
    assert [v.shape[-1] for v in views] == [16, 16, 8, 8]  # local views: at least 8 px
    out = method(views)
    with torch.no_grad():
        p = [method.predict(v) for v in views]
        z = [method.target(v) for v in views[:2]]
    pairs = [(0, 1), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]
    expected = 2 * sum(regression_loss(p[i], z[j]) for i, j in pairs) / len(pairs)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    moco = tiny("moco_v2", local_views=1)
    assert torch.isfinite(moco(random_views(moco, batch=4))["loss"])


# ---- models -----------------------------------------------------------------------------------------

def test_narrow_resnet_keeps_torchvision_names_and_heads_have_paper_shapes():
    narrow, reference = resnet_narrow(64, (2, 2, 2, 2)), torchvision.models.resnet18()
    ref_state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in narrow.state_dict().items()} == {k: v.shape for k, v in ref_state.items()}
    small = build_narrow("resnet10_w16_cifar")
    assert small(torch.zeros(1, 3, 32, 32)).shape == (1, 128, 4, 4) and trunk_channels(small) == 128
    assert trunk_channels(nn.Sequential(nn.Conv2d(3, 7, 3), nn.ReLU())) == 7
    assert [m.out_features for m in moco_v2_projector(512) if isinstance(m, nn.Linear)] == [2048, 128]
    assert [m.out_features for m in byol_projector(512) if isinstance(m, nn.Linear)] == [4096, 256]
    assert isinstance(byol_projector(512)[1], nn.BatchNorm1d) and byol_predictor()[0].in_features == 256
    assert dense_projector(512)(torch.zeros(1, 512, 3, 3)).shape == (1, 128, 3, 3)
    with pytest.raises(ValueError, match="narrow ResNet name"):
        build_narrow("resnet10")


# ---- shuffle-BN and the queue across 2 gloo processes ----------------------------------------------

def _gloo_worker(rank, world, init_file, results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different permutations drawn: rank 0's is broadcast
    x = torch.arange(4, dtype=torch.float32).view(4, 1) + 10 * rank  # rank 0: 0..3, rank 1: 10..13
    shuffled, idx_unshuffle = batch_shuffle(x)
    restored = batch_unshuffle(shuffled * 2, idx_unshuffle)
    queue, ptr = torch.zeros(1, 10), torch.zeros(1, dtype=torch.long)
    enqueue(queue, ptr, x)
    results.put((rank, shuffled.flatten().tolist(), restored.flatten().tolist(), queue.flatten().tolist(), int(ptr)))
    dist.destroy_process_group()


def test_shuffle_bn_and_enqueue_across_two_gloo_processes():
    import multiprocessing
    ctx = multiprocessing.get_context("fork")  # forked children skip re-importing torch (seconds each)
    with tempfile.TemporaryDirectory() as tmp:
        results = ctx.Queue()
        procs = [ctx.Process(target=_gloo_worker, args=(r, 2, os.path.join(tmp, "init"), results)) for r in range(2)]
        for p in procs:
            p.start()
        got = {}
        try:
            for _ in range(2):
                rank, *values = results.get(timeout=60)
                got[rank] = values
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
    (s0, r0, q0, p0), (s1, r1, q1, p1) = got[0], got[1]
    assert sorted(s0 + s1) == [0, 1, 2, 3, 10, 11, 12, 13] and s0 != [0, 1, 2, 3]  # a global permutation
    assert r0 == [0, 2, 4, 6] and r1 == [20, 22, 24, 26]  # unshuffled back to each rank's own samples
    assert q0 == q1 == [0, 1, 2, 3, 10, 11, 12, 13, 0, 0] and p0 == p1 == 8  # keys of both ranks, rank order
