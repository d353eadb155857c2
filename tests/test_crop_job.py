"""The crop job end to end: CLI, resume after a real kill, rank sharding, every kind of bad input,
and the errors that must come at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coarsecrop.boxes import is_valid
from coarsecrop.cli import main
from coarsecrop.crops import job as job_module
from coarsecrop.crops import manifest as mf
from coarsecrop.crops.job import default_workers, dist_env, run_crop_job
from coarsecrop.data.images import load_image
from coarsecrop.data.synthetic_voc import write_voc
from coarsecrop.device import resolve_device
from coarsecrop.models.backbones import build_backbone

REPO = Path(__file__).resolve().parents[1]
NUM_SCENES = 60
SHARD = 4
OURS_SMALL = {"sizes": [8, 16, 32, 64]}  # anchors for 64-px scenes
JOB = dict(strategy="ours", backbone="resnet18", strategy_params=OURS_SMALL, shard_size=SHARD, batch_size=4,
           progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return {**env, **extra}


def _crops_cli(scenes: Path, out: Path, *extra: str) -> list[str]:
    return ["crops", "--scenes", str(scenes), "--strategy", "ours", "--backbone", "resnet18",
            "--param", "sizes=[8,16,32,64]", "--shard-size", str(SHARD), "--batch-size", "4",
            "--out", str(out), "--quiet", *extra]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a manifest folder except the timing log, by name; config.json without its ``request``
    (the arguments as given, e.g. --batch-size and --size-window, which the tests vary on purpose; its
    ``config``, ``code`` and format are compared byte for byte)."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != mf.TIMING_NAME}
    if mf.CONFIG_NAME in files:
        stored = json.loads(files[mf.CONFIG_NAME])
        stored.pop("request", None)
        files[mf.CONFIG_NAME] = json.dumps(stored, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from coarsecrop.data.synthetic import write_scenes

    out = tmp_path_factory.mktemp("scenes")
    write_scenes(out, num_images=NUM_SCENES, seed=3, size=64, progress=False)
    return out


@pytest.fixture(scope="module")
def reference(scenes, tmp_path_factory) -> Path:
    """One uninterrupted single-process run (workers=0) that the other runs must equal byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "job"
    torch.set_num_threads(1)
    summary = run_crop_job(scenes, out=out, workers=0, **JOB)
    assert summary["complete"] and summary["done"] == NUM_SCENES and summary["shards_written"] == 15
    return out


# ---------------------------------------------------------------- the manifest a job writes

def test_cli_writes_a_valid_manifest(scenes, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["crops", "--scenes", str(scenes), "--strategy", "grid", "--n", "3", "--out", str(out),
                 "--shard-size", "25", "--workers", "0", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] and summary["done"] == NUM_SCENES and summary["boxes"] == 3 * NUM_SCENES
    assert summary["images_per_s"] > 0 and summary["skip_reasons"] == {}
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "manifest.json", "shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl", "timing.jsonl"]
    man = mf.read_manifest(out)
    assert man.config["strategy"] == "grid" and man.config["n"] == 3 and man.config["backbone"] is None
    assert man.config["max_side"] == job_module.DEFAULT_MAX_SIDE and man.counts["images"] == NUM_SCENES
    assert man.code["version"]
    records = list(man.records())
    assert [r["file"] for r in records] == sorted(r["file"] for r in records)  # deterministic scene order
    for rec in records:
        assert Path(rec["file"]).is_file() and list(rec) == sorted(rec)
        assert is_valid(torch.tensor(rec["boxes"], dtype=torch.float32), rec["width"], rec["height"])
    raw = (out / "shard-00000.jsonl").read_text().splitlines()[0]
    assert json.loads(raw)["file"].startswith("images/")  # relative to the scene set root
    assert len(list(man.crops())) == 3 * NUM_SCENES


def test_rerun_of_a_finished_job_changes_nothing(scenes, reference):
    before = _files(reference)
    summary = run_crop_job(scenes, out=reference, workers=0, **JOB)
    assert summary["complete"] and summary["shards_written"] == 0 and summary["shards_already_done"] == 15
    assert summary["done"] == NUM_SCENES and _files(reference) == before


def test_changed_configuration_is_refused(scenes, reference, capsys):
    before = _files(reference)
    with pytest.raises(ValueError) as err:
        run_crop_job(scenes, out=reference, workers=0, **{**JOB, "shard_size": 8})
    assert "shard_size: 4 there, 8 now" in str(err.value) and "another --out" in str(err.value)
    assert main(_crops_cli(scenes, reference, "--n", "3")) == 2
    assert "n: 5 there, 3 now" in capsys.readouterr().err
    assert _files(reference) == before


def test_resume_with_another_batch_is_warned_and_the_hint_keeps_the_batch(scenes, tmp_path):
    """ours' scores depend on the batch (phi's float results): the job records --batch-size and
    --size-window, the resume hint repeats them, and a resume with other values is warned about."""
    out = tmp_path / "ours"
    run_crop_job(scenes, out=out, workers=0, **{**JOB, "size_window": 8})
    request = json.loads((out / mf.CONFIG_NAME).read_text())["request"]
    assert request["batch_size"] == JOB["batch_size"] and request["size_window"] == 8
    hint = mf.resume_command(out, request)
    assert f"--batch-size {JOB['batch_size']}" in hint and "--size-window 8" in hint
    with pytest.warns(UserWarning, match=r"--batch-size 4 \(now 2\).*6th decimal"):
        run_crop_job(scenes, out=out, workers=0, **{**JOB, "size_window": 8, "batch_size": 2})
    grid = tmp_path / "grid"  # a strategy without phi records neither: any batch gives its bytes
    run_crop_job(scenes, out=grid, workers=0, strategy="grid", shard_size=SHARD, batch_size=4, progress=False)
    assert "batch_size" not in json.loads((grid / mf.CONFIG_NAME).read_text())["request"]


def _moved_json(scenes: Path, path: Path, edit=None) -> Path:
    """The scenes' annotations.json written to ``path`` (outside the scenes folder, so its images need
    ``images=scenes``), after ``edit(data)`` when given."""
    data = json.loads((scenes / "annotations.json").read_text())
    if edit is not None:
        edit(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_resume_after_the_annotations_changed_is_refused(scenes, tmp_path):
    """A gt job's fingerprint covers the boxes, labels and annotated sizes it crops from; strategies that
    ignore the annotations do not record them (their earlier configurations stay valid)."""
    ann = _moved_json(scenes, tmp_path / "ann" / "instances.json")
    out = tmp_path / "gt"
    job = dict(images=scenes, strategy="gt", shard_size=SHARD, workers=0, progress=False)
    first = run_crop_job(ann, out=out, **job)
    assert first["complete"] and "annotations_sha256" in json.loads((out / mf.CONFIG_NAME).read_text())["config"]
    assert run_crop_job(ann, out=out, **job)["shards_written"] == 0  # unchanged: resumes

    def move_a_box(data):
        data["annotations"][0]["bbox"][0] += 3

    _moved_json(scenes, ann, move_a_box)
    before = _files(out)
    with pytest.raises(ValueError, match=r"annotations_sha256: '[0-9a-f]+' there, '[0-9a-f]+' now") as err:
        run_crop_job(ann, out=out, **job)
    assert "another --out" in str(err.value) and _files(out) == before
    grid = tmp_path / "grid"
    run_crop_job(ann, out=grid, **{**job, "strategy": "grid"})
    assert "annotations_sha256" not in json.loads((grid / mf.CONFIG_NAME).read_text())["config"]


def test_a_poor_job_fingerprints_the_masks_it_reads(scenes, tmp_path):
    """Poor-Crop picks boxes by their share of mask pixels: a segmentation edited between its start and its
    resume (COCO's RLE in the json; VOC's SegmentationObject png, by its content) is refused, naming
    masks_sha256; gt reads boxes only, so the same edit leaves its job resumable."""
    ann = _moved_json(scenes, tmp_path / "ann" / "instances.json")
    job = dict(images=scenes, shard_size=SHARD, workers=0, progress=False)
    for strategy in ("poor", "gt"):
        run_crop_job(ann, out=tmp_path / strategy, strategy=strategy, **job)
    assert "masks_sha256" in json.loads((tmp_path / "poor" / mf.CONFIG_NAME).read_text())["config"]
    assert "masks_sha256" not in json.loads((tmp_path / "gt" / mf.CONFIG_NAME).read_text())["config"]

    def box_as_mask(data):  # the same box and label, another mask: the filled box as a polygon
        a = data["annotations"][0]
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]

    _moved_json(scenes, ann, box_as_mask)
    assert run_crop_job(ann, out=tmp_path / "gt", strategy="gt", **job)["shards_written"] == 0
    with pytest.raises(ValueError, match=r"masks_sha256: '[0-9a-f]+' there, '[0-9a-f]+' now"):
        run_crop_job(ann, out=tmp_path / "poor", strategy="poor", **job)

    voc = write_voc(scenes, tmp_path / "voc")
    vjob = dict(strategy="poor", shard_size=SHARD, workers=0, progress=False)
    run_crop_job(voc, out=tmp_path / "voc_poor", **vjob)
    assert run_crop_job(voc, out=tmp_path / "voc_poor", **vjob)["shards_written"] == 0  # unchanged: resumes
    png = sorted((voc / "SegmentationObject").glob("*.png"))[0]
    index = Image.open(png)
    pixels = np.array(index)
    pixels[0, 0] = 255 if pixels[0, 0] != 255 else 0
    edited = Image.fromarray(pixels, mode="P")
    edited.putpalette(index.getpalette())
    edited.save(png)
    with pytest.raises(ValueError, match="masks_sha256"):
        run_crop_job(voc, out=tmp_path / "voc_poor", **vjob)


def test_the_mask_fingerprint_follows_values_not_print_options(scenes):
    """The COCO decoders hold the boxes as a tensor, whose repr rounds to the print precision and elides
    past the print threshold: the fingerprint reads its bytes, so a notebook's print options do not turn a
    resume into "a different configuration", and a change below the printed precision still counts."""
    from coarsecrop.crops.fingerprint import masks_sha256
    from coarsecrop.data.scenes import open_scenes

    listed = open_scenes(scenes).scenes
    box = listed[0].mask_decoder.args[1]
    assert isinstance(box, torch.Tensor)
    box[0, 0] += 0.123456  # a box off the pixel grid, as COCO's are
    before = masks_sha256(listed)
    torch.set_printoptions(precision=1)
    try:
        assert masks_sha256(listed) == before
    finally:
        torch.set_printoptions(profile="default")
    box[0, 0] += 1e-5  # below the default print precision (4 decimals)
    assert masks_sha256(listed) != before


def test_images_that_are_all_missing_stop_the_job(scenes, tmp_path, capsys):
    """A COCO json away from its images, without --images: every image is a missing file; the job stops
    naming the json, the first missing path and --images, rather than write a manifest of skips."""
    ann = _moved_json(scenes, tmp_path / "elsewhere" / "instances.json")
    with pytest.raises(ValueError) as err:
        run_crop_job(ann, out=tmp_path / "job", strategy="grid", shard_size=SHARD, workers=0, progress=False)
    message = str(err.value)
    assert str(ann) in message and "first 8 images are all missing files" in message and "--images" in message
    assert str(tmp_path / "elsewhere" / "images" / "000001.jpg") in message
    assert not (tmp_path / "job").exists()  # checked before any work
    assert main(["crops", "--scenes", str(ann), "--strategy", "grid", "--out", str(tmp_path / "cli"),
                 "--workers", "0", "--quiet"]) == 2
    assert "--images" in capsys.readouterr().err
    small = _moved_json(scenes, tmp_path / "small" / "instances.json",
                        lambda data: data.update(images=data["images"][:3]))  # fewer images than 8: all of them
    with pytest.raises(ValueError, match="first 3 images are all missing files"):
        run_crop_job(small, out=tmp_path / "small-job", strategy="grid", workers=0, progress=False)
    summary = run_crop_job(ann, images=scenes, out=tmp_path / "found", strategy="grid", shard_size=SHARD,
                           workers=0, progress=False)
    assert summary["complete"] and summary["done"] == NUM_SCENES

    def lose_the_first_seven(data):
        for entry in data["images"][:7]:
            entry["file_name"] = "gone/" + entry["file_name"]

    some = _moved_json(scenes, tmp_path / "some" / "instances.json", lose_the_first_seven)
    summary = run_crop_job(some, images=scenes, out=tmp_path / "some-job", strategy="grid", shard_size=SHARD,
                           workers=0, progress=False)  # fewer than 8 missing: bad images, skipped
    assert summary["complete"] and summary["skip_reasons"] == {"missing file": 7}


def test_annotated_size_unlike_the_image_is_a_skip_with_the_reason(scenes, tmp_path):
    """An image whose annotated width and height disagree with its file (not one scale on both axes) is
    skipped by the gt strategies with the reason, not cropped with stretched boxes."""
    def squash(data):
        data["images"][0]["height"] = 32  # the file is 64 x 64

    ann = _moved_json(scenes, tmp_path / "ann" / "instances.json", squash)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_crop_job(ann, images=scenes, out=tmp_path / "gt", strategy="gt", shard_size=SHARD,
                               workers=0, progress=False)
    assert any("annotated as 64x32" in str(w.message) for w in caught)
    assert summary["complete"] and summary["skipped"] == 1 and summary["done"] == NUM_SCENES - 1
    record = next(r for r in mf.read_manifest(tmp_path / "gt").records() if r["id"] == 1)
    assert "the image is 64x64 px (width x height) but annotated as 64x32" in record["skipped"]
    assert str(scenes) not in record["skipped"]


# ---------------------------------------------------------------- resume and ranks

@pytest.mark.slow
def test_killed_job_resumes_byte_identical(scenes, reference, tmp_path):
    out = tmp_path / "job"
    # windows of 2 shards: the writer thread writes shards while the job runs (the default window would
    # hold all 15 of these tiny shards until the end)
    cmd = [sys.executable, "-m", "coarsecrop", *_crops_cli(scenes, out, "--workers", "1", "--size-window", "8")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("shard-*.jsonl")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = sorted(p.name for p in out.glob("shard-*.jsonl"))
    assert 1 <= len(done) < 15, (done, proc.stderr.read().decode()[-2000:])
    assert not (out / mf.MANIFEST_NAME).exists()
    for name in done:  # what a killed job leaves is complete shards only
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    with pytest.raises(RuntimeError, match=rf"{15 - len(done)} of 15 shards missing"):
        mf.read_manifest(out)
    missing = mf.missing_shards(out, 15)
    stale = out / f"{mf.shard_name(missing[0])}{mf.TMP_MARK}deadhost.1"
    stale.write_text('{"partial": ')
    summary = run_crop_job(scenes, out=out, workers=0, **JOB)
    assert summary["complete"] and summary["shards_written"] == len(missing)
    assert summary["shards_already_done"] == len(done) and not stale.exists()
    assert _files(out) == _files(reference)


@pytest.mark.slow
def test_ranks_split_the_shards_and_merge_byte_identical(scenes, reference, tmp_path, monkeypatch):
    out = tmp_path / "job"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    # windows of one shard (--size-window 4): rank r owns the shards k with k % 2 == r
    first = run_crop_job(scenes, out=out, workers=0, size_window=SHARD, **JOB)
    assert not first["complete"] and first["rank"] == 1 and first["shards_written"] == 7
    assert sorted(p.name for p in out.glob("shard-*")) == [mf.shard_name(k) for k in range(1, 15, 2)]
    assert not (out / mf.MANIFEST_NAME).exists()
    with pytest.raises(RuntimeError, match="8 of 15 shards missing"):
        mf.read_manifest(out)
    res = subprocess.run([sys.executable, "-m", "coarsecrop",
                          *_crops_cli(scenes, out, "--workers", "1", "--size-window", str(SHARD))],
                         env=_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    second = json.loads(res.stdout)
    assert second["complete"] and second["rank"] == 0 and second["shards_written"] == 8
    assert second["done"] == NUM_SCENES  # the last rank to finish wrote manifest.json
    assert _files(out) == _files(reference)
    timing = [json.loads(line) for line in (out / mf.TIMING_NAME).read_text().splitlines()]
    assert sorted(t["rank"] for t in timing) == [0, 1] and all(t["world_size"] == 2 for t in timing)


def test_fewer_windows_than_ranks_is_said_with_the_window_that_would_do(scenes, tmp_path, monkeypatch):
    """60 images in one window of --size-window 4096 over 4 ranks: ranks 1-3 had nothing to do, silently."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    grid = dict(strategy="grid", n=3, shard_size=SHARD, workers=0, progress=False)
    with pytest.warns(UserWarning, match=r"60 images make 1 window\(s\) of --size-window 4096 images for 4 ranks: "
                                         r"3 rank\(s\) have nothing to do; a --size-window of at most 12 would"):
        run_crop_job(scenes, out=tmp_path / "one", **grid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 5 windows of 3 shards: every rank has work, nothing said
        summary = run_crop_job(scenes, out=tmp_path / "many", size_window=12, **grid)
    assert summary["shards_written"] == 6  # rank 0: windows 0 and 4


def test_batches_stay_in_their_shard_and_group_sizes():
    sizes = [(48, 64), (64, 48), (48, 64), (10, 10), (64, 48), (48, 64), (48, 64)]
    batches = job_module.shard_batches([0, 1], sizes, shard_size=5, batch_size=2)
    assert batches == [[3, 0], [2, 1], [4], [5, 6]]
    assert job_module.shard_batches([1], sizes, shard_size=5, batch_size=8) == [[5, 6]]


def test_batches_fill_across_a_window_of_shards():
    sizes = [(48, 64), (64, 48), (48, 64), (10, 10), (64, 48), (48, 64), (48, 64), (64, 48), (10, 10)]
    # shards of 3: [0 1 2] [3 4 5] [6 7 8]; a window of 2 shards lets same sizes of shards 0 and 1 meet
    assert job_module.shard_batches([0, 1, 2], sizes, shard_size=3, batch_size=2, window=2) == [
        [3, 0], [2, 5], [1, 4], [8, 6], [7]]
    # windows are fixed: shards 0 and 2 are in windows 0 and 1, whichever shards are still missing
    assert job_module.shard_batches([0, 2], sizes, shard_size=3, batch_size=4, window=2) == [
        [0, 2, 1], [8, 6, 7]]
    assert job_module.window_cover([2, 3, 7], window=2, total=9) == [2, 3, 6, 7]
    assert job_module.window_cover([8], window=4, total=9) == [8]
    assert job_module.window_shards(4096, 256) == 16 and job_module.window_shards(10, 256) == 1
    assert job_module.window_shards(9, 4) == 3


def test_rank_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert dist_env() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist_env() == (3, 8, 1)
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(ValueError, match="RANK < WORLD_SIZE"):
        dist_env()


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            resolve_device("cuda:0")


# ---------------------------------------------------------------- batches that fill, the writer thread

MIXED_SIZES = [(64, 48), (48, 64), (64, 64), (56, 40)]  # (width, height)
NUM_MIXED = 22


@pytest.fixture(scope="module")
def mixed_scenes(tmp_path_factory) -> Path:
    """A COCO data set of 22 images in 4 sizes in random order, so every shard of 4 holds several sizes."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "images").mkdir()
    rng = np.random.default_rng(5)
    images, annotations = [], []
    for i in range(NUM_MIXED):
        w, h = MIXED_SIZES[rng.integers(len(MIXED_SIZES))]
        pixels = np.clip(_pattern(w, h, seed=i).astype(int) + rng.integers(-30, 30, (h, w, 3)), 0, 255)
        _save_jpeg(root / f"images/{i:03d}.jpg", Image.fromarray(pixels.astype(np.uint8)))
        images.append({"id": i + 1, "file_name": f"images/{i:03d}.jpg", "width": w, "height": h})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [w / 4, h / 4, w / 2, h / 2], "area": w * h / 4})
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "thing"}]}))
    return ann


def _spy_batches(monkeypatch) -> list[list[tuple[int, tuple]]]:
    """Record (scene index, decoded shape) of every batch the job hands to the strategy."""
    seen: list[list[tuple[int, tuple]]] = []
    real_crop_batch = job_module.crop_batch

    def spy(strat, items, scenes, files):
        seen.append([(i, tuple(img.shape)) for i, img, _ in items])
        return real_crop_batch(strat, items, scenes, files)

    monkeypatch.setattr(job_module, "crop_batch", spy)
    return seen


@pytest.mark.slow
def test_manifest_bytes_do_not_depend_on_batch_size_window_or_workers(mixed_scenes, tmp_path, monkeypatch):
    """A strategy that crops image by image: the job's batching, windows and writer thread never move a
    line, whatever batches the images travelled in."""
    seen = _spy_batches(monkeypatch)
    job = dict(strategy="random", strategy_params={"sizes": [8, 16, 32, 64]}, shard_size=SHARD, progress=False)
    one = tmp_path / "one"
    summary = run_crop_job(mixed_scenes, out=one, workers=0, batch_size=1, size_window=1, **job)
    assert summary["complete"] and summary["done"] == NUM_MIXED and summary["shards"] == 6
    reference = _files(one)
    for batch_size, size_window, workers in ((5, 12, 1), (8, None, 0)):
        seen.clear()
        out = tmp_path / f"b{batch_size}w{size_window}"
        run_crop_job(mixed_scenes, out=out, workers=workers, batch_size=batch_size, size_window=size_window, **job)
        assert _files(out) == reference, (batch_size, size_window, workers)
        assert any(len({i // SHARD for i, _ in batch}) > 1 for batch in seen)  # batches cross shards
    # the default window holds all 6 shards: full batches, each size in one run of images
    assert [len(batch) for batch in seen] == [8, 8, NUM_MIXED - 16]
    order = [shape for batch in seen for _, shape in batch]
    assert len(set(order)) == len(MIXED_SIZES) and sum(a != b for a, b in zip(order, order[1:])) == 3


@pytest.mark.slow
def test_resumed_and_two_rank_jobs_meet_the_same_batches(mixed_scenes, tmp_path, monkeypatch):
    """ours (whose float scores depend on the batch, see the job's docstring) with windows of 2 shards:
    a job resumed with shards 0, 3, 5 present and a job of 2 ranks write the uninterrupted job's bytes."""
    job = {**JOB, "batch_size": 4, "size_window": 2 * SHARD}
    seen = _spy_batches(monkeypatch)
    one = tmp_path / "one"
    assert run_crop_job(mixed_scenes, out=one, workers=0, **job)["complete"]
    first_batches = [list(b) for b in seen]
    assert any(len({i // SHARD for i, _ in batch}) > 1 for batch in first_batches)
    resumed = tmp_path / "resumed"
    shutil.copytree(one, resumed)
    for k in (1, 2, 4):
        (resumed / mf.shard_name(k)).unlink()
    (resumed / mf.MANIFEST_NAME).unlink()
    seen.clear()
    summary = run_crop_job(mixed_scenes, out=resumed, workers=1, **job)
    assert summary["complete"] and summary["shards_written"] == 3 and summary["shards_already_done"] == 3
    assert summary["this_run"]["processed"] == 3 * SHARD  # counts: the images of the shards written now
    assert seen == first_batches  # every window had a missing shard: all of it was cropped again
    assert _files(resumed) == _files(one)
    ranks = tmp_path / "ranks"
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        summary = run_crop_job(mixed_scenes, out=ranks, workers=0, **job)
        assert summary["shards_written"] == (2 if rank == 1 else 4) and summary["complete"] == (rank == 0)
    assert _files(ranks) == _files(one)


def test_writer_thread_error_stops_the_job_with_its_message(scenes, tmp_path, monkeypatch):
    real_write_shard = mf.write_shard

    def full_disk(folder, k, records):
        if k == 2:
            raise OSError(28, "No space left on device (test)")
        return real_write_shard(folder, k, records)

    monkeypatch.setattr(mf, "write_shard", full_disk)
    out = tmp_path / "job"
    job = dict(strategy="grid", shard_size=4, size_window=4, workers=0, progress=False)
    with pytest.raises(OSError, match=re.escape("No space left on device (test)")):
        run_crop_job(scenes, out=out, **job)
    assert sorted(p.name for p in out.glob("shard-*")) == [mf.shard_name(0), mf.shard_name(1)]
    assert not (out / mf.MANIFEST_NAME).exists() and not list(out.glob(f"*{mf.TMP_MARK}*"))
    monkeypatch.setattr(mf, "write_shard", real_write_shard)
    summary = run_crop_job(scenes, out=out, **job)
    assert summary["complete"] and summary["shards_written"] == 13 and summary["done"] == NUM_SCENES


@pytest.mark.slow
def test_corrupt_jpegs_in_a_batch_of_good_ones(scenes, reference, tmp_path, monkeypatch):
    copy = tmp_path / "scenes"
    shutil.copytree(scenes, copy)
    images = sorted((copy / "images").glob("*.jpg"))
    data = images[5].read_bytes()
    images[5].write_bytes(data[: len(data) // 2])  # a truncated JPEG
    images[6].write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())  # garbage
    seen = []
    real_crop_batch = job_module.crop_batch

    def spy(strat, items, scenes, files):
        seen.append([i for i, _, _ in items])
        return real_crop_batch(strat, items, scenes, files)

    monkeypatch.setattr(job_module, "crop_batch", spy)
    summary = run_crop_job(copy, out=tmp_path / "job", workers=1, **{**JOB, "batch_size": 16})
    assert summary["complete"] and summary["done"] == NUM_SCENES - 2 and summary["skipped"] == 2
    assert summary["skip_reasons"] == {"truncated image": 1, "not an image": 1}
    assert seen[0] == [0, 1, 2, 3, 4, *range(7, 16)]  # the batch of 16 went on without its 2 bad images
    lines = [line for k in range(15) for line in (tmp_path / "job" / mf.shard_name(k)).read_text().splitlines()]
    expected = [line for k in range(15) for line in (reference / mf.shard_name(k)).read_text().splitlines()]
    truncated, garbage = json.loads(lines[5]), json.loads(lines[6])
    assert truncated["file"] == "images/" + images[5].name and garbage["file"] == "images/" + images[6].name
    assert re.fullmatch(r"truncated image file \(image file is truncated \(\d+ bytes not processed\)\)",
                        truncated["skipped"]), truncated
    assert garbage["skipped"] == "not an image (unrecognised file format)"
    assert lines[:5] + lines[7:] == expected[:5] + expected[7:]  # the good ones: the same boxes as ever


# ---------------------------------------------------------------- bad input

def _save_jpeg(path: Path, image: Image.Image, **kw) -> None:
    image.save(path, "JPEG", quality=80, **kw)


def _pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    img[h // 4: 3 * h // 4 + 1, w // 4: 3 * w // 4 + 1] = rng.integers(120, 255, 3)
    return img


@pytest.fixture(scope="module")
def bad_scenes(tmp_path_factory) -> tuple[Path, dict]:
    """A COCO data set holding every kind of awkward file; returns (annotations.json, expected sizes)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "images").mkdir()
    img = root / "images"
    _save_jpeg(img / "good.jpg", Image.fromarray(_pattern(64, 48)))
    Image.fromarray(_pattern(50, 40)[:, :, 0], "L").save(img / "gray.png")
    Image.fromarray(_pattern(48, 48)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(img / "palette.png")
    rgba = np.dstack([_pattern(40, 56), np.full((56, 40), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(img / "rgba.png")
    _save_jpeg(img / "cmyk.jpg", Image.fromarray(_pattern(56, 40)).convert("CMYK"))
    sixteen = Image.fromarray(_pattern(60, 44)[:, :, 1].astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    sixteen.save(img / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 60 x 40, shown 40 x 60
    _save_jpeg(img / "exif.jpg", Image.fromarray(_pattern(60, 40)), exif=exif.tobytes())
    Image.fromarray(_pattern(20, 20)).save(img / "tiny.png")
    Image.fromarray(_pattern(400, 4)).save(img / "thin.png")
    large = Image.new("RGB", (6000, 4000), (30, 60, 90))
    large.paste((220, 200, 40), (2000, 1000, 5000, 3500))
    _save_jpeg(img / "large.jpg", large)
    data = (img / "good.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (img / "empty.jpg").write_bytes(b"")
    (img / "text.jpg").write_text("this is not a picture\n")
    sizes = {"good.jpg": (64, 48), "gray.png": (50, 40), "palette.png": (48, 48), "rgba.png": (40, 56),
             "cmyk.jpg": (56, 40), "sixteen.png": (60, 44), "exif.jpg": (40, 60), "tiny.png": (20, 20),
             "thin.png": (400, 4), "large.jpg": (6000, 4000), "truncated.jpg": (64, 48), "empty.jpg": (64, 48),
             "text.jpg": (64, 48), "missing.jpg": (64, 48)}
    images, annotations = [], []
    for i, (name, (w, h)) in enumerate(sizes.items(), start=1):
        images.append({"id": i, "file_name": f"images/{name}", "width": w, "height": h})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "bbox": [w / 4, h / 4, w / 2, h / 2], "area": w * h / 4})
    annotations[0]["bbox"] = [-10.0, -10.0, 500.0, 500.0]  # reaches far outside good.jpg: clipped
    annotations.append({"id": 99, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, -3, 4],
                        "area": 0})  # negative size: dropped
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "thing"}]}))
    return ann, sizes


BAD = {"truncated.jpg": "truncated image", "empty.jpg": "empty file", "text.jpg": "not an image",
       "missing.jpg": "missing file"}


@pytest.mark.parametrize("strategy", ["ours", "gt"])
def test_bad_input_never_stops_a_job(bad_scenes, tmp_path, monkeypatch, strategy):
    ann, sizes = bad_scenes
    seen = []
    real_crop_batch = job_module.crop_batch

    def spy(strat, items, scenes, files):
        seen.extend(tuple(img.shape) for _, img, _ in items)
        return real_crop_batch(strat, items, scenes, files)

    monkeypatch.setattr(job_module, "crop_batch", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_crop_job(ann, out=tmp_path / "job", strategy=strategy, backbone="resnet18", shard_size=5,
                               batch_size=4, workers=0, max_side=256, progress=False)
    assert any("clipped" in str(w.message) for w in caught)  # the annotation box outside its image
    assert summary["complete"] and summary["images"] == len(sizes)
    assert summary["skipped"] == len(BAD) and summary["done"] == len(sizes) - len(BAD)
    assert summary["skip_reasons"] == {kind: 1 for kind in BAD.values()}
    assert max(max(shape[1:]) for shape in seen) <= 256  # the 6000 x 4000 image was decoded small
    records = {Path(r["file"]).name: r for r in mf.read_manifest(tmp_path / "job").records()}
    assert set(records) == set(sizes)
    for name, kind in BAD.items():
        assert mf.skip_kind(records[name]["skipped"]) == kind and str(ann.parent) not in records[name]["skipped"]
    for name, (w, h) in sizes.items():
        if name in BAD:
            continue
        rec = records[name]
        assert (rec["width"], rec["height"]) == (w, h), name
        boxes = torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4)
        assert len(boxes) >= 1 and is_valid(boxes, w, h), (name, rec)
    if strategy == "gt":
        assert records["good.jpg"]["boxes"] == [[0.0, 0.0, 64.0, 48.0]]  # clipped to the image
        assert len(records["gray.png"]["boxes"]) == 1  # the negative-size box was dropped
        assert records["large.jpg"]["boxes"] == [[1500.0, 1000.0, 4500.0, 3000.0]]  # original pixels
    else:
        assert len(records["tiny.png"]["boxes"]) >= 1  # smaller than the smallest anchor (32 px)
        assert max(b[2] for b in records["large.jpg"]["boxes"]) > 256  # scaled back to original pixels


def test_decoded_images_keep_memory_bounded(bad_scenes):
    ann, _ = bad_scenes
    dataset = job_module.DecodeScenes([str(ann.parent / "images/large.jpg")], max_side=1333)
    _, image, scale = dataset[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 889, 1333)
    assert scale == pytest.approx(6000 / 1333)
    _, none, reason = job_module.DecodeScenes([str(ann.parent / "images/missing.jpg")], 1333)[0]
    assert none is None and reason == "missing file"


def test_strategy_failure_on_one_image_is_a_skip(scenes, tmp_path, monkeypatch):
    from coarsecrop.crops.strategies import make_strategy

    grid = make_strategy("grid")

    class Fragile:
        name, params, needs_annotations = grid.name, grid.params, False

        def __init__(self, bad_ids):
            self.bad_ids = bad_ids

        def __call__(self, images, scenes):
            if any(s.id in self.bad_ids for s in scenes):
                raise RuntimeError("cannot handle this one")
            return grid(images, scenes)

    from coarsecrop.data.scenes import open_scenes

    ids = sorted(s.id for s in open_scenes(scenes).scenes)
    monkeypatch.setattr(job_module, "build_strategy", lambda *a, **k: Fragile({ids[5]}))
    with pytest.warns(UserWarning, match="cannot handle this one"):
        summary = run_crop_job(scenes, out=tmp_path / "a", strategy="grid", workers=0, progress=False)
    assert summary["complete"] and summary["skipped"] == 1 and summary["skip_reasons"] == {"crop strategy failed": 1}
    monkeypatch.setattr(job_module, "build_strategy", lambda *a, **k: Fragile(set(ids)))
    with pytest.raises(RuntimeError, match="bug or a bad setting"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_crop_job(scenes, out=tmp_path / "b", strategy="grid", workers=0, progress=False)


def test_strategy_refusing_the_first_images_stops_with_a_value_error(scenes, tmp_path, monkeypatch, capsys):
    """The strategy refusing every image with a ValueError (bad input, e.g. annotated sizes that never match
    the files) stops the job with a ValueError, which the CLI prints as one line."""
    class Refusing:
        name, params, needs_annotations = "grid", {}, False

        def __call__(self, images, scenes):
            raise ValueError("this data does not fit")

    monkeypatch.setattr(job_module, "build_strategy", lambda *a, **k: Refusing())
    with pytest.raises(ValueError, match=r"refused each of the first 8 images of .*this data does not fit"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_crop_job(scenes, out=tmp_path / "a", strategy="grid", workers=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["crops", "--scenes", str(scenes), "--strategy", "grid", "--out", str(tmp_path / "b"),
                     "--workers", "0", "--quiet"]) == 2
    assert "this data does not fit" in capsys.readouterr().err


# ---------------------------------------------------------------- errors at once

def test_unknown_strategy_or_parameter_fails_at_once(scenes, tmp_path, capsys):
    out = tmp_path / "job"
    with pytest.raises(ValueError) as err:
        run_crop_job(scenes, out=out, strategy="bogus", progress=False)
    assert "bogus" in str(err.value) and "ours" in str(err.value) and "grid" in str(err.value)
    with pytest.raises(ValueError) as err:
        run_crop_job(scenes, out=out, strategy="ours", strategy_params={"nms": 0.5}, progress=False)
    assert "nms_iou" in str(err.value) and "sizes" in str(err.value)
    assert main(["crops", "--scenes", str(scenes), "--out", str(out), "--strategy", "grid",
                 "--param", "rows=3", "--quiet"]) == 2
    assert "valid:" in capsys.readouterr().err
    assert main(["crops", "--scenes", str(scenes), "--out", str(out), "--param", "n=3", "--quiet"]) == 2
    assert "--n" in capsys.readouterr().err
    ckpt = tmp_path / "phi.pth"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="uses no backbone"):
        run_crop_job(scenes, out=out, strategy="grid", checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        run_crop_job(scenes, out=out, strategy="ours", backbone="resnet18", checkpoint=ckpt, progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_crop_job(scenes, out=out, strategy="ours", checkpoint=tmp_path / "nope.pth", progress=False)
    assert not out.exists()  # nothing was started


def test_backbone_only_where_a_strategy_runs_one_and_by_default_the_checkpoints(scenes, tmp_path, capsys):
    """--backbone was silently ignored by the strategies without phi, and its default (resnet50) overrode the
    architecture of a --checkpoint: a ResNet-18 checkpoint needed --backbone resnet18 beside it."""
    assert main(["crops", "--scenes", str(scenes), "--strategy", "grid", "--backbone", "resnet18",
                 "--out", str(tmp_path / "grid"), "--quiet"]) == 2
    assert "strategy 'grid' uses no backbone, so --backbone does not apply" in capsys.readouterr().err
    assert not (tmp_path / "grid").exists()
    phi = tmp_path / "phi18.pth"
    torch.save(build_backbone("resnet18").state_dict(), phi)
    out = tmp_path / "ours"
    assert main(["crops", "--scenes", str(scenes), "--strategy", "ours", "--checkpoint", str(phi), "--n", "2",
                 "--param", "sizes=[16,32]", "--workers", "0", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / mf.CONFIG_NAME).read_text())
    assert config["config"]["backbone"] == config["config"]["params"]["backbone"] == "resnet18"


@pytest.mark.parametrize("strategy", ["gt", "gtpad", "poor"])
def test_annotated_strategy_on_a_plain_folder_fails_at_once(tmp_path, strategy):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_pattern(32, 24, seed=i)).save(folder / f"{i}.png")
    with pytest.raises(ValueError) as err:
        run_crop_job(folder, out=tmp_path / "job", strategy=strategy, progress=False)
    assert "plain image folder" in str(err.value) and "ours" in str(err.value) and "grid" in str(err.value)
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("key,value", [("n", 0), ("batch_size", 0), ("shard_size", 0), ("workers", -1),
                                       ("max_side", 8), ("n", 2.5)])
def test_bad_job_arguments_fail_with_the_option_name(scenes, tmp_path, key, value):
    args = {"n": 5, "batch_size": 8, "shard_size": 256, "workers": 0, "max_side": 1333, key: value}
    with pytest.raises(ValueError, match=f"--{key.replace('_', '-')} must be an integer"):
        run_crop_job(scenes, out=tmp_path / "job", strategy="grid", progress=False, **args)


def test_default_workers_leave_phis_cores_alone(monkeypatch):
    """--workers unset: on the CPU only the cores torch's threads leave free (workers would slow phi
    down), on CUDA one per CPU but one, at most 8."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    try:
        torch.set_num_threads(16)
        assert default_workers(torch.device("cpu")) == 0
        torch.set_num_threads(12)
        assert default_workers(torch.device("cpu")) == 4
    finally:
        torch.set_num_threads(threads)
    assert default_workers(torch.device("cuda")) == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_workers(torch.device("cuda")) == 1


@pytest.mark.parametrize("recorded", [(0, 0), (640, 480)])
def test_an_image_decoded_smaller_maps_back_to_its_true_size_without_a_record(tmp_path, recorded):
    """A reduced image's original size without a record (Cityscapes, COCO entries without width/height) or with
    a wrong one: decoded size x scale is exact along the long side only (400 x 200 at max_side 133 -> 400 x 198);
    the size comes from the file's header."""
    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 200), (1, 2, 3)).save(path)
    image, scale = load_image(path, max_side=133)
    assert image.shape[:2] == (66, 133) and round(66 * scale) == 198  # what rounding alone gives
    scene = type("Scene", (), {"id": 1, "file": str(path), "width": recorded[0], "height": recorded[1]})()
    assert job_module.original_size(scene, image.shape[:2], scale) == (400, 200)
    cropped = job_module.Cropped((66, 133), scale, torch.tensor([[0.0, 0.0, 133.0, 66.0]]), torch.ones(1))
    assert job_module.crop_record(scene, "wide.png", cropped)["boxes"] == [[0, 0, 400, 200]]
