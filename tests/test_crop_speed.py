"""benchmarks/crop_speed.py measures what it says (never its speed here): pure phi gets exactly the tensors
the job hands the strategy, and the job's stage breakdown is read from the job's own timing.jsonl."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from coarsecrop.crops import job as job_module
from coarsecrop.crops import manifest as mf
from coarsecrop.crops.strategies import make_strategy
from coarsecrop.crops.strategies.ours import _same_size_groups

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _crop_speed(monkeypatch):
    """The benchmark as a module (importable by name: it writes its images in worker processes)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("crop_speed")


@pytest.mark.slow
def test_pure_phi_gets_the_jobs_tensors_and_the_stages_come_from_timing_jsonl(tmp_path, monkeypatch):
    """60 images in batches of 4 across windows of 2 shards of 8 (so batches cross shards and sizes mix): the groups pure
    phi times are the job's same-size groups, in order, pixel for pixel; the job's timing.jsonl holds every
    stage, and the benchmark's breakdown is those seconds per processed image."""
    cs = _crop_speed(monkeypatch)
    folder = tmp_path / "images"
    kinds = cs.write_images(folder, 60)
    assert kinds["corrupt"] == 1  # one bad file: left out of the strategy's batch in both
    handed: list[torch.Tensor] = []
    real_crop_batch = job_module.crop_batch

    def spy(strategy, items, scenes, files):
        images = [image for _, image, _ in items]
        handed.extend(torch.stack([images[j] for j in g]) for g in _same_size_groups(images))
        return real_crop_batch(strategy, items, scenes, files)

    monkeypatch.setattr(job_module, "crop_batch", spy)
    out = tmp_path / "job"
    summary = job_module.run_crop_job(str(folder), out=str(out), strategy="ours", backbone="resnet10_w8",
                                      device="cpu", batch_size=4, workers=0, shard_size=8, size_window=16,
                                      progress=False)
    assert summary["complete"] and summary["skipped"] == 1
    groups = cs.decoded_groups(folder, 4, 8, 16, job_module.DEFAULT_MAX_SIDE, torch.device("cpu"))
    assert [tuple(g.shape) for g in groups] == [tuple(g.shape) for g in handed]
    assert len({g.shape[-2:] for g in groups}) > 1 and any(len(g) < 4 for g in groups)
    assert all(torch.equal(a, b) for a, b in zip(groups, handed))

    run = json.loads((out / mf.TIMING_NAME).read_text().splitlines()[-1])
    assert set(run["stages"]) == set(job_module.STAGES) == set(job_module.STAGE_NOTES)
    assert all(v >= 0 for v in run["stages"].values()) and run["stages"]["strategy"] > 0
    assert run["stages"]["writer_files"] > 0  # the writer thread's fsyncs are counted
    assert cs.job_stages(out) == pytest.approx({k: 1e3 * v / 60 for k, v in run["stages"].items()})


def test_decode_comparison_on_the_cpu(tmp_path, monkeypatch):
    """The GPU path's code with torchvision's CPU decoder gives PIL's pixels (so identical picks and maps),
    only for baseline JPEGs; a 1-level change everywhere moves the maps, and compare_decodes says so."""
    cs = _crop_speed(monkeypatch)
    folder = tmp_path / "images"
    cs.write_images(folder, 8)  # 000007 is progressive (not for nvJPEG); 000003 EXIF-rotated (rotated by the path)
    pairs = cs.gpu_decode_pairs(folder, torch.device("cpu"), job_module.DEFAULT_MAX_SIDE, 100)
    assert len(pairs) == 7 and all(torch.equal(a, b) for a, b in pairs)
    strategy = make_strategy("ours", backbone="resnet10_w8")
    same = cs.compare_decodes(strategy, pairs[:3], chunk=2)
    assert same["boxes"] == 1.0 and same["boxes_n"] == 15 and same["map_maxdiff"] == 0.0
    assert same["objectness_gap"] == 0.0 and 0 < same["objectness_picks"] <= 1
    moved = cs.compare_decodes(strategy, [(a, (a.int() + 1).clamp(max=255).to(torch.uint8)) for a, _ in pairs[:3]])
    assert 0 < moved["map_maxdiff"] < 0.2 and 0.99 < moved["map_r"] < 1 and moved["boxes_n"] == 15
