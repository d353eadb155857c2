"""EdgeBox on structured edges (``edge_model``), with a tiny forest written here in the format OpenCV loads."""

import os
import pickle
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torchvision

from coarsecrop.boxes import is_valid
from coarsecrop.crops.job import job_config
from coarsecrop.crops.strategies import make_strategy, strategy_parameters
from coarsecrop.crops.strategies.proposals import (SED_MIN_SIDE, check_edge_model, edge_maps,
                                                   structured_edge_maps)
from coarsecrop.data.scenes import Scene
from coarsecrop.io import file_sha256

PATCH, INNER, SHRINK = 32, 16, 2  # the geometry of Dollar & Zitnick's model.yml.gz
GRADIENT_MAGNITUDE = 3  # feature channels: L, U, V, then the normalised gradient magnitude at full scale
OBJECT = [40, 20, 100, 80]  # x1 y1 x2 y2 of the ellipse in ``lone_object``


def write_forest(path, threshold: float, drop: tuple = (), **changed) -> str:
    """A one-tree structured edge forest that OpenCV's createStructuredEdgeDetection loads (the reader in
    opencv_contrib modules/ximgproc/src/structured_edge_detection.cpp): ``options`` (ints), and per tree
    one int / float sequence in each of childs, featureIds, thresholds, edgeBoundaries and edgeBins.

    The tree: root 0 splits on the gradient magnitude at the patch centre (channel 3, feature id
    z * s^2 + col * s + row with s = PATCH / SHRINK); childs[0] = 2 sends feature < ``threshold`` to node 1
    (a leaf marking nothing) and the rest to node 2 (a leaf marking the 2x2 pixels under that feature
    cell, each bin listed 32 times: a patch adds 2 stride^2 / INNER^2 = 1/32 per listed bin, so a firing
    pixel gets edge 1). So edges follow strong gradients that stand out from their neighbourhood (the
    magnitude is normalised by its local mean): object boundaries, not the texture around them.
    ``drop`` leaves options or sequences out and ``changed`` sets options: a malformed model."""
    c = PATCH // SHRINK // 2
    feature = GRADIENT_MAGNITUDE * (PATCH // SHRINK) ** 2 + c * (PATCH // SHRINK) + c
    first = SHRINK * c - (PATCH - INNER) // 2  # the cell's first pixel row in the inner patch (padding cut off)
    bins = [row + col * INNER for row in (first, first + 1) for col in (first, first + 1)] * 32
    options = dict(stride=2, shrinkNumber=SHRINK, patchSize=PATCH, patchInnerSize=INNER,
                   numberOfGradientOrientations=4, gradientSmoothingRadius=0, regFeatureSmoothingRadius=2,
                   ssFeatureSmoothingRadius=8, gradientNormalizationRadius=4, selfsimilarityGridSize=5,
                   numberOfTrees=1, numberOfTreesToEvaluate=1)
    trees = {"childs": [2, 0, 0], "featureIds": [feature, 0, 0], "thresholds": [float(threshold), 0.0, 0.0],
             "edgeBoundaries": [0, 0, 0, len(bins)], "edgeBins": bins}
    options = {k: v for k, v in {**options, **changed}.items() if k not in drop}
    trees = {k: v for k, v in trees.items() if k not in drop}
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.startWriteStruct("options", cv2.FileNode_MAP)
    for key, value in options.items():
        fs.write(key, value)
    fs.endWriteStruct()
    for key, tree in trees.items():
        fs.startWriteStruct(key, cv2.FileNode_SEQ)
        fs.startWriteStruct("", cv2.FileNode_SEQ | cv2.FileNode_FLOW)
        for value in tree:
            fs.write("", value)
        fs.endWriteStruct()
        fs.endWriteStruct()
    fs.release()
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sed")
    return {"boundary": write_forest(folder / "boundary.yml.gz", 1.05),
            "blind": write_forest(folder / "blind.yml.gz", 1e9)}  # never fires


def lone_object(height=96, width=128, seed=5):
    """Noise texture (40..100) with one red ellipse inside OBJECT: (uint8 [3, H, W], Scene, object mask)."""
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(3, height, width, generator=g) * 60 + 40).to(torch.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    x1, y1, x2, y2 = OBJECT
    mask = ((xx + 0.5 - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((yy + 0.5 - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 <= 1
    img[:, torch.from_numpy(mask)] = torch.tensor([230, 60, 30], dtype=torch.uint8)[:, None]
    scene = Scene(id="lone", file="/nowhere/lone.png", width=width, height=height, annotated=False)
    return img, scene, mask


def test_generated_forest_marks_the_boundary_where_sobel_marks_the_texture_too(models):
    img, _, mask = lone_object()
    H, W = mask.shape
    band = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((5, 5))) > 0
    away = np.zeros_like(mask)
    away[10:-10, 10:-10] = True  # off the image border
    background = away & ~band & ~mask
    detector = cv2.ximgproc.createStructuredEdgeDetection(models["boundary"])
    edges, orientation = structured_edge_maps(img, detector)
    assert edges.shape == orientation.shape == (H, W) and edges.dtype == orientation.dtype == np.float32
    assert 0 <= edges.min() and edges.max() <= 1 and 0 <= orientation.min() and orientation.max() <= np.float32(np.pi)
    sobel, _ = edge_maps(img)
    assert (edges[band & away] > 0.1).mean() > 0.15
    assert (edges[background] > 0.1).mean() < 0.02  # the learned-like edges skip the texture ...
    assert (sobel[background] > 0.1).mean() > 0.2  # ... which the Sobel edges mark
    blind = cv2.ximgproc.createStructuredEdgeDetection(models["blind"])
    assert not structured_edge_maps(img, blind)[0].any()


def test_edgebox_on_structured_edges_follows_the_model(models):
    """The boundary forest's best box fits the object; a forest that marks nothing gives no proposal, so
    the whole image, where the Sobel path proposes boxes: the boxes come from the model file."""
    img, scene, _ = lone_object()
    sobel = make_strategy("edgebox")
    strategy = make_strategy("edgebox", edge_model=models["boundary"])
    (boxes, scores), = strategy([img], [scene])
    assert 2 <= len(boxes) <= 5 and is_valid(boxes, 128, 96) and torch.all(scores[:-1] >= scores[1:])
    assert float(torchvision.ops.box_iou(boxes[:1], torch.tensor([OBJECT], dtype=torch.float32))) >= 0.7
    (again, _), = strategy([img], [scene])
    assert torch.equal(again, boxes)
    (theirs, _), = sobel([img], [scene])
    assert not torch.equal(theirs, boxes)
    (whole, _), = make_strategy("edgebox", edge_model=models["blind"])([img], [scene])
    assert whole.tolist() == [[0.0, 0.0, 128.0, 96.0]] and len(theirs) > 1


def test_structured_path_gives_small_images_the_whole_image(models):
    strategy = make_strategy("edgebox", edge_model=models["boundary"])
    for h in (SED_MIN_SIDE - 1, SED_MIN_SIDE, 40):  # OpenCV's detectEdges fails on sides under 15 px
        img, scene, _ = lone_object(height=h, width=48)
        (boxes, _), = strategy([img], [scene])
        assert len(boxes) >= 1 and is_valid(boxes, 48, h)
        if h < SED_MIN_SIDE:
            assert boxes.tolist() == [[0.0, 0.0, 48.0, float(h)]]


def test_detector_is_loaded_once_on_first_use_and_the_strategy_pickles(models, monkeypatch):
    loads = []
    create = cv2.ximgproc.createStructuredEdgeDetection
    monkeypatch.setattr(cv2.ximgproc, "createStructuredEdgeDetection", lambda path: loads.append(path) or create(path))
    strategy = make_strategy("edgebox", edge_model=models["boundary"])
    assert loads == []  # lazily: not when built
    img, scene, _ = lone_object()
    first = strategy([img, img], [scene, scene])
    strategy([img], [scene])
    assert loads == [os.path.abspath(models["boundary"])]
    copy = pickle.loads(pickle.dumps(strategy))
    assert strategy._detector is not None and copy._detector is None
    assert torch.equal(copy([img], [scene])[0][0], first[0][0]) and len(loads) == 2
    assert make_strategy("edgebox").detector is None


def test_missing_model_fails_when_the_strategy_is_built(tmp_path):
    missing = str(tmp_path / "model.yml.gz")
    with pytest.raises(ValueError, match="edge_model") as err:
        make_strategy("edgebox", edge_model=missing)
    for part in (missing, "opencv_extra", "testdata/cv/ximgproc/model.yml.gz", "Dollar & Zitnick", "place yourself"):
        assert part in str(err.value)


@pytest.mark.parametrize("drop,changed,says", [
    ((), {"numberOfTrees": 0}, "options/numberOfTrees is 0, must be at least 1"),  # OpenCV: SIGFPE
    (("shrinkNumber",), {}, "options/shrinkNumber is missing"),
    ((), {"patchInnerSize": 40}, "patchInnerSize 40 exceeds patchSize 32"),
    ((), {"numberOfTrees": 2, "numberOfTreesToEvaluate": 2}, "'childs' is not a sequence of numberOfTrees (2)"),
    (("edgeBins",), {}, "'edgeBins' is not a sequence"),  # OpenCV: SIGSEGV at the first image
    ("not yaml", {}, "OpenCV cannot read it ("),
    ("no options", {}, "no 'options' mapping"),
])
def test_a_malformed_model_fails_when_the_strategy_is_built_naming_the_file(tmp_path, drop, changed, says):
    """A forest OpenCV would load without checking and then crash on (or refuse with a bare cv2.error at the
    first image, inside a worker) is refused when the strategy is built: the file and what is wrong in it."""
    path = tmp_path / "model.yml.gz"
    if drop == "not yaml":
        path.write_text("this is { not yaml")
    elif drop == "no options":
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
        fs.write("childs", 1)
        fs.release()
    else:
        write_forest(path, 1.05, drop=drop, **changed)
    with pytest.raises(ValueError) as err:
        make_strategy("edgebox", edge_model=str(path))
    for part in (str(path), says, "testdata/cv/ximgproc/model.yml.gz"):
        assert part in str(err.value)
    assert "returned a result with an exception set" not in str(err.value)  # OpenCV's own words, not Python's


def test_the_checked_forest_is_one_opencv_runs(models):
    """What ``check_edge_model`` accepts is what OpenCV loads and detects edges with: the fixture's forest."""
    check_edge_model(models["boundary"])
    img, _, _ = lone_object()
    edges, _ = structured_edge_maps(img, cv2.ximgproc.createStructuredEdgeDetection(models["boundary"]))
    assert edges.shape == tuple(img.shape[-2:]) and edges.max() > 0


def test_default_config_unchanged_and_the_model_file_fingerprinted(models, tmp_path):
    """Without edge_model the recorded parameters are the ones written before it existed (existing manifests
    resume); with it, the file's path and sha256, so another model file, or the same path rewritten, is
    another crop job."""
    assert strategy_parameters("edgebox")["edge_model"] is None

    def config(strategy):
        return job_config(SimpleNamespace(format="coco", root=str(tmp_path)), [], str(tmp_path / "s.json"), None,
                          None, strategy, 5, None, None, 256, 1333, torch.device("cpu"))["params"]

    assert config(make_strategy("edgebox")) == {"alpha": 0.65, "beta": 0.75, "blur": 1.0, "min_box_area": 1000,
                                                "min_score": 0.01, "n": 5}
    path = write_forest(tmp_path / "model.yml.gz", 1.05)
    before = config(make_strategy("edgebox", edge_model=path))
    assert before["edge_model"] == {"path": os.path.abspath(path), "sha256": file_sha256(path)}
    assert list(before) == sorted(before)
    write_forest(path, 1.1)
    after = config(make_strategy("edgebox", edge_model=path))
    assert after["edge_model"]["path"] == before["edge_model"]["path"]
    assert after["edge_model"]["sha256"] != before["edge_model"]["sha256"]
    assert {k: v for k, v in after.items() if k != "edge_model"} == config(make_strategy("edgebox"))
