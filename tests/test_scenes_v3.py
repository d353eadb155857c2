"""Scenes v3: v2's objects (the class is the shape) on a greyish ground that no object uses, so a crop's
ground no longer hides the silhouette; the validity gates still hold (colour does not name the class,
shape does)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from coarsecrop.cli import main as cli_main
from coarsecrop.data import gates
from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import render_scene, shared_scenes_name, write_scenes
from coarsecrop.data.synthetic_v2 import V2_CATEGORIES, V2_MAX_OBJECTS, V2_MAX_SCALE, V2_MIN_SCALE
from coarsecrop.data.synthetic_v3 import GROUND_MAX_SAT, OBJECT_MIN_SAT

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
SIZE = 128
GATE_SCENES = 120


@pytest.fixture(scope="module")
def v3_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("v3")
    write_scenes(out, num_images=GATE_SCENES, seed=0, size=SIZE, progress=False, version=3)
    return out


def test_v3_depends_only_on_seed_and_index(tmp_path):
    a = write_scenes(tmp_path / "a", 5, seed=5, size=64, progress=False, version=3)
    b = write_scenes(tmp_path / "b", 2, seed=5, size=64, progress=False, version=3)
    full, part = json.loads(a.read_text()), json.loads(b.read_text())
    assert part["images"] == full["images"][:2]
    assert part["annotations"] == [x for x in full["annotations"] if x["image_id"] <= 2]
    for entry in part["images"]:
        assert (tmp_path / "b" / entry["file_name"]).read_bytes() == (tmp_path / "a" / entry["file_name"]).read_bytes()
    assert full["info"]["generator_version"] == 3 and full["categories"] == V2_CATEGORIES
    assert not np.array_equal(render_scene(5, 4, 64, version=3).image, render_scene(6, 4, 64, version=3).image)
    assert not np.array_equal(render_scene(5, 4, 64, version=3).image, render_scene(5, 4, 64, version=2).image)
    assert shared_scenes_name(10, 64, 3, version=3) == "10x64px-seed3-v3"


def test_v3_keeps_v2s_objects(v3_set):
    scene_set = open_scenes(v3_set)
    seen = set()
    for scene in scene_set.scenes:
        masks = scene.instance_masks()
        assert 1 <= len(masks) <= V2_MAX_OBJECTS and (masks.sum(0) <= 1).all()
        seen.update(scene.labels.tolist())
    assert seen == {c["id"] for c in V2_CATEGORIES}
    assert all(V2_MIN_SCALE <= x <= V2_MAX_SCALE for i in range(10) for x in render_scene(7, i, SIZE, version=3).scales)


def _saturation(version: int) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation of the ground's pixels and of the objects' visible pixels, 20 scenes."""
    ground, objects = [], []
    for i in range(20):
        s = render_scene(7, i, SIZE, version=version)
        sat = cv2.cvtColor(s.image, cv2.COLOR_RGB2HSV)[..., 1] / 255.0
        on = np.any(s.masks, 0)
        ground.append(sat[~on])
        objects.append(sat[on])
    return np.concatenate(ground), np.concatenate(objects)


def test_the_ground_can_be_told_apart_from_the_objects_in_v3_not_in_v2():
    """Ground greyish, objects saturated in v3 (sensor noise, antialiased edges and dropped scraps aside);
    in v2 both draw from one distribution (about 60% of v2's ground is above the objects' floor)."""
    ground, objects = _saturation(3)
    assert np.mean(ground > (GROUND_MAX_SAT + OBJECT_MIN_SAT) / 2) < 0.03
    assert np.mean(objects < (GROUND_MAX_SAT + OBJECT_MIN_SAT) / 2) < 0.03
    ground2, _ = _saturation(2)
    assert np.mean(ground2 > (GROUND_MAX_SAT + OBJECT_MIN_SAT) / 2) > 0.3


def test_gates_pass_on_v3(v3_set):
    r = gates.measure_gates(v3_set)
    assert r["objects"] >= 500 and r["classes"] == 12
    assert r["colour_only"] <= r["chance"] + gates.COLOUR_MARGIN and r["colour_gate"]
    assert r["shape_only"] >= gates.SHAPE_FLOOR and r["shape_gate"]


def test_cli_scenes_version_3(tmp_path):
    assert cli_main(["scenes", "--out", str(tmp_path / "s"), "--num-images", "2", "--seed", "1", "--size", "64",
                     "--version", "3", "--quiet"]) == 0
    assert json.loads((tmp_path / "s" / "annotations.json").read_text())["info"]["generator_version"] == 3
