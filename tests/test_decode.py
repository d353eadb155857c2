"""The crop job's decode paths (coarsecrop.crops.decode): the route each kind of file takes, the GPU path's
batch with its CPU fallbacks and exact skip reasons, EXIF orientation and the max_side rule against
load_image, and the ``--decode`` option. The GPU path's code runs here on the CPU too (torchvision's
libjpeg decode_jpeg stands in for nvJPEG); the CUDA tests repeat it with nvJPEG where a GPU exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coarsecrop.cli import main
from coarsecrop.crops import decode as dec
from coarsecrop.crops import job as job_module
from coarsecrop.crops import manifest as mf
from coarsecrop.crops.job import DecodeScenes, run_crop_job
from coarsecrop.data.images import load_image

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA (nvJPEG)")
no_cuda = pytest.mark.skipif(CUDA, reason="checks the behaviour without CUDA")
JOB = dict(strategy="ours", backbone="resnet18", strategy_params={"sizes": [8, 16, 32, 64]}, shard_size=4,
           batch_size=4, workers=0, max_side=256, progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with a coloured block: asymmetric, so every flip and rotation shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)
    img[h // 5: h // 2, w // 6: w // 2] = rng.integers(0, 255, 3)
    return img


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind the route tells apart, by kind."""
    root = tmp_path_factory.mktemp("mixed")
    rgb = Image.fromarray(_pattern(64, 48))
    files = {k: root / f"{k}.{'png' if k in ('png', 'sixteen') else 'jpg'}" for k in
             ("baseline", "gray", "progressive", "cmyk", "png", "sixteen", "exif", "large", "truncated", "text",
              "empty", "missing")}
    rgb.save(files["baseline"], quality=90)
    rgb.convert("L").save(files["gray"], quality=90)
    rgb.save(files["progressive"], quality=90, progressive=True)
    rgb.convert("CMYK").save(files["cmyk"], quality=90)
    rgb.save(files["png"])
    Image.fromarray(_pattern(60, 44)[:, :, 1].astype(np.uint16) * 257).save(files["sixteen"])
    Image.fromarray(_pattern(60, 40, seed=1)).save(files["exif"], quality=90, exif=_exif(6))
    Image.fromarray(_pattern(1200, 900, seed=2)).save(files["large"], quality=90)
    data = files["baseline"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) - 40])  # the headers whole, the scan cut
    files["text"].write_text("this is not a picture\n")
    files["empty"].write_bytes(b"")
    return files


ROUTES = {"baseline": "gpu", "gray": "gpu", "progressive": "progressive", "cmyk": "cmyk", "png": "png",
          "sixteen": "png", "exif": "gpu", "large": "gpu", "truncated": "truncated", "text": "unreadable",
          "empty": "unreadable"}


def test_header_facts_route_each_kind_of_file(mixed, monkeypatch):
    for kind, way in ROUTES.items():
        facts = dec.header_facts(mixed[kind].read_bytes())
        assert dec.route(facts) == way, (kind, facts)
    facts = dec.header_facts(mixed["exif"].read_bytes())
    assert facts["orientation"] == 6 and facts["size"] == (60, 40) and facts["frame"] == 0xC0
    assert dec.header_facts(mixed["sixteen"].read_bytes())["bits"] == 16
    monkeypatch.setattr(dec, "GPU_MAX_PIXELS", 1200 * 900 - 1)
    assert dec.route(dec.header_facts(mixed["large"].read_bytes())) == "huge"
    assert dec.jpeg_frame(mixed["progressive"].read_bytes())[0] == 0xC2  # SOF2
    assert dec.jpeg_frame(b"\xff\xd8\xff\xd9") is None and dec.jpeg_frame(b"GIF89a") is None


def _items(files: list[Path], max_side: int, gpu: bool, device="cpu") -> tuple[list, dict]:
    data = DecodeScenes([str(f) for f in files], max_side, keep_jpeg=gpu)
    decoder = dec.BatchDecoder("gpu" if gpu else "cpu", torch.device(device), max_side)
    return decoder([data[i] for i in range(len(files))]), decoder.counts


def test_mixed_batch_keeps_each_reason_and_load_images_sizes(mixed, monkeypatch):
    """The GPU path's batch (nvJPEG's part done by torchvision's CPU decoder here) gives the CPU path's
    items: the same skip reasons word for word, sizes and scales; pixels within JPEG-decoder noise."""
    files = list(mixed.values())
    ref, ref_counts = _items(files, 256, gpu=False)
    calls = []
    real = dec.decode_jpeg

    def flaky(data, **kw):  # the batch fails as nvJPEG would on one bad member: retried image by image
        calls.append(len(data))
        if len(data) > 1:
            raise RuntimeError("batch refused")
        return real(data, **kw)

    monkeypatch.setattr(dec, "decode_jpeg", flaky)
    got, counts = _items(files, 256, gpu=True)
    assert calls == [4, 1, 1, 1, 1]  # baseline, gray, exif, large: one batch, then one by one
    assert [i for i, *_ in got] == list(range(len(files)))
    for (i, a, sa), (_, b, sb) in zip(ref, got, strict=True):
        name = files[i].name
        if a is None:
            assert b is None and sb == sa, name  # the exact reason
            continue
        assert b is not None and b.shape == a.shape and b.dtype == torch.uint8 and sb == pytest.approx(sa), name
        diff = (a.float() - b.float()).abs()
        assert diff.mean() < 2.0, (name, float(diff.mean()))
    assert {k: counts[k] for k in ("gpu", "cpu", "bad")} == {"gpu": 4, "cpu": 4, "bad": 4}
    assert counts["cpu_routes"] == {"progressive": 1, "cmyk": 1, "png": 2, "truncated": 1, "unreadable": 3}
    assert {k: ref_counts[k] for k in ("gpu", "cpu", "bad")} == {"gpu": 0, "cpu": 8, "bad": 4}
    reasons = {files[i].stem: r for i, im, r in got if im is None}
    assert reasons["missing"] == "missing file" and reasons["empty"] == "empty file (0 bytes)"
    assert reasons["truncated"].startswith("truncated image file")

    monkeypatch.setattr(dec, "decode_jpeg", lambda data, **kw: (_ for _ in ()).throw(RuntimeError("no")))
    got, counts = _items([mixed["baseline"]], 256, gpu=True)  # refused alone: load_image decodes it
    assert counts["cpu"] == 1 and counts["cpu_routes"] == {"refused": 1}
    assert torch.equal(got[0][1], ref[0][1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_load_image(tmp_path, orientation):
    path = tmp_path / "o.png"
    stored = _pattern(30, 20, seed=orientation)
    Image.fromarray(stored).save(path, exif=_exif(orientation))
    upright, _ = load_image(path)
    got = dec.orient(torch.from_numpy(stored).permute(2, 0, 1), orientation)
    assert torch.equal(got.permute(1, 2, 0), torch.from_numpy(upright))


def test_shrink_uses_load_images_size_rule(mixed):
    image = torch.from_numpy(_pattern(1200, 900, seed=2)).permute(2, 0, 1)
    small, scale = dec.shrink(image, 256)
    ref, ref_scale = load_image(mixed["large"], max_side=256)
    assert tuple(small.shape) == (3, *ref.shape[:2]) == (3, 192, 256) and scale == ref_scale == 1200 / 256
    assert (small.permute(1, 2, 0).float() - torch.from_numpy(ref).float()).abs().mean() < 3
    same, one = dec.shrink(image, 1200)
    assert one == 1.0 and torch.equal(same, image)


@no_cuda
def test_decode_gpu_without_cuda_is_a_one_line_error(mixed, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(mixed["baseline"].read_bytes())
    with pytest.raises(ValueError) as err:
        run_crop_job(folder, out=tmp_path / "job", decode="gpu", **JOB)
    text = str(err.value)
    assert "\n" not in text and "--decode gpu" in text and "use --decode cpu or auto" in text
    assert not (tmp_path / "job").exists()
    assert main(["crops", "--scenes", str(folder), "--out", str(tmp_path / "job"), "--strategy", "grid",
                 "--decode", "gpu", "--quiet"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "--decode gpu" in err_lines[0]
    with pytest.raises(ValueError, match="--decode must be one of auto, cpu, gpu"):
        run_crop_job(folder, out=tmp_path / "job", decode="nvjpeg", **JOB)


def test_decode_rule():
    cpu = torch.device("cpu")
    assert dec.resolve_decode("auto", cpu, "ours", True) == "cpu"
    assert dec.resolve_decode("cpu", cpu, "ours", True) == "cpu"
    if CUDA:
        gpu = torch.device("cuda", 0)
        assert dec.resolve_decode("auto", gpu, "ours", True) == "gpu"
        assert dec.resolve_decode("auto", gpu, "grid", False) == "cpu"
        with pytest.raises(ValueError, match="reads its pixels on the host"):
            dec.resolve_decode("gpu", gpu, "grid", False)


@no_cuda
def test_auto_on_cpu_records_cpu_and_keeps_the_config(mixed, tmp_path):
    """auto without CUDA runs the CPU path, and the folder's config.json is byte-identical to a cpu job's
    (no new key): folders written before --decode existed resume."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for kind in ("baseline", "png", "exif", "truncated"):
        (folder / mixed[kind].name).write_bytes(mixed[kind].read_bytes())
    cpu = run_crop_job(folder, out=tmp_path / "cpu", decode="cpu", **JOB)
    auto = run_crop_job(folder, out=tmp_path / "auto", decode="auto", **JOB)
    assert cpu["decode"] == auto["decode"] == "cpu"
    assert auto["this_run"]["decoded"] == {"gpu": 0, "cpu": 3, "bad": 1, "cpu_routes": {}}
    config = (tmp_path / "cpu" / mf.CONFIG_NAME).read_bytes()
    assert (tmp_path / "auto" / mf.CONFIG_NAME).read_bytes() == config and b"decode" not in config
    timing = json.loads((tmp_path / "auto" / mf.TIMING_NAME).read_text().splitlines()[-1])
    assert timing["decode"] == "cpu" and timing["decoded"]["cpu"] == 3
    again = run_crop_job(folder, out=tmp_path / "cpu", decode="auto", **JOB)  # resumes: nothing to do
    assert again["shards_already_done"] == 1


def test_gpu_path_in_a_job_records_decode_and_crops_alike(mixed, tmp_path, monkeypatch):
    """A whole job down the GPU path (on CUDA: nvJPEG; without: the same code with the CPU decoder):
    the config gains "decode": "gpu", the counts say which file went where, skips keep their reasons,
    sizes are the CPU job's, and on the CPU (the same libjpeg) the boxes are too, but for the resized
    image. On CUDA, box agreement over a realistic set is benchmarks/crop_speed.py's measurement."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for kind in ("baseline", "gray", "progressive", "png", "exif", "large", "truncated"):
        (folder / mixed[kind].name).write_bytes(mixed[kind].read_bytes())
    device = "cuda" if CUDA else "cpu"
    ref = run_crop_job(folder, out=tmp_path / "cpu", decode="cpu", device=device, **JOB)
    if not CUDA:
        monkeypatch.setattr(job_module, "resolve_decode", lambda *a: "gpu")
    got = run_crop_job(folder, out=tmp_path / "gpu", decode="gpu", device=device, **JOB)
    assert ref["decode"] == "cpu" and got["decode"] == "gpu"
    decoded = got["this_run"]["decoded"]
    assert (decoded["gpu"], decoded["cpu"], decoded["bad"]) == (4, 2, 1)
    config = json.loads((tmp_path / "gpu" / mf.CONFIG_NAME).read_text())
    assert config["config"]["decode"] == "gpu" and config["request"]["decode"] == "gpu"
    assert "--decode gpu" in mf.resume_command(tmp_path / "gpu", config["request"])
    a = {Path(r["file"]).name: r for r in mf.read_manifest(tmp_path / "cpu").records()}
    b = {Path(r["file"]).name: r for r in mf.read_manifest(tmp_path / "gpu").records()}
    assert a.keys() == b.keys()
    for name in a:
        assert ("skipped" in a[name]) == ("skipped" in b[name]), name
        if "skipped" in a[name]:
            assert a[name]["skipped"] == b[name]["skipped"]
            continue
        assert (a[name]["width"], a[name]["height"]) == (b[name]["width"], b[name]["height"]), name
        if not CUDA:
            assert a[name]["boxes"] == b[name]["boxes"] or name == "large.jpg", name  # resize differs


@needs_cuda
def test_nvjpeg_matches_pil_within_tolerance(mixed):
    """nvJPEG's pixels against PIL's: same sizes and scales, a few levels apart; EXIF applied on the device."""
    files = [mixed[k] for k in ("baseline", "gray", "exif", "large")]
    ref, _ = _items(files, 256, gpu=False)
    got, counts = _items(files, 256, gpu=True, device="cuda")
    assert counts["gpu"] == 4
    for (i, a, sa), (_, b, sb) in zip(ref, got, strict=True):
        assert b.is_cuda and b.shape == a.shape and sb == pytest.approx(sa), files[i].name
        diff = (a.float() - b.cpu().float()).abs()
        assert diff.mean() < 3.0 and diff.max() < 64, (files[i].name, float(diff.mean()), float(diff.max()))


@needs_cuda
def test_exif_on_the_device(tmp_path):
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.jpg"
        Image.fromarray(_pattern(48, 32, seed=orientation)).save(path, quality=95, exif=_exif(orientation))
        ref, _ = load_image(path)
        (_, image, scale), = _items([path], 256, gpu=True, device="cuda")[0]
        assert image.is_cuda and tuple(image.shape) == (3, *ref.shape[:2]) and scale == 1.0
        assert (image.cpu().permute(1, 2, 0).float() - torch.from_numpy(ref).float()).abs().mean() < 3.0
