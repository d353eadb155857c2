"""Scenes v2 (the class is the shape) beside v1 (unchanged, the default), and the validity gates: colour
alone must not name the class on v2 (it does on v1: the gate catches that), shape alone must."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from coarsecrop.boxes import is_valid
from coarsecrop.cli import main as cli_main
from coarsecrop.data import gates
from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import (CATEGORIES, GENERATOR_VERSION, min_visible_area, render_scene,
                                       scenes_or_builtin, shared_scenes_name, write_scenes)
from coarsecrop.data.synthetic_v2 import V2_CATEGORIES, V2_MAX_OBJECTS, V2_MAX_SCALE, V2_MIN_SCALE

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
SIZE = 128
GATE_SCENES = 120  # enough objects for a 5-fold probe (v2: ~800, v1: ~430); seconds to write and probe


@pytest.fixture(scope="module")
def v1_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("v1")
    write_scenes(out, num_images=GATE_SCENES, seed=0, size=SIZE, progress=False)
    return out


@pytest.fixture(scope="module")
def v2_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2")
    write_scenes(out, num_images=GATE_SCENES, seed=0, size=SIZE, progress=False, version=2)
    return out


def _digest(scenes) -> str:
    h = hashlib.sha256()
    for s in scenes:
        h.update(s.image.tobytes())
        h.update(np.array(s.category_ids).tobytes())
        h.update(np.stack(s.masks).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------- v1 stays as it was


def test_v1_renders_byte_identically_to_the_committed_results_generator():
    """Every committed result was made with v1: its pixels, masks and annotations.json must not move
    (digests taken from the generator before v2 existed)."""
    assert _digest(render_scene(3, i, 64) for i in range(3)) == \
        "d02bcfd7b065d056939cde2bbd13f62a6819f361770ce1d6aa825e6893d0efc8"
    assert _digest(render_scene(3, i, 64, version=1) for i in range(3)) == \
        "d02bcfd7b065d056939cde2bbd13f62a6819f361770ce1d6aa825e6893d0efc8"


def test_v1_annotations_are_byte_identical_and_say_version_1(tmp_path):
    ann = write_scenes(tmp_path, 3, seed=3, size=64, progress=False)
    assert hashlib.sha256(ann.read_bytes()).hexdigest() == \
        "2b800492a3138fa15206c225c7abd51884104729ab82c75d7931a84d5d8f9e3b"
    data = json.loads(ann.read_text())
    assert data["info"]["generator_version"] == 1 and data["categories"] == CATEGORIES
    assert GENERATOR_VERSION == 3  # the newest generator; v1 data keeps saying 1


# ----------------------------------------------------------------------------------------- v2 data


def test_v2_depends_only_on_seed_and_index(tmp_path):
    a = write_scenes(tmp_path / "a", 6, seed=5, size=64, progress=False, version=2)
    b = write_scenes(tmp_path / "b", 3, seed=5, size=64, progress=False, version=2)
    full, part = json.loads(a.read_text()), json.loads(b.read_text())
    assert part["images"] == full["images"][:3]
    assert part["annotations"] == [x for x in full["annotations"] if x["image_id"] <= 3]
    for entry in part["images"]:
        assert (tmp_path / "b" / entry["file_name"]).read_bytes() == (tmp_path / "a" / entry["file_name"]).read_bytes()
    assert _digest([render_scene(5, 4, 64, version=2)]) == _digest([render_scene(5, 4, 64, version=2)])
    assert not np.array_equal(render_scene(5, 4, 64, version=2).image, render_scene(6, 4, 64, version=2).image)
    assert not np.array_equal(render_scene(5, 4, 64, version=2).image, render_scene(5, 4, 64).image)
    assert full["info"]["generator_version"] == 2 and full["categories"] == V2_CATEGORIES
    assert "hexagon" not in {c["name"] for c in V2_CATEGORIES} and len(V2_CATEGORIES) == 12


def test_v2_masks_and_boxes_are_valid(v2_set):
    scene_set = open_scenes(v2_set)
    assert {c for c in scene_set.categories.values()} == {c["name"] for c in V2_CATEGORIES}
    seen_classes = set()
    for scene in scene_set.scenes:
        masks = scene.instance_masks()
        assert 1 <= len(masks) <= V2_MAX_OBJECTS and is_valid(scene.boxes, scene.width, scene.height)
        assert (masks.sum(0) <= 1).all()  # visible masks never overlap
        for mask, box in zip(masks, scene.boxes):
            ys, xs = np.nonzero(mask)
            assert mask.sum() >= min_visible_area(SIZE)
            assert torch.equal(box, torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32))
        seen_classes.update(scene.labels.tolist())
    assert seen_classes == {c["id"] for c in V2_CATEGORIES}


def test_v2_object_sizes_have_a_coco_like_spread():
    """Many small objects, a few that fill about half the frame (sqrt(visible area) / image side)."""
    rel, cover, frame_cut = [], [], 0
    for i in range(40):
        s = render_scene(7, i, SIZE, version=2)
        rel += [float(np.sqrt(m.sum())) / SIZE for m in s.masks]
        cover.append(np.any(s.masks, axis=0).mean())
        frame_cut += sum(bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()) for m in s.masks)
        assert all(V2_MIN_SCALE <= x <= V2_MAX_SCALE for x in s.scales)
    rel = np.array(rel)
    assert np.mean(rel < 0.1) >= 0.2  # v1: ~0.14; COCO's median is 0.106
    assert 0.1 < np.median(rel) < 0.2  # v1: ~0.3
    assert np.mean(rel > 0.4) < 0.15 and rel.max() > 0.45
    assert 0.2 < float(np.mean(cover)) < 0.45  # whole-image objectness, VOC's Image-Crop: 36.4%
    assert frame_cut >= 0.05 * len(rel)  # frame cuts stay


# ----------------------------------------------------------------------------------------- the gates


def test_gates_pass_on_v2(v2_set):
    r = gates.measure_gates(v2_set)
    assert r["objects"] >= 500 and r["classes"] == 12
    assert r["colour_only"] <= r["chance"] + gates.COLOUR_MARGIN and r["colour_gate"]
    assert r["shape_only"] >= gates.SHAPE_FLOOR and r["shape_gate"]


def test_colour_gate_fails_on_v1(v1_set):
    """v1 gives each class its own hue range and texture: the colour probe must see it (so a regression
    to class-owned colours in v2 would be caught)."""
    r = gates.measure_gates(v1_set)
    assert r["colour_only"] > 0.9 and not r["colour_gate"]


def test_probe_features_and_chance():
    assert gates.chance(np.array([1, 1, 2, 3])) == 0.5
    image = np.zeros((20, 20, 3), np.uint8)
    image[..., 0] = 255
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    f = gates.colour_features(image, mask)
    assert f.shape == (70,) and np.allclose(f[:3], [1, 0, 0]) and np.allclose(f[3:6], 0) and f[6:].sum() == 1
    ring = mask.copy()
    ring[8:12, 8:12] = False
    a, b = gates.shape_features(mask), gates.shape_features(ring)
    assert a.shape == b.shape and a[-1] == 0 and b[-1] == 1  # the number of holes
    assert np.allclose(gates.shape_features(np.rot90(ring)), b, atol=1e-6)  # no change when it turns



def test_shape_features_of_a_shape_reaching_past_the_padding_are_finite_and_repeatable():
    """A T (a heavy bar, a long thin stem): its centroid sits near the bar, its farthest pixel at the stem's
    end, so the polar resampling circle leaves the padded image. Those samples are 0; cv2.warpPolar without
    WARP_FILL_OUTLIERS left them as whatever the freshly allocated buffer held (4.9e23 once here; in CI an
    overflow warning on top of the benchmark chapter), so the features changed from call to call."""
    mask = np.zeros((64, 64), bool)
    mask[:12, :] = True
    mask[12:, 31:33] = True
    first = gates.shape_features(mask)
    for sign in (1, -1, 1, -1):  # leave large numbers in freed memory the next buffer may reuse
        junk = [np.full(size, sign * 3e38, np.float32) for size in (1024, 2048, 4096, 8192)]
        del junk
        again = gates.shape_features(mask)
        assert np.isfinite(again).all() and np.array_equal(again, first)
    assert np.abs(first).max() < 100

# ----------------------------------------------------------------------------------- version plumbing


@pytest.mark.parametrize("bad", [0, 4, "2", 1.5, True])
def test_a_bad_version_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="generator version must be one of"):
        render_scene(0, 0, 64, version=bad)
    with pytest.raises(ValueError, match="generator version must be one of"):
        write_scenes(tmp_path, 1, seed=0, size=64, progress=False, version=bad)


def test_builtin_scenes_of_another_version_or_parameters_are_not_reused(tmp_path):
    """A notebook run by hand into a folder holding a run of another seed or number of scenes reused the old
    scenes (and so their crops) while its metrics.json recorded the new parameters."""
    folder = scenes_or_builtin(None, tmp_path / "s", 2, 0, 64, version=2)
    assert json.loads((folder / "annotations.json").read_text())["info"]["generator_version"] == 2
    assert scenes_or_builtin(None, tmp_path / "s", 2, 0, 64, version=2) == folder
    for args, kw, why in [((2, 0, 64), {}, "generator_version 2 there, 1 now"),
                          ((2, 1, 64), {"version": 2}, "seed 0 there, 1 now"),
                          ((3, 0, 64), {"version": 2}, "num_images 2 there, 3 now"),
                          ((2, 0, 96), {"version": 2}, "size 64 there, 96 now")]:
        with pytest.raises(ValueError, match=f"holds other built-in scenes \\({why}\\)"):
            scenes_or_builtin(None, tmp_path / "s", *args, **kw)
    assert shared_scenes_name(10, 64, 3) == "10x64px-seed3"  # v1's shared folders keep their names
    assert shared_scenes_name(10, 64, 3, version=2) == "10x64px-seed3-v2"


def test_cli_scenes_version(tmp_path, capsys):
    assert cli_main(["scenes", "--out", str(tmp_path / "s"), "--num-images", "2", "--seed", "1", "--size", "64",
                     "--version", "2", "--quiet"]) == 0
    assert json.loads((tmp_path / "s" / "annotations.json").read_text())["info"]["generator_version"] == 2
    with pytest.raises(SystemExit):
        cli_main(["scenes", "--out", str(tmp_path / "t"), "--version", "4", "--quiet"])
    assert "invalid choice: 4" in capsys.readouterr().err


def test_the_benchmark_chapter_checks_its_parameters_and_sets_the_paper_beside(tmp_path):
    from coarsecrop.studies import benchmark as B

    with pytest.raises(ValueError, match=r"versions must be a non-empty list of \(1, 2, 3\)"):
        B.run_benchmark(B.BenchmarkParams(versions=[4], out=str(tmp_path)))
    result = B.run_benchmark(B.BenchmarkParams(num_images=24, scene_size=64, versions=[2], out=str(tmp_path)))
    (row,) = result["versions"]
    assert row["version"] == 2 and row["objects"] == len(result["sizes"]["2"]) and 0 < row["image_objectness"] < 1
    table = B.gates_table(result)
    assert list(table.index) == ["v2", "paper, VOC07 (Table 2)"] and table.loc["paper, VOC07 (Table 2)",
                                                                          "Image-Crop objectness"] == "36.4"


def test_probe_uses_fewer_folds_when_a_class_is_rare():
    """A handful of scenes (the smoke preset) can hold a class with fewer objects than folds: the probe then
    uses as many folds as the rarest class has objects, without scikit-learn's warning, and still learns."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 3)
    features = rng.normal(size=(len(labels), 4)) + labels[:, None] * 3.0  # separable classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accuracy = gates.probe_accuracy(features, labels, folds=5)
    assert accuracy > 0.9
