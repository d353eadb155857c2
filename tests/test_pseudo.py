"""The pseudo-image data set over a crop manifest (coarsecrop.data.pseudo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from coarsecrop.crops import manifest as mf
from coarsecrop.data.pseudo import PseudoImageDataset, cut_crop, sample_seed

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_manifest(root, records: list[dict]) -> mf.Manifest:
    """A real manifest folder (the crop job's writer functions) holding ``records``."""
    out = root / "manifest"
    config = {"num_images": len(records), "shard_size": 2, "root": str(root), "source": str(root)}
    mf.open_job_folder(out, config, mf.code_version())
    for k in range(0, len(records), 2):
        mf.write_shard(out, k // 2, records[k:k + 2])
    mf.write_manifest(out)
    return mf.read_manifest(out)


def two_colour_image(path, width=80, height=60):
    """Left half red, right half blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = RED
    a[:, width // 2:] = BLUE
    Image.fromarray(a).save(path)
    return a


@pytest.fixture()
def manifest(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(3):
        two_colour_image(tmp_path / "images" / f"{i}.png")
    box = lambda *b: torch.tensor([b], dtype=torch.float32)  # noqa: E731
    records = [
        mf.crop_line(0, "images/0.png", 80, 60, torch.cat([box(0, 0, 40, 60), box(40, 0, 80, 60),
                                                            box(45.5, 10.2, 70.7, 50.1)]), torch.ones(3)),
        mf.skipped_line(1, "images/broken.png", "truncated image"),
        mf.crop_line(2, "images/1.png", 80, 60, box(40, 0, 80, 60), torch.ones(1)),
        mf.crop_line(3, "images/2.png", 80, 60, torch.cat([box(0, 0, 80, 60), box(0, 0, 10, 10)]), torch.ones(2)),
    ]
    return write_manifest(tmp_path, records)


def test_one_sample_per_crop_and_skipped_images_skipped(manifest):
    ds = PseudoImageDataset(manifest)
    assert len(ds) == 3 + 1 + 2  # N crops per image give N samples; the skipped image gives none
    assert ds.num_images == 3 and ds.num_skipped == 1
    assert all("broken" not in f for f in ds.files)


def test_crop_is_cut_from_the_original_image(manifest, tmp_path):
    ds = PseudoImageDataset(manifest)
    full = np.asarray(Image.open(tmp_path / "images" / "0.png"))
    assert torch.equal(ds.crop(0), torch.from_numpy(full[:, :40].copy()).permute(2, 0, 1))
    third = ds.crop(2)  # fractional box 45.5,10.2,70.7,50.1 -> pixels 45..71 x 10..51 (covering)
    assert third.shape == (3, 41, 26)
    assert ds.crop(5).shape == (3, 10, 10)


def test_augmentations_act_inside_the_crop(manifest):
    """RandomResizedCrop runs on the pseudo-image: a crop of the blue half never shows red."""
    rrc = v2.RandomResizedCrop(16, scale=(0.05, 1.0), antialias=True)
    ds = PseudoImageDataset(manifest, transform=lambda crop: [rrc(crop), rrc(crop)])
    for epoch in range(5):
        for view in ds[(epoch, 1)]:  # the blue right half of image 0
            assert view.shape == (3, 16, 16)
            assert int(view[0].max()) == 0 and int(view[2].min()) == 255


def test_views_are_a_function_of_seed_epoch_and_index(manifest):
    rrc = v2.RandomResizedCrop(8, scale=(0.05, 0.5), antialias=True)
    ds = PseudoImageDataset(manifest, transform=lambda crop: [rrc(crop)], seed=3)
    a = ds[(2, 4)][0]  # the whole two-colour image 2
    torch.manual_seed(12345)  # the global RNG state must not matter ...
    state = torch.get_rng_state()
    b = ds[(2, 4)][0]
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())  # ... nor be disturbed by loading
    assert not all(torch.equal(a, ds[(e, 4)][0]) for e in range(3, 8))  # other epochs, other views
    assert sample_seed(3, 2, 0) != sample_seed(3, 0, 2)


def test_max_side_rescales_boxes(manifest):
    ds = PseudoImageDataset(manifest, max_side=40)  # images decoded at half size
    assert ds.crop(0).shape == (3, 30, 20)
    assert int(ds.crop(1)[2].min()) == 255


def test_cut_crop_never_empty():
    image = np.zeros((10, 12, 3), np.uint8)
    assert cut_crop(image, [11.9, 9.9, 12, 10]).shape == (3, 1, 1)
    assert cut_crop(image, [0, 0, 12, 10]).shape == (3, 10, 12)


def test_image_strategy_manifest_is_the_image_crop_baseline(tmp_path):
    from coarsecrop.crops.job import run_crop_job

    (tmp_path / "scenes").mkdir()
    for i in range(3):
        two_colour_image(tmp_path / "scenes" / f"{i}.png", width=50 + 10 * i)
    run_crop_job(tmp_path / "scenes", out=tmp_path / "m", strategy="image", n=5, workers=0, progress=False,
                 device="cpu")
    ds = PseudoImageDataset(mf.read_manifest(tmp_path / "m"))
    assert len(ds) == 3
    assert sorted(ds.crop(i).shape[2] for i in range(3)) == [50, 60, 70]
