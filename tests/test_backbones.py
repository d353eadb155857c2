"""phi: ResNet trunks, seeded random init, checkpoint loading and its errors."""

import pytest
import torch
import torchvision

from coarsecrop.models.backbones import build_backbone, guess_architecture, load_backbone_weights


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(123)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_trunk_output_and_names():
    net = build_backbone("resnet18", seed=0)
    assert not net.training
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 512, 2, 3)
    assert not any(k.startswith("fc.") for k in net.state_dict())
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, resnet101"):
        build_backbone("vgg16")


def test_random_init_is_deterministic_from_seed_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = build_backbone("resnet18", seed=3).state_dict()
    after = torch.rand(1)
    b = build_backbone("resnet18", seed=3).state_dict()
    c = build_backbone("resnet18", seed=4).state_dict()
    assert torch.equal(before, after)  # global RNG stream untouched
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, resnet18_state):
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    net = build_backbone("resnet18", checkpoint=path, seed=99)
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(resnet18_state)
    ref.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
        assert torch.equal(net(x), expected)


def test_wrapped_and_prefixed_checkpoints_load(tmp_path, resnet18_state):
    moco = {f"module.encoder_q.{k}": v for k, v in resnet18_state.items()}
    moco.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in resnet18_state.items()})
    moco["module.encoder_q.fc.0.weight"] = torch.zeros(4, 512)  # MLP head: ignored
    torch.save({"state_dict": moco, "epoch": 3}, tmp_path / "moco.pth")
    byol = {f"online_network.encoder.{k}": v for k, v in resnet18_state.items()
            if not k.endswith("num_batches_tracked")}  # old checkpoints lack these
    torch.save({"model": byol}, tmp_path / "byol.pth")
    for name in ("moco.pth", "byol.pth"):
        net = load_backbone_weights(build_backbone("resnet18", seed=5), tmp_path / name)
        assert torch.equal(net.state_dict()["layer4.1.conv2.weight"], resnet18_state["layer4.1.conv2.weight"])


def test_wrong_architecture_names_both(tmp_path, resnet18_state):
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    with pytest.raises(ValueError) as err:
        build_backbone("resnet50", checkpoint=path)
    msg = str(err.value)
    assert str(path) in msg and "looks like resnet18" in msg and "expected resnet50" in msg
    assert guess_architecture(build_backbone("resnet34").state_dict()).startswith("resnet34")


def test_shape_mismatch_is_reported(tmp_path, resnet18_state):
    bad = dict(resnet18_state)
    bad["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="shape mismatch"):
        build_backbone("resnet18", checkpoint=tmp_path / "bad.pth")


def test_corrupt_truncated_and_missing_files(tmp_path, resnet18_state):
    full = tmp_path / "full.pth"
    torch.save(resnet18_state, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: 5000])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    for path in (cut, junk):
        with pytest.raises(ValueError, match="cannot read checkpoint") as err:
            build_backbone("resnet18", checkpoint=path)
        assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        build_backbone("resnet18", checkpoint=tmp_path / "nope.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="no torchvision ResNet"):
        build_backbone("resnet18", checkpoint=tmp_path / "odd.pth")


def test_architecture_is_read_from_the_checkpoint(tmp_path, resnet18_state):
    from coarsecrop.crops.strategies import make_strategy
    from coarsecrop.models.backbones import checkpoint_architecture

    path = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.backbone.{k}": v for k, v in resnet18_state.items()}}, path)
    assert checkpoint_architecture(path) == "resnet18"
    assert make_strategy("ours", backbone=None, checkpoint=path).params["backbone"] == "resnet18"
    assert make_strategy("ours", backbone=None).params["backbone"] == "resnet50"
