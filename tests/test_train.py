"""The pretraining loop (coarsecrop.train): parameters, exact resume, SIGTERM, DDP on CPU, export as phi.

Everything runs on tiny synthetic scenes (64 px) with a narrow ResNet at 16-px views and one torch
thread, so a training step takes milliseconds."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from coarsecrop.train import TrainingDiverged, load_pretrain_params, make_params, pretrain
from coarsecrop.train.checkpoint import load_checkpoint
from coarsecrop.train.optim import LARS, CosineSchedule, build_optimizer, resolve_optimizer, scaled_lr
from coarsecrop.train.sampler import GlobalBatchSampler

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(method="moco_v2", backbone="resnet10_w8", image_size=16, method_params={"queue_size": 64},
            epochs=2, batch_size=8, workers=0, threads=1, monitor="none", log_every=1, progress=False,
            device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """16 synthetic scenes (train / val splits) and the `gt` crop manifest of the train split."""
    from coarsecrop.crops.job import run_crop_job
    from coarsecrop.data.synthetic import write_scenes

    root = tmp_path_factory.mktemp("pretrain")
    write_scenes(root / "scenes", num_images=16, seed=0, size=64, progress=False)
    run_crop_job(root / "scenes", split="train", out=root / "gt", strategy="gt", n=5, workers=0,
                 progress=False, device="cpu")
    return {"root": root, "scenes": root / "scenes", "manifest": str(root / "gt")}


def params(data, out, **changes):
    return make_params({**TINY, "manifest": data["manifest"], "out": str(out), **changes})


def losses(out) -> dict[int, float]:
    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "step"}


def final_weights(out) -> dict:
    return load_checkpoint(Path(out) / "checkpoint.pt")["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """An uninterrupted tiny run (2 epochs) that the resume tests compare against."""
    out = tmp_path_factory.mktemp("reference")
    summary = pretrain(params(data, out))
    assert summary["step"] == summary["total_steps"] > 4 and summary["interrupted"] is None
    return out


# ---------------------------------------------------------------- parameters fail at once

def test_unknown_key_names_the_file_and_lists_valid_keys(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, "manifest": data["manifest"], "epocs": 3}))
    with pytest.raises(ValueError, match="epocs") as err:
        load_pretrain_params(path)
    assert str(path) in str(err.value) and "epochs" in str(err.value) and "valid keys" in str(err.value)
    with pytest.raises(ValueError, match="command-line override.*bach_size"):
        load_pretrain_params(None, [f"manifest={data['manifest']}", "bach_size=8"])


def test_wrong_type_and_unknown_choices_fail(data, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        make_params({**TINY, "manifest": data["manifest"], "batch_size": "64"})
    with pytest.raises(ValueError, match=r"lr must be > 0 .*got -1.0"):
        make_params({**TINY, "manifest": data["manifest"], "lr": -1.0})
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        make_params({**TINY, "manifest": data["manifest"], "weight_decay": -0.1})
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="out .*afile is a file"):
        make_params({**TINY, "manifest": data["manifest"], "out": str(tmp_path / "afile")})
    with pytest.raises(ValueError, match=r"method_params: moco_v2's queue_size = 'abc': got str \(expected int\)"):
        pretrain(params(data, tmp_path / "q", method_params={"queue_size": "abc"}))
    # a queue that cannot hold one step's keys fails before training, naming the numbers (symmetric: 2 per image)
    with pytest.raises(ValueError, match=r"queue_size 12 is smaller than the 16 keys .*batch_size 8 x 2 per image"):
        pretrain(params(data, tmp_path / "q2", method_params={"queue_size": 12, "symmetric": True}))
    with pytest.raises(ValueError, match=r"queue_size 4 is smaller than the 8 keys .*batch_size 8 x 1 per image"):
        pretrain(params(data, tmp_path / "q3", method="densecl", method_params={"queue_size": 4}))
    assert not (tmp_path / "q2" / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="unknown method 'simclr'.*byol.*moco_v2"):
        make_params({**TINY, "manifest": data["manifest"], "method": "simclr"})
    with pytest.raises(ValueError, match="unknown optimizer 'adam'.*lars"):
        make_params({**TINY, "manifest": data["manifest"], "optimizer": "adam"})
    with pytest.raises(ValueError, match="manifest is required"):
        make_params(TINY)
    with pytest.raises(ValueError, match="unknown photometric_on 'gpu'.*device"):
        make_params({**TINY, "manifest": data["manifest"], "photometric_on": "gpu"})


def test_photometric_steps_on_the_device_train_and_are_recorded(data, reference, tmp_path):
    """The GPU loader path (uint8 geometry from the workers, BatchPhotometric on the device) runs on CPU too."""
    out = tmp_path / "device_photometric"
    pretrain(params(data, out, photometric_on="device", stop_at_step=3))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["resolved"]["photometric_on"] == "device"
    assert all(math.isfinite(r["loss"]) for r in lines if r["kind"] == "step")
    first = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert first[0]["resolved"]["photometric_on"] == "worker"  # auto on CPU


def test_cli_reports_bad_parameters(tmp_path, capsys, data):
    from coarsecrop.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, "manifest": data["manifest"]}))
    assert main(["pretrain", "--params", str(path), "method=simclr"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["pretrain", "--params", str(path), "--resume", "method=simclr"]) == 2  # an override after a flag
    assert "unknown method" in capsys.readouterr().err
    assert main(["pretrain", "--params", str(tmp_path / "missing.yaml")]) == 2


def test_a_float_in_exponent_form_is_a_float_and_an_error_names_where_the_value_came_from(tmp_path, data):
    """PyYAML reads ``1e-3`` as a string (YAML 1.1); parameters read it as the float it is, in a file and on
    the command line."""
    path = tmp_path / "run.yaml"
    path.write_text(f"manifest: {data['manifest']}\nlr: 1e-3\nweight_decay: 5E-4\n")
    assert load_pretrain_params(path).lr == 0.001 and load_pretrain_params(path).weight_decay == 0.0005
    assert load_pretrain_params(path, ["lr=2e-2"]).lr == 0.02
    with pytest.raises(ValueError, match=r"run\.yaml with the command-line override\(s\) lr: parameter 'lr' = 'fast'"):
        load_pretrain_params(path, ["lr=fast"])


def test_batch_not_divisible_by_world_size_fails_before_anything_starts(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node=3 would set it
    with pytest.raises(ValueError, match="batch_size 8 .* does not divide by the world size 3"):
        pretrain(params(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="does not divide"):
        GlobalBatchSampler(100, 8, rank=0, world_size=3)


def test_too_few_pseudo_images_for_one_batch(data, tmp_path):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        pretrain(params(data, tmp_path / "run", batch_size=4096, method_params={"queue_size": 4096}))


# ---------------------------------------------------------------- schedule, optimisers, sampler

def test_linear_lr_scaling_and_cosine_with_warmup():
    assert scaled_lr(0.3, 512, 256) == pytest.approx(0.6)
    assert scaled_lr(0.3, 512, 256, "none") == 0.3
    s = CosineSchedule(1.0, total_steps=110, warmup_steps=10, min_lr=0.0)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5) and s(110) == pytest.approx(0.0)
    assert all(s(k) >= s(k + 1) for k in range(10, 110))


def test_another_optimizer_than_the_methods_takes_none_of_its_settings(data):
    """moco_v2's lr 0.3 and weight decay 1e-4 are SGD's: with optimizer=adamw they must be given, and biases
    and norms follow AdamW's rule (excluded from decay), not SGD's; the method's warm-up stays."""
    sgd = {"name": "sgd", "lr": 0.3, "weight_decay": 1e-4, "momentum": 0.9, "warmup_epochs": 2.0,
           "exclude_bias_and_norm": False}
    with pytest.raises(ValueError, match="optimizer=adamw is not the method's \\(sgd\\).*give lr=... and weight_decay=..."):
        resolve_optimizer(params(data, "x", optimizer="adamw"), sgd)
    cfg = resolve_optimizer(params(data, "x", optimizer="adamw", lr=1e-3, weight_decay=0.05), sgd)
    assert (cfg["optimizer"], cfg["base_lr"], cfg["weight_decay"]) == ("adamw", 1e-3, 0.05)
    assert cfg["exclude_bias_and_norm"] and cfg["warmup_epochs"] == 2.0
    lars = {"name": "lars", "lr": 1.0, "weight_decay": 1e-5, "exclude_bias_and_norm": True, "trust_coefficient": 0.001}
    assert not resolve_optimizer(params(data, "x", optimizer="sgd", lr=0.1, weight_decay=1e-4), lars)["exclude_bias_and_norm"]
    assert resolve_optimizer(params(data, "x"), sgd)["base_lr"] == 0.3  # the method's own: its settings


def test_lars_skips_biases_and_norms_and_scales_by_trust_ratio():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = build_optimizer(model, "lars", lr=1.0, weight_decay=0.1, momentum=0.0, trust_coefficient=0.01)
    assert isinstance(opt, LARS)
    groups = {len(g["params"]): g for g in opt.param_groups}
    assert groups[1]["lars"] and groups[1]["weight_decay"] == 0.1  # the weight matrix
    assert not groups[3]["lars"] and groups[3]["weight_decay"] == 0.0  # bias, BN weight, BN bias
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    model(torch.randn(8, 4)).pow(2).sum().backward()
    gw, gb = model[0].weight.grad.clone(), model[0].bias.grad.clone()
    opt.step()
    update = gw + 0.1 * w0
    expected = w0 - 0.01 * w0.norm() / update.norm() * update
    assert torch.allclose(model[0].weight, expected, atol=1e-6)
    assert torch.allclose(model[0].bias, b0 - gb, atol=1e-6)  # plain SGD step, no decay


def test_sampler_order_is_independent_of_world_size_and_resumable():
    one = list(GlobalBatchSampler(50, 8, seed=1))
    two = [GlobalBatchSampler(50, 8, rank=r, world_size=2, seed=1) for r in range(2)]
    both = list(zip(*(list(s) for s in two)))
    assert len(one) == 6 and [a + b for a, b in both] == one  # the same global batches, split in two
    late = GlobalBatchSampler(50, 8, seed=1)
    late.set_epoch(0, start_step=4)
    assert list(late) == one[4:]
    late.set_epoch(1)
    assert list(late) != one and all(e == 1 for batch in late for e, _ in batch)


def test_one_iteration_through_epochs_gives_the_per_epoch_batches():
    """The trainer takes one loader iterator for the whole run: the same batches as one per epoch."""
    per_epoch = []
    for epoch in range(3):
        sampler = GlobalBatchSampler(50, 8, seed=1)
        sampler.set_epoch(epoch, start_step=2 if epoch == 0 else 0)
        per_epoch += list(sampler)
    through = GlobalBatchSampler(50, 8, seed=1)
    through.set_epoch(0, start_step=2, through=3)
    assert len(through) == len(per_epoch) == 3 * 6 - 2 and list(through) == per_epoch
    # persistent workers prefetching across the epoch ends deliver them in the same order
    loader = torch.utils.data.DataLoader(_Indexed(), batch_sampler=through, num_workers=2,
                                         persistent_workers=True, prefetch_factor=4,
                                         collate_fn=lambda items: [index for _, index in items])
    assert list(loader) == [[index for _, index in batch] for batch in per_epoch]
    with pytest.raises(ValueError, match="through=1 must come after epoch 1"):
        through.set_epoch(1, through=1)


class _Indexed(torch.utils.data.Dataset):
    def __len__(self):
        return 50

    def __getitem__(self, item):  # (epoch, index) -> the item itself, as the pseudo-image set takes it
        return item


# ---------------------------------------------------------------- training and resume

def test_run_writes_checkpoint_backbone_metrics(reference):
    ckpt = torch.load(reference / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == ckpt["resolved"]["total_steps"] and ckpt["epoch"] == 2
    assert ckpt["params"]["backbone"] == "resnet10_w8" and ckpt["resolved"]["world_size"] == 1
    assert ckpt["resolved"]["lr"] == pytest.approx(0.3 * 8 / 256)  # linear scaling recorded
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"][0])
    assert {"model", "optimizer", "schedule", "scaler", "sampler", "monitor"} <= set(ckpt)
    trunk = torch.load(reference / "backbone.pt", weights_only=True)
    assert "conv1.weight" in trunk and "layer4.0.conv1.weight" in trunk and not any(k.startswith("fc.") for k in trunk)
    from coarsecrop.models.backbones import build_backbone

    phi = build_backbone("resnet10_w8", checkpoint=reference / "backbone.pt")  # a narrow trunk is phi too
    assert all(torch.equal(phi.state_dict()[k], v) for k, v in trunk.items())
    lines = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in lines if r["kind"] == "step")
    assert {"step", "epoch", "loss", "lr", "momentum", "images_per_s"} <= set(step)
    assert lines[-1]["kind"] == "end" and lines[-1]["ranks_in_sync"]


def epoch_lines(text: str) -> dict[int, float]:
    """{epoch: mean loss} of the trainer's epoch lines ("epoch 1/2 step 6/12 loss 6.8345 ...")."""
    return {int(line.split()[1].split("/")[0]): float(line.split(" loss ")[1].split()[0])
            for line in text.splitlines() if line.startswith("epoch ")}


@pytest.mark.parametrize("stop", ["inside an epoch", "on an epoch's last step"])
def test_resume_gives_exactly_the_uninterrupted_run(data, reference, tmp_path, capsys, stop):
    spe = load_checkpoint(reference / "checkpoint.pt")["resolved"]["steps_per_epoch"]
    at = 3 if stop == "inside an epoch" else spe
    out = tmp_path / "resumed"
    first = pretrain(params(data, out, stop_at_step=at))
    assert first["interrupted"] == "stop_at_step" and first["step"] == at
    stopped = load_checkpoint(out / "checkpoint.pt")
    assert stopped["step"] == at and stopped["epoch"] == at // spe  # the epochs whose end has run
    second = pretrain(params(data, out, resume=True))
    assert second["step"] == second["total_steps"]
    want, got = losses(reference), losses(out)
    assert got == want  # every step's loss, before and after the resume, bit for bit
    assert_same_weights(final_weights(out), final_weights(reference))
    # each epoch's line, printed once, averages all of its steps, those before the stop too
    per_epoch = {e + 1: sum(want[s] for s in range(e * spe + 1, (e + 1) * spe + 1)) / spe for e in range(2)}
    printed = epoch_lines(capsys.readouterr().err)
    assert printed.keys() == per_epoch.keys()
    assert all(printed[e] == pytest.approx(per_epoch[e], abs=1e-4) for e in per_epoch)


def test_a_stop_on_an_epochs_last_step_ends_the_epoch_first_and_a_stop_on_the_last_step_completes(data, reference,
                                                                                                      tmp_path):
    spe = load_checkpoint(reference / "checkpoint.pt")["resolved"]["steps_per_epoch"]
    out = tmp_path / "probe"
    first = pretrain(params(data, out, monitor="knn", stop_at_step=spe))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "monitor"] == [1]  # the epoch's probe before the stop
    pretrain(params(data, out, monitor="knn", resume=True))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "monitor"] == [1, 2]
    done = pretrain(params(data, tmp_path / "last", stop_at_step=first["total_steps"]))
    assert done["interrupted"] is None and done["step"] == done["total_steps"]


def test_resume_refuses_a_manifest_rewritten_since_the_run_started(data, tmp_path):
    from coarsecrop.crops.job import run_crop_job

    manifest = tmp_path / "manifest"
    shutil.copytree(data["manifest"], manifest)
    pretrain(params(data, tmp_path / "run", manifest=str(manifest), stop_at_step=2))
    shutil.rmtree(manifest)
    run_crop_job(data["scenes"], split="train", out=manifest, strategy="grid", n=3, workers=0, progress=False,
                 device="cpu")
    with pytest.raises(ValueError, match=r"(?s)the data differ from the run's.*num_samples: \d+ in the checkpoint, "
                                         r"\d+ now.*manifest .*changed since the run started"):
        pretrain(params(data, tmp_path / "run", manifest=str(manifest), resume=True))


def test_resuming_on_another_world_size_says_what_differs(data, tmp_path, capsys):
    out = tmp_path / "ws"
    pretrain(params(data, out, stop_at_step=2))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    ckpt["resolved"]["world_size"] = 2  # as if torchrun --nproc_per_node=2 had started it
    torch.save(ckpt, out / "checkpoint.pt")
    pretrain(params(data, out, resume=True))
    assert "resuming on 1 process(es) a run that started on 2" in capsys.readouterr().err
    out = tmp_path / "threads"  # a CPU run's float sums depend on torch's thread count
    pretrain(params(data, out, stop_at_step=2))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["resolved"]["threads"] == 1
    ckpt["resolved"]["threads"] = 4  # as if started with OMP_NUM_THREADS=4
    torch.save(ckpt, out / "checkpoint.pt")
    (out / "checkpoint.pt.tmp.node7.4242").write_bytes(b"half a checkpoint of a killed writer")
    pretrain(params(data, out, resume=True))
    assert not list(out.glob("*.tmp.*"))  # the resume removed it
    assert "resuming on 1 torch thread(s) a CPU run that started on 4" in capsys.readouterr().err


def test_a_metrics_line_cut_off_by_a_crash_is_dropped_on_resume(data, reference, tmp_path, capsys):
    out = tmp_path / "cut"
    pretrain(params(data, out, stop_at_step=3))
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "step", "st')  # a SIGKILL in the middle of a write
    pretrain(params(data, out, resume=True))
    assert "is not a JSON record (cut off by a crash?): dropped" in capsys.readouterr().err
    assert losses(out) == losses(reference)


def test_workers_prefetching_across_epochs_train_exactly_the_reference(data, reference, tmp_path):
    """Two persistent workers, one iterator through both epochs, losses read every 3 steps: the same
    losses at the logged steps and the same final weights as the in-process reference."""
    out = tmp_path / "workers"
    summary = pretrain(params(data, out, workers=2, log_every=3))
    want, got = losses(reference), losses(out)
    assert got and all(got[s] == want[s] for s in got) and max(got) == summary["total_steps"]
    assert_same_weights(final_weights(out), final_weights(reference))


def test_run_records_its_whole_run_rate_beside_the_steady_rate(reference):
    end = json.loads((reference / "metrics.jsonl").read_text().splitlines()[-1])
    total = load_checkpoint(reference / "checkpoint.pt")["resolved"]["total_steps"]
    assert end["run_images"] == (total - 1) * 8  # after the first step, through the final checkpoint
    assert end["run_images_per_s"] == pytest.approx(end["run_images"] / end["run_s"])
    assert 0 < end["run_s"] < end["wall_s"] and end["steady_images_per_s"] > 0
    spe = load_checkpoint(reference / "checkpoint.pt")["resolved"]["steps_per_epoch"]
    assert end["after_epoch_images"] == (total - spe) * 8 > 0  # after the first epoch's end
    assert end["after_epoch_images_per_s"] > 0


def test_divergence_names_the_first_bad_step_whenever_the_losses_are_read(data, tmp_path):
    """The losses are read once per log window: the error still names the first non-finite step."""
    named = []
    for log_every in (1, 4):
        out = tmp_path / f"nan{log_every}"
        with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf|-inf) at step \d+ \(epoch"):
            try:
                pretrain(params(data, out, lr=1e12, epochs=4, log_every=log_every))
            except TrainingDiverged as err:
                named.append(int(str(err).split(" at step ")[1].split()[0]))
                raise
        logged = losses(out)
        assert all(math.isfinite(v) for v in logged.values()) and max(logged, default=0) < named[-1]
    assert named[0] == named[1]


def test_resume_refuses_another_architecture_or_changed_parameters(data, reference, tmp_path):
    other = params(data, tmp_path / "x", backbone="resnet10_w16", resume=str(reference / "checkpoint.pt"))
    with pytest.raises(ValueError, match="another architecture.*resnet10_w8.*resnet10_w16"):
        pretrain(other)
    changed = params(data, tmp_path / "y", lr=1.0, resume=str(reference / "checkpoint.pt"))
    with pytest.raises(ValueError, match=r"(?s)parameters differ.*lr: None in the checkpoint, 1.0 now"):
        pretrain(changed)
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        pretrain(params(data, reference))  # a fresh run never overwrites one
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(params(data, tmp_path / "z", resume=True))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a coarsecrop pretraining checkpoint"):
        pretrain(params(data, tmp_path / "w", resume=str(tmp_path / "plain.pt")))
    finished = str(reference / "checkpoint.pt")  # nothing left to train: the new folder would get no files
    with pytest.raises(ValueError, match=r"is of a finished run \(step \d+/\d+\): nothing is left to resume"):
        pretrain(params(data, tmp_path / "v", resume=finished))
    assert not (tmp_path / "v").exists()
    shutil.copytree(reference, tmp_path / "own")  # in its own folder: a no-op
    assert pretrain(params(data, tmp_path / "own", resume=True))["step"] > 0
    shutil.copytree(reference, tmp_path / "another")  # another run's folder: never overwritten by a resume
    before = (tmp_path / "another" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run.*resuming .* there would overwrite it"):
        pretrain(params(data, tmp_path / "another", resume=str(tmp_path / "own" / "checkpoint.pt")))
    assert (tmp_path / "another" / "checkpoint.pt").read_bytes() == before


def test_resume_auto_starts_a_new_run_and_continues_a_stopped_one(data, reference, tmp_path):
    """resume=auto: one command line for a first start and a requeued job, the run as the uninterrupted one."""
    out = tmp_path / "auto"
    assert pretrain(params(data, out, resume="auto", stop_at_step=3))["step"] == 3
    assert pretrain(params(data, out, resume="auto"))["step"] == load_checkpoint(reference / "checkpoint.pt")["step"]
    assert_same_weights(final_weights(out), final_weights(reference))


def test_the_trunk_is_written_before_the_checkpoint(data, tmp_path, monkeypatch, capsys):
    """A stop between the two writes must leave the checkpoint behind (a resume remakes both), never a
    finished checkpoint beside an older backbone.pt, which a resume of a finished run does not rewrite. A
    warm-up as long as the run is said (the rate would never decay)."""
    from coarsecrop.train import checkpoint

    written = []
    real = checkpoint.save_torch
    monkeypatch.setattr(checkpoint, "save_torch", lambda obj, path: (written.append(Path(path).name), real(obj, path)))
    pretrain(params(data, tmp_path / "run", epochs=1, warmup_epochs=1.0))
    assert written and written[0] == "backbone.pt" and written[1] == "checkpoint.pt"
    assert "warmup_epochs 1 >= epochs 1: the rate never decays" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_pretraining_loss_falls_and_monitor_reports_random_init(data, tmp_path):
    out = tmp_path / "falls"
    summary = pretrain(params(data, out, method="byol", epochs=6, monitor="knn", monitor_every=3,
                              method_params={}))
    curve = list(losses(out).values())
    assert len(curve) >= 24
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.2
    init = summary["monitor"]["init"]
    assert 0.0 <= init["knn_top1"] <= 1.0 and 0.0 <= init["knn_top1_bn"] <= 1.0
    history = summary["monitor"]["history"]
    assert [h["epoch"] for h in history] == [3, 6] and all(0 <= h["knn_top1"] <= 1 for h in history)


# ---------------------------------------------------------------- processes: SIGTERM, torchrun

def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "coarsecrop", "pretrain", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_resumes_exactly(data, tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({**TINY, "manifest": data["manifest"], "epochs": 40, "workers": 1}))
    out = tmp_path / "killed"  # a DataLoader worker too: it must ignore the signal and the order not depend on it
    proc = subprocess.Popen(_cli(["--params", str(run), f"out={out}"]), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len(losses(out)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "continue with --resume" in err
    stopped = load_checkpoint(out / "checkpoint.pt")
    total = stopped["resolved"]["total_steps"]
    assert 3 <= stopped["step"] < total and (out / "backbone.pt").is_file()

    until = stopped["step"] + 4  # a few steps past the stop are enough to compare
    pretrain(load_pretrain_params(run, {"out": str(out), "resume": True, "stop_at_step": until, "workers": 0}))
    reference = tmp_path / "straight"
    pretrain(load_pretrain_params(run, {"out": str(reference), "stop_at_step": until}))
    assert losses(out) == losses(reference) and max(losses(out)) == until
    assert_same_weights(final_weights(out), final_weights(reference))


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 1])
def test_processes_under_torchrun_end_with_identical_weights(data, tmp_path, nproc):
    """torchrun forms a process group even for one process (the one-GPU path is the many-GPU path)."""
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({**TINY, "manifest": data["manifest"], "epochs": 1}))
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "coarsecrop", "pretrain", "--params", str(run), f"out={out}"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    start, end = lines[0], lines[-1]
    assert start["resolved"]["world_size"] == nproc and start["resolved"]["local_batch"] == 8 // nproc
    assert start["resolved"]["backend"] == "gloo"
    assert end["kind"] == "end" and end["ranks_in_sync"] and len(set(end["weights_sha256"])) == 1
    assert len(end["weights_sha256"]) == nproc


@pytest.mark.slow
def test_exported_backbone_is_phi_for_the_crop_job(data, tmp_path):
    """Stage 1 closes the loop: a torchvision ResNet-18 trunk trained here crops with `ours`."""
    from coarsecrop.crops.job import run_crop_job
    from coarsecrop.crops.manifest import read_manifest
    from coarsecrop.models.backbones import build_backbone

    out = tmp_path / "phi"
    pretrain(params(data, out, backbone="resnet18", stop_at_step=1))
    phi = build_backbone("resnet18", checkpoint=out / "backbone.pt")
    trained = load_checkpoint(out / "checkpoint.pt")["model"]
    key = next(k for k in trained if k.endswith("conv1.weight") and "layer" not in k and "momentum" not in k
               and "key" not in k and "target" not in k)
    assert torch.equal(phi.conv1.weight, trained[key])
    summary = run_crop_job(data["scenes"], split="val", out=tmp_path / "crops", strategy="ours", n=3,
                           backbone="resnet18", checkpoint=out / "backbone.pt", workers=0, progress=False,
                           device="cpu", strategy_params={"sizes": [8, 16, 32, 64]})
    assert summary["done"] > 0
    assert sum(1 for _ in read_manifest(tmp_path / "crops").crops()) > 0


@pytest.mark.slow
def test_notebook_smoke_preset_trains_in_a_subprocess_and_writes_metrics(book_copy):
    """notebooks/02_pretrain.py with params/smoke/02_pretrain.yaml, executed by papermill as `make book` does."""
    from coarsecrop.book import run_notebook

    os.environ.setdefault("MPLBACKEND", "Agg")
    run_dir = run_notebook(book_copy, "02_pretrain", "smoke", log_output=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    preset = yaml.safe_load((ROOT / "params" / "smoke" / "02_pretrain.yaml").read_text())
    assert all(metrics["params"][k] == v for k, v in preset.items())
    assert metrics["metrics"]["steps"] == metrics["resolved"]["total_steps"] > 0
    assert 0 <= metrics["metrics"]["probe_knn_top1"] <= 1 and "init_bn_knn_top1" in metrics["metrics"]
    assert metrics["metrics"]["run_images_per_s"] > 0  # the trainer's whole-run rate, read from its end line
    assert metrics["provenance"]["world_size"] == 1
    assert (run_dir / "train" / "backbone.pt").is_file()
    for fig in ("loss", "monitor"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000
