"""View pipelines (coarsecrop/data/views.py): counts, sizes, dtypes, the no-RRC switch, seeding, errors."""

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode, v2

from coarsecrop.data.views import (IMAGENET_MEAN, IMAGENET_STD, PIPELINES, FastColorJitter, SeparableGaussianBlur,
                                   adjust_hue, blur_kernel_sigma, gaussian_blur, view_pipeline)



pytestmark = pytest.mark.usefixtures("one_torch_thread")

def image(h=60, w=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def denormalise(view):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return view * std + mean


@pytest.mark.parametrize("name,count", [("moco_v2", 2), ("byol", 2), ("mae", 1)])
def test_pipelines_give_views_of_size_and_dtype(name, count):
    views = view_pipeline(name, 32)(image())
    assert len(views) == count
    for v in views:
        assert v.shape == (3, 32, 32) and v.dtype == torch.float32 and torch.isfinite(v).all()
        assert -0.01 <= denormalise(v).min() and denormalise(v).max() <= 1.01  # normalised from [0, 1]


@pytest.mark.parametrize("name", ["moco_v2", "byol"])
def test_multi_crop_adds_small_local_views(name):
    pipe = view_pipeline(name, 64, local_views=3)
    views = pipe(image())
    assert len(pipe) == len(views) == 5
    assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 2 + [(3, 27, 27)] * 3  # 27 = round(64 * 96 / 224)
    assert [tuple(v.shape) for v in view_pipeline(name, 224, local_views=1)(image())][-1] == (3, 96, 96)


def test_without_random_resized_crop_the_whole_image_is_resized():
    img = image(40, 70)
    pipe = view_pipeline("mae", 32, random_resized_crop=False)  # MAE: geometry + flip only
    resized = v2.functional.resize(img, [32, 32], interpolation=InterpolationMode.BICUBIC, antialias=True)
    expected = [v2.functional.to_dtype(x, torch.float32, scale=True) for x in (resized, resized.flip(-1))]
    for seed in range(6):
        got = denormalise(pipe(img, seed=seed)[0])
        assert min((got - e).abs().max().item() for e in expected) < 1e-5
    # the RRC pipeline cuts parts away: some view differs from both
    rrc = view_pipeline("mae", 32)
    assert any(min((denormalise(rrc(img, seed=s)[0]) - e).abs().max().item() for e in expected) > 0.05
               for s in range(6))


@pytest.mark.parametrize("name", PIPELINES)
def test_without_random_resized_crop_every_global_view_starts_with_a_full_resize(name):
    for view in view_pipeline(name, 32, random_resized_crop=False).global_views:
        assert isinstance(view.transforms[0], v2.Resize) and list(view.transforms[0].size) == [32, 32]
    img = torch.zeros(3, 50, 80, dtype=torch.uint8)
    img[:, :25] = 255  # top half white, bottom half black: a full resize keeps the split at the middle row
    if name == "moco_v2":  # (no solarization, which would blacken the white half)
        for seed in range(5):
            for view in view_pipeline(name, 32, random_resized_crop=False)(img, seed=seed):
                x = denormalise(view).mean(0)
                assert x[:14].mean() > x[18:].mean() + 0.2


def test_seed_makes_views_reproducible_and_keeps_caller_rng():
    pipe = view_pipeline("byol", 32, local_views=2)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = pipe(image(), seed=7), pipe(image(), seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = pipe(image(), seed=8)
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


def test_bad_input_and_names_fail_clearly():
    pipe = view_pipeline("moco_v2", 32)
    with pytest.raises(ValueError, match="uint8"):
        pipe(image().float())
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        pipe(image().permute(1, 2, 0))
    with pytest.raises(TypeError, match="tensor"):
        pipe(image().numpy())
    with pytest.raises(ValueError, match="moco_v2, byol, mae"):
        view_pipeline("simclr", 32)
    with pytest.raises(ValueError, match="MAE takes one view"):
        view_pipeline("mae", 32, local_views=2)


def test_small_and_thin_images_still_give_views():
    for h, w in [(9, 9), (3, 120), (200, 4)]:
        for name in PIPELINES:
            assert all(v.shape == (3, 16, 16) for v in view_pipeline(name, 16)(image(h, w)))


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_separable_blur_equals_torchvision_blur(sigma):
    img = image(30, 40)
    k = 2 * math.ceil(3 * sigma) + 1
    ref = v2.functional.gaussian_blur(img.float(), [k, k], [sigma, sigma])
    assert (gaussian_blur(img.float(), sigma) - ref).abs().max() < 1e-3
    ref_u8 = v2.functional.gaussian_blur(img, [k, k], [sigma, sigma])
    assert (gaussian_blur(img, sigma).int() - ref_u8.int()).abs().max() <= 1


def test_blur_sigma_scales_with_view_size_and_asymmetric_byol_pair():
    assert blur_kernel_sigma(224) == (0.1, 2.0)
    assert blur_kernel_sigma(112) == pytest.approx((0.05, 1.0))
    one, two = view_pipeline("byol", 224).global_views

    def probabilities(pipe, kind):
        return [t.p for t in pipe.transforms if isinstance(t, v2.RandomApply)
                and isinstance(t.transforms[0], kind)] + [t.p for t in pipe.transforms if isinstance(t, kind)]
    assert probabilities(one, SeparableGaussianBlur) == [1.0] and probabilities(two, SeparableGaussianBlur) == [0.1]
    assert probabilities(one, v2.RandomSolarize) == [] and probabilities(two, v2.RandomSolarize) == [0.2]
    crop = one.transforms[0]
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    moco = view_pipeline("moco_v2", 224).global_views[0].transforms
    assert moco[0].scale == (0.2, 1.0)
    jitter = [t.transforms[0] for t in moco
              if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.ColorJitter)][0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
        (0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))


def test_fast_colour_jitter_equals_torchvision_colour_jitter():
    img = image(24, 32)
    img[:, :4, :4] = 90  # grey pixels: hue undefined, must stay grey
    imgf = img.float() / 255
    for hue in (-0.5, -0.2, 0.0, 0.1, 0.5):
        assert (adjust_hue(imgf, hue) - v2.functional.adjust_hue(imgf, hue)).abs().max() < 1e-5
    for seed in range(4):
        torch.manual_seed(seed)
        ours_f = FastColorJitter(0.4, 0.4, 0.4, 0.1)(imgf)
        torch.manual_seed(seed)
        ref_f = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)(imgf)
        assert (ours_f - ref_f).abs().max() < 1e-5  # same random draws, same maths
        torch.manual_seed(seed)
        ours_u8 = FastColorJitter(0.4, 0.4, 0.4, 0.1)(img)
        torch.manual_seed(seed)
        ref_u8 = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)(img)
        assert ours_u8.dtype == torch.uint8 and (ours_u8.int() - ref_u8.int()).abs().max() <= 8  # per-step rounding
    assert torch.equal(adjust_hue(imgf, 0.3)[:, :4, :4], imgf[:, :4, :4])


def test_pipelines_pickle_for_dataloader_workers():
    import pickle
    pipe = view_pipeline("byol", 16, local_views=1)
    copy = pickle.loads(pickle.dumps(pipe))
    assert all(torch.equal(a, b) for a, b in zip(pipe(image(), seed=3), copy(image(), seed=3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipelines_run_on_gpu_tensors():
    for name in PIPELINES:
        views = view_pipeline(name, 32)(image().cuda())
        assert all(v.is_cuda and v.shape == (3, 32, 32) for v in views)
