"""The sharded crop manifest: atomic files, configuration fingerprint, counts and the reader."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from coarsecrop.boxes import is_valid
from coarsecrop.crops import manifest as mf
from coarsecrop.io import write_text


def _config(**changes) -> dict:
    config = {"source": "/data/scenes", "images": None, "format": "coco", "root": "/data/scenes",
              "split": None, "num_images": 5, "scenes_sha256": "abc", "strategy": "grid",
              "params": {"rows": 2}, "n": 5, "backbone": None, "checkpoint": None, "shard_size": 2,
              "max_side": 1333, "device_type": "cpu"}
    config.update(changes)
    return config


def _write_job(folder: Path, root: Path) -> None:
    """A finished 5-image job in 3 shards: 4 images with crops, 1 skipped."""
    mf.open_job_folder(folder, _config(root=str(root)), {"version": "0"}, {"scenes": str(root), "strategy": "grid",
                                                                           "n": 5, "shard_size": 2})
    lines = [mf.crop_line(i, f"images/{i}.jpg", 100, 80, torch.tensor([[0.0, 0.0, 50.0, 40.0]] * 2),
                          torch.tensor([0.5, 0.25])) for i in range(4)]
    lines.append(mf.skipped_line(4, "images/4.jpg", "truncated JPEG file (premature end of data)"))
    for k in range(3):
        mf.write_shard(folder, k, lines[2 * k:2 * k + 2])


def test_atomic_write_never_shows_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "shard-00000.jsonl"
    seen = []
    real_fsync = os.fsync

    def fsync_and_look(fd):  # called after the text is written, before the rename
        seen.append((target.exists(), sorted(p.name for p in tmp_path.iterdir())))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_and_look)
    write_text(target, "x" * 100_000)
    assert seen[0][0] is False and any(mf.TMP_MARK in n for n in seen[0][1])
    assert target.read_text() == "x" * 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.jsonl"]


def test_killed_write_leaves_only_a_temporary_that_a_resume_removes(tmp_path, monkeypatch):
    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        mf.write_shard(tmp_path, 3, [mf.skipped_line(1, "a.jpg", "empty file")])
    monkeypatch.undo()
    assert not (tmp_path / "shard-00003.jsonl").exists()
    assert mf.missing_shards(tmp_path, 4) == [0, 1, 2, 3]
    fresh_config_tmp = tmp_path / f"config.json{mf.TMP_MARK}otherhost.1"
    old_manifest_tmp = tmp_path / f"manifest.json{mf.TMP_MARK}otherhost.2"
    other_rank_tmp = tmp_path / f"shard-00002.jsonl{mf.TMP_MARK}otherhost.3"
    for p in (fresh_config_tmp, old_manifest_tmp, other_rank_tmp):
        p.write_text("partial")
    os.utime(old_manifest_tmp, (time.time() - 3600, time.time() - 3600))
    removed = mf.remove_stale_temporaries(tmp_path, shards=[1, 3])
    assert sorted(p.name.split(mf.TMP_MARK)[0] for p in removed) == ["manifest.json", "shard-00003.jsonl"]
    assert fresh_config_tmp.exists() and other_rank_tmp.exists()


def test_lines_sorted_rounded_and_valid():
    boxes = torch.tensor([[0.004, 1.23456, 1.004, 2.239], [10.5, 20.25, 99.999, 80.0]])
    line = mf.crop_line(7, "a/b.jpg", 100, 80, boxes, torch.tensor([0.123456789, 1.0]))
    text = mf.dumps_line(line)
    assert text.endswith("\n") and text.count("\n") == 1
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert line["scores"] == [0.123457, 1.0]
    assert line["boxes"][1] == [10.5, 20.25, 100.0, 80.0]
    rounded = torch.tensor(line["boxes"], dtype=torch.float32)
    assert is_valid(rounded, 100, 80)  # outward rounding keeps >= 1 px and inside the image
    assert (rounded[:, :2] <= boxes[:, :2]).all() and (rounded[:, 2:] >= boxes[:, 2:] - 1e-6).all()
    assert mf.skipped_line(1, "x.jpg", "bad\nthing  here") == {"id": 1, "file": "x.jpg", "skipped": "bad thing here"}


@pytest.mark.parametrize("reason,kind", [
    ("missing file: /a/b.jpg does not exist", "missing file"),
    ("empty file (0 bytes)", "empty file"),
    ("truncated image file", "truncated image"),
    ("not an image (cannot identify image file)", "not an image"),
    ("crop strategy failed: RuntimeError: boom", "crop strategy failed"),
    ("something else", "other"),
])
def test_skip_kinds(reason, kind):
    assert mf.skip_kind(reason) == kind


def test_same_config_resumes_different_config_is_refused(tmp_path):
    out = tmp_path / "job"
    mf.open_job_folder(out, _config(), {"version": "0"})
    first = (out / mf.CONFIG_NAME).read_bytes()
    mf.open_job_folder(out, _config(params={"rows": 2}), {"version": "0"})  # same: resumes
    assert (out / mf.CONFIG_NAME).read_bytes() == first
    with pytest.raises(ValueError) as err:
        mf.open_job_folder(out, _config(strategy="ours", n=3), {"version": "0"})
    text = str(err.value)
    assert "strategy: 'grid' there, 'ours' now" in text and "n: 5 there, 3 now" in text
    assert "another --out" in text and "shard_size" not in text


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no crop job"):
        mf.open_job_folder(tmp_path, _config(), {})


def test_write_and_read_manifest(tmp_path):
    root = tmp_path / "data"
    out = tmp_path / "job"
    _write_job(out, root)
    man = mf.write_manifest(out)
    first = (out / mf.MANIFEST_NAME).read_bytes()
    assert mf.write_manifest(out) == man and (out / mf.MANIFEST_NAME).read_bytes() == first
    assert man["counts"] == {"images": 5, "done": 4, "skipped": 1, "boxes": 8, "shards": 3,
                             "skip_reasons": {"truncated image": 1}}
    assert b"time" not in first  # nothing that changes between runs
    read = mf.read_manifest(out)
    assert read.config["strategy"] == "grid" and read.root == root and len(read) == 5
    records = list(read.records())
    assert [r["id"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["file"] == str(root.absolute() / "images/0.jpg")
    assert records[4]["skipped"].startswith("truncated")
    crops = list(read.crops())
    assert len(crops) == 8 and crops[0] == (str(root.absolute() / "images/0.jpg"), [0.0, 0.0, 50.0, 40.0])
    moved = mf.read_manifest(out, root=tmp_path / "moved")
    assert next(moved.records())["file"] == str(tmp_path.absolute() / "moved/images/0.jpg")


def test_reader_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        mf.read_manifest(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a crop manifest"):
        mf.read_manifest(tmp_path)
    out = tmp_path / "job"
    _write_job(out, tmp_path / "data")
    (out / mf.shard_name(1)).unlink()
    with pytest.raises(RuntimeError) as err:
        mf.read_manifest(out)
    assert "1 of 3 shards missing" in str(err.value)
    assert f"coarsecrop crops --scenes {tmp_path / 'data'}" in str(err.value) and f"--out {out}" in str(err.value)
    with pytest.raises(RuntimeError, match="1 of 3 shards missing"):
        mf.write_manifest(out)


# ---------------------------------------------------------------- the writer thread

def _line(i: int, payload) -> dict:
    return mf.skipped_line(i, f"images/{i}.jpg", f"reason {payload}")


def test_shard_writer_writes_shards_in_order_whatever_order_lines_come(tmp_path, monkeypatch):
    order = []
    real_write_shard = mf.write_shard

    def spy(folder, k, records):
        order.append(k)
        return real_write_shard(folder, k, records)

    monkeypatch.setattr(mf, "write_shard", spy)
    # shards 1, 3, 4 of a 9-image job in shards of 2 (shard 4 holds one image); lines arrive backwards
    with mf.ShardWriter(tmp_path, [1, 3, 4], 2, 9, _line, max_pending=1) as writer:
        for i in (8, 7, 6, 3):
            writer.put([(i, i * 10)])
        while not writer.queue.empty():
            time.sleep(0.01)
        time.sleep(0.05)
        assert not list(tmp_path.glob("shard-*"))  # shards 3 and 4 are complete but wait for shard 1
        writer.put([(2, 20)])
    assert order == [1, 3, 4] and writer.written == [1, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [mf.shard_name(k) for k in (1, 3, 4)]
    assert (tmp_path / mf.shard_name(3)).read_text() == "".join(mf.dumps_line(_line(i, i * 10)) for i in (6, 7))
    assert (tmp_path / mf.shard_name(4)).read_text() == mf.dumps_line(_line(8, 80))


def test_shard_writer_error_is_raised_in_the_callers_thread(tmp_path):
    def bad_line(i, payload):
        if i == 3:
            raise ValueError("cannot format scene 3")
        return _line(i, payload)

    with pytest.raises(ValueError, match="cannot format scene 3"):
        with mf.ShardWriter(tmp_path, [0, 1, 2], 2, 6, bad_line, max_pending=1) as writer:
            for i in range(6):  # the error comes back at a later put or at the exit, whichever is first
                writer.put([(i, i)])
    assert [p.name for p in tmp_path.iterdir()] == [mf.shard_name(0)]  # shard 1 was never completed


def test_shard_writer_refuses_missing_or_repeated_lines(tmp_path):
    with pytest.raises(RuntimeError, match="shard 1 is missing 1 of 2 lines"):
        with mf.ShardWriter(tmp_path, [0, 1], 2, 4, _line) as writer:
            writer.put([(0, 0), (1, 1), (2, 2)])
    with pytest.raises(RuntimeError, match="twice or outside its shards"):
        with mf.ShardWriter(tmp_path / "b", [0], 2, 4, _line) as writer:
            writer.put([(0, 0), (0, 0)])
    with pytest.raises(RuntimeError, match="twice or outside its shards"):
        with mf.ShardWriter(tmp_path / "c", [0], 2, 4, _line) as writer:
            writer.put([(3, 0)])


def test_shard_writer_stops_without_writing_when_the_caller_fails(tmp_path):
    with pytest.raises(KeyError):
        with mf.ShardWriter(tmp_path, [0, 1], 2, 4, _line) as writer:
            writer.put([(0, 0)])
            raise KeyError("the main loop failed")
    assert not list(tmp_path.iterdir()) and not writer._thread.is_alive()
