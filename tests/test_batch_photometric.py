"""The GPU half of the views (coarsecrop.data.batch_photometric) against the CPU pipeline's steps."""

import pytest
import torch
from torchvision.transforms import v2

from coarsecrop.data.batch_photometric import BatchPhotometric, batch_photometric, gaussian_blur_batch, jitter_step
from coarsecrop.data.views import IMAGENET_MEAN, IMAGENET_STD, adjust_hue, gaussian_blur, view_pipeline, view_specs


def images(n=6, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


CPU_STEPS = (v2.functional.adjust_brightness, v2.functional.adjust_contrast, v2.functional.adjust_saturation,
             adjust_hue)


@pytest.mark.parametrize("step", range(4))
def test_each_jitter_step_matches_the_cpu_step_image_by_image(step):
    x = images().float() / 255
    factors = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.9]) if step < 3 else torch.linspace(-0.1, 0.1, 6)
    batched = jitter_step(x.clone(), step, factors)
    for i in range(len(x)):
        expected = CPU_STEPS[step](x[i], float(factors[i]))
        torch.testing.assert_close(batched[i], expected, atol=1e-5, rtol=0)


def test_forward_with_fixed_draws_equals_the_cpu_steps():
    views = images(n=5)
    module = BatchPhotometric(24, dict(jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5, solarize_p=0.2))
    params = {"jitter": torch.tensor([True, True, False, True, True]),
              "order": torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3], [1, 3, 0, 2], [2, 0, 3, 1]]),
              "factors": torch.tensor([[1.2, 0.7, 1.3, 0.05]] * 5),
              "gray": torch.tensor([False, True, False, False, True]),
              "blur": torch.tensor([True, False, True, True, False]),
              "sigma": torch.full((5,), 0.8),
              "solarize": torch.tensor([False, False, True, True, False])}
    out = module(views, params)
    for i in range(5):
        x = views[i].float() / 255
        if params["jitter"][i]:
            for step in params["order"][i].tolist():
                x = CPU_STEPS[step](x, float(params["factors"][i, step]))
        if params["gray"][i]:
            x = v2.functional.rgb_to_grayscale(x, num_output_channels=3)
        if params["blur"][i]:
            x = gaussian_blur(x, 0.8)
        if params["solarize"][i]:
            x = torch.where(x >= 128 / 255, 1 - x, x)
        expected = v2.functional.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)


def test_per_image_blur_sigma_is_close_to_the_cpu_blur():
    x = images(n=3).float()
    sigma = torch.tensor([0.3, 1.0, 2.0])
    out = gaussian_blur_batch(x, sigma)
    for i in range(3):  # one radius for the batch: a few tiny extra taps for the smaller sigmas
        assert (out[i] - gaussian_blur(x[i], float(sigma[i]))).abs().mean() < 0.5  # grey levels


def test_random_draws_follow_the_probabilities_and_ranges():
    torch.manual_seed(0)
    module = BatchPhotometric(224, dict(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1, solarize_p=0.2))
    d = module.draw(20000)
    assert abs(d["jitter"].float().mean() - 0.8) < 0.02 and abs(d["gray"].float().mean() - 0.2) < 0.02
    assert abs(d["blur"].float().mean() - 0.1) < 0.01 and abs(d["solarize"].float().mean() - 0.2) < 0.02
    assert d["factors"][:, 0].min() >= 0.6 and d["factors"][:, 0].max() <= 1.4
    assert d["factors"][:, 2].min() >= 0.8 and d["factors"][:, 2].max() <= 1.2
    assert d["factors"][:, 3].abs().max() <= 0.1
    assert d["sigma"].min() >= 0.1 and d["sigma"].max() <= 2.0
    assert sorted(d["order"][0].tolist()) == [0, 1, 2, 3] and len({tuple(o) for o in d["order"].tolist()}) == 24


@pytest.mark.parametrize("name,local", [("moco_v2", 0), ("byol", 2), ("mae", 0)])
def test_device_views_are_uint8_geometry_and_align_with_the_batch_modules(name, local):
    pipeline = view_pipeline(name, 32, local_views=local, photometric_on="device")
    modules = batch_photometric(name, 32, local_views=local)
    views = pipeline(images(n=1, size=40)[0], seed=0)
    assert len(views) == len(modules) == len(view_specs(name, 32, local_views=local))
    for v, m in zip(views, modules):
        assert v.dtype == torch.uint8 and v.shape[-1] == m.size
        out = m(v[None])
        assert out.dtype == torch.float32 and out.shape == (1, 3, m.size, m.size)
    if name == "byol":
        assert (modules[0].blur_p, modules[1].blur_p, modules[1].solarize_p) == (1.0, 0.1, 0.2)
    if name == "mae":
        x = views[0][None]
        expected = v2.functional.normalize(x.float() / 255, IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(modules[0](x), expected)


def test_bad_input_and_setting_fail_clearly():
    with pytest.raises(ValueError, match="uint8 views"):
        BatchPhotometric(8, None)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="photometric_on"):
        view_pipeline("moco_v2", 32, photometric_on="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_result_equals_cpu_result_for_the_same_draws():
    module = BatchPhotometric(32, dict(jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5, solarize_p=0.2))
    views = images(n=64, size=32)
    torch.manual_seed(0)
    params = module.draw(64)
    cpu = module(views, params)
    gpu = module.to("cuda")(views.cuda(), params).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=0)
