"""Export: torchvision state_dicts load strictly into torchvision models; detectron2 names follow MoCo."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from coarsecrop.evaluate import d2
from coarsecrop.evaluate.export import detectron2_name, export_checkpoint, to_detectron2, to_torchvision
from coarsecrop.models.backbones import build_backbone

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def r50_state():
    return build_backbone("resnet50", seed=3).state_dict()


@pytest.fixture(scope="module")
def r50_files(tmp_path_factory, r50_state):
    """The same trunk as our trainer's backbone.pt and as a full training checkpoint (prefixed keys)."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.save(r50_state, root / "backbone.pt")
    full = {"model": {**{f"backbone.{k}": v for k, v in r50_state.items()},
                      **{f"momentum_backbone.{k}": v + 1 for k, v in r50_state.items() if v.is_floating_point()},
                      "head.0.weight": torch.zeros(8, 2048)},
            "step": 10, "params": {"backbone": "resnet50", "method": "moco_v2"}}
    torch.save(full, root / "checkpoint.pt")
    return root


def _same(state, ref):
    assert set(state) == set(ref)
    for k in ref:
        assert torch.equal(torch.as_tensor(state[k]), ref[k]), k


def test_torchvision_export_loads_strictly_into_resnet50(r50_files, r50_state, tmp_path):
    for src in ("backbone.pt", "checkpoint.pt"):
        out = export_checkpoint(r50_files / src, "torchvision", tmp_path / f"{src}.tv.pt", backbone=None)
        sd = torch.load(out, weights_only=True)
        model = torchvision.models.resnet50()
        model.load_state_dict(sd, strict=True)
        _same({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, r50_state)
        assert sd["fc.weight"].shape == (1000, 2048)


def test_torchvision_export_without_fc_loads_into_detection_backbones(r50_files, r50_state, tmp_path):
    out = export_checkpoint(r50_files / "checkpoint.pt", "torchvision", tmp_path / "tv.pt",
                            backbone="resnet50", include_fc=False)
    sd = torch.load(out, weights_only=True)
    assert not any(k.startswith("fc.") for k in sd)
    fpn = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5)
    fpn.body.load_state_dict(sd, strict=True)
    frcnn = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    frcnn.backbone.body.load_state_dict(sd, strict=True)
    _same(frcnn.backbone.body.state_dict(), r50_state)


def test_fc_is_a_fresh_seeded_init(r50_state):
    a = to_torchvision(r50_state, seed=0)["fc.weight"]
    assert torch.equal(a, to_torchvision(r50_state, seed=0)["fc.weight"])
    assert not torch.equal(a, to_torchvision(r50_state, seed=1)["fc.weight"])
    assert a.abs().max() <= 1 / 2048 ** 0.5 + 1e-6  # nn.Linear's default uniform bound


def test_detectron2_names_explicit_table():
    table = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.weight": "stem.conv1.norm.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.conv1.weight": "res2.0.conv1.weight",
        "layer1.0.bn1.bias": "res2.0.conv1.norm.bias",
        "layer1.0.bn3.running_mean": "res2.0.conv3.norm.running_mean",
        "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
        "layer1.0.downsample.1.weight": "res2.0.shortcut.norm.weight",
        "layer2.3.conv2.weight": "res3.3.conv2.weight",
        "layer3.5.bn2.num_batches_tracked": "res4.5.conv2.norm.num_batches_tracked",
        "layer4.0.downsample.1.running_var": "res5.0.shortcut.norm.running_var",
        "layer4.2.bn3.weight": "res5.2.conv3.norm.weight",
    }
    for key, name in table.items():
        assert detectron2_name(key) == name


def _detectron2_r50_names() -> set[str]:
    """detectron2's ResNet-50 parameter names, built from its layout (stem + res2..res5 bottlenecks)."""
    names = {"stem.conv1.weight"} | {f"stem.conv1.norm.{p}" for p in BN}
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(blocks):
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if b == 0 else [])
            for c in convs:
                names.add(f"res{stage}.{b}.{c}.weight")
                names |= {f"res{stage}.{b}.{c}.norm.{p}" for p in BN}
    return names


def test_detectron2_export_is_a_bijection_with_values_kept(r50_files, r50_state, tmp_path):
    out = export_checkpoint(r50_files / "checkpoint.pt", "detectron2", tmp_path / "r50.pkl")
    with open(out, "rb") as f:
        obj = pickle.load(f)
    assert obj["__author__"] == "coarsecrop" and obj["matching_heuristics"] is True
    model = obj["model"]
    assert set(model) == _detectron2_r50_names()
    assert len(model) == len(r50_state)  # one name per key: a bijection
    for key, value in r50_state.items():
        arr = model[detectron2_name(key)]
        assert isinstance(arr, np.ndarray)
        np.testing.assert_array_equal(arr, value.numpy())


def test_detectron2_drops_a_classifier():
    state = {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(2)}
    assert set(to_detectron2(state)["model"]) == {"stem.conv1.weight"}


def test_export_rejects_other_architecture_and_corrupt_files(r50_files, tmp_path):
    with pytest.raises(ValueError, match="resnet50"):
        export_checkpoint(r50_files / "backbone.pt", "torchvision", tmp_path / "x.pt", backbone="resnet18")
    data = (r50_files / "backbone.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt.*(truncated|corrupt)"):
        export_checkpoint(tmp_path / "cut.pt", "detectron2", tmp_path / "x.pkl", backbone="resnet50")
    with pytest.raises(ValueError, match="format"):
        export_checkpoint(r50_files / "backbone.pt", "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.pkl").exists()


def test_shipped_detectron2_configs_follow_the_paper():
    import yaml

    assert set(d2.config_names()) == {
        "voc0712_faster_rcnn_R_50_C4_24k", "coco_mask_rcnn_R_50_C4_1x", "coco_mask_rcnn_R_50_FPN_1x"}
    for name in d2.config_names():
        cfg = yaml.safe_load(d2.config_path(name).read_text())
        base = yaml.safe_load((d2.CONFIG_DIR / cfg["_BASE_"]).read_text())
        model = base["MODEL"]
        assert model["PIXEL_MEAN"] == [123.675, 116.280, 103.530]
        assert model["PIXEL_STD"] == [58.395, 57.120, 57.375]
        assert base["INPUT"]["FORMAT"] == "RGB"
        assert model["RESNETS"]["STRIDE_IN_1X1"] is False
        assert model["RESNETS"]["NORM"] == "SyncBN"
        assert model["BACKBONE"]["FREEZE_AT"] == 0
    voc = yaml.safe_load(d2.config_path("voc0712_faster_rcnn_R_50_C4_24k").read_text())
    assert voc["SOLVER"]["MAX_ITER"] == 24000 and voc["MODEL"]["MASK_ON"] is False
    for name in ("coco_mask_rcnn_R_50_C4_1x", "coco_mask_rcnn_R_50_FPN_1x"):
        cfg = yaml.safe_load(d2.config_path(name).read_text())
        assert cfg["SOLVER"]["MAX_ITER"] == 90000 and cfg["MODEL"]["MASK_ON"] is True


def test_detectron2_stays_optional():
    """Every evaluation module imports with detectron2 made unimportable; d2's helpers say what is missing."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['detectron2'] = None\n"
        "import importlib, pkgutil, coarsecrop.evaluate as ev\n"
        "for m in pkgutil.iter_modules(ev.__path__): importlib.import_module(f'coarsecrop.evaluate.{m.name}')\n"
        "from coarsecrop.evaluate import d2\n"
        "try:\n    d2.load_config('coco_mask_rcnn_R_50_FPN_1x')\n"
        "except ImportError as e:\n    print('ImportError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError: detectron2 is not installed" in out.stdout


def test_narrow_trainer_checkpoint_exports_the_online_trunk(tmp_path):
    """A full training checkpoint holds the online trunk and its momentum copy: the online one is exported."""
    from coarsecrop.evaluate.checkpoints import make_trunk

    online, target = make_trunk("resnet10_w8", seed=1).state_dict(), make_trunk("resnet10_w8", seed=2).state_dict()
    ckpt = {"arch": {"method": "byol", "backbone": "resnet10_w8", "image_size": 32},
            "model": {**{f"momentum_backbone.{k}": v for k, v in target.items()},
                      **{f"backbone.{k}": v for k, v in online.items()}}}
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    out = export_checkpoint(tmp_path / "checkpoint.pt", "torchvision", tmp_path / "tv.pt", include_fc=False)
    _same(torch.load(out, weights_only=True), online)
    with open(export_checkpoint(tmp_path / "checkpoint.pt", "detectron2", tmp_path / "d2.pkl"), "rb") as f:
        model = pickle.load(f)["model"]
    np.testing.assert_array_equal(model["res2.0.conv1.weight"], online["layer1.0.conv1.weight"].numpy())
