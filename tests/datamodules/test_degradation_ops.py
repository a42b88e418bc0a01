"""Blur, USM, JPEG and noise against independent references (scipy.ndimage, libjpeg via PIL, formulas)."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage import data

from datamodules.degradation import (
    USMSharp,
    add_gaussian_noise,
    add_poisson_noise,
    filter2d,
    jpeg_compress,
    quality_to_factor,
)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_filter2d_per_sample_kernels_match_scipy_correlate() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 24, 30, generator=g, dtype=torch.float64)
    kernels = torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    out = filter2d(img, kernels)
    for i in range(2):
        for c in range(3):
            # torch "reflect" padding == scipy "mirror"; conv2d is a correlation
            ref = ndimage.correlate(img[i, c].numpy(), kernels[i].numpy(), mode="mirror")
            np.testing.assert_allclose(out[i, c].numpy(), ref, rtol=1e-10, atol=1e-12)
    delta = torch.zeros(2, 21, 21, dtype=torch.float64)
    delta[:, 10, 10] = 1
    assert torch.equal(filter2d(img, delta), img)


def _usm_reference(img: np.ndarray, weight: float = 0.5, threshold: float = 10.0) -> np.ndarray:
    """BasicSR USMSharp written independently with scipy: 51x51 Gaussian, sigma 8 (OpenCV default for size 51)."""
    sigma = 0.3 * ((51 - 1) * 0.5 - 1) + 0.8  # cv2.getGaussianKernel(51, 0)
    x = np.arange(51) - 25
    g = np.exp(-(x**2) / (2 * sigma**2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    blur = ndimage.correlate(img, kernel, mode="mirror")
    residual = img - blur
    mask = (np.abs(residual) * 255 > threshold).astype(np.float64)
    soft = ndimage.correlate(mask, kernel, mode="mirror")
    sharp = np.clip(img + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * img


def test_usm_on_step_edge() -> None:
    img = torch.full((1, 3, 64, 128), 0.25)
    img[..., 64:] = 0.75
    out = USMSharp()(img)
    row = out[0, 0, 32]
    assert row[:64].min() < 0.25 - 0.02  # undershoot on the dark side
    assert row[64:].max() > 0.75 + 0.02  # overshoot on the bright side
    assert int(row[:64].argmin()) >= 54 and int(row[64:].argmax()) <= 10  # right at the edge
    # flat regions far from the edge are unchanged, exactly
    assert torch.equal(out[..., :20], img[..., :20]) and torch.equal(out[..., 108:], img[..., 108:])
    assert torch.allclose(out[0, 0], out[0, 2]) and torch.allclose(out[0, :, 0], out[0, :, 63])
    ref = _usm_reference(img[0, 0].double().numpy())
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-5)


def test_usm_matches_reference_on_a_photo() -> None:
    img = data.astronaut()[100:164, 200:280, 0].astype(np.float64) / 255
    out = USMSharp()(torch.from_numpy(img).float()[None, None])[0, 0].double().numpy()
    np.testing.assert_allclose(out, _usm_reference(img), atol=2e-5)


def test_jpeg_quality_to_factor() -> None:
    for q, f in ((10, 5.0), (50, 1.0), (90, 0.2), (30, 5000 / 30 / 100), (95, 0.1)):
        assert quality_to_factor(float(q)) == pytest.approx(f)
    t = quality_to_factor(torch.tensor([10.0, 50.0, 90.0]))
    assert torch.allclose(t, torch.tensor([5.0, 1.0, 0.2]))


@pytest.mark.parametrize("quality", [30, 50, 90])
def test_jpeg_close_to_libjpeg(quality: int) -> None:
    """Our round trip vs PIL's libjpeg (4:2:0, same IJG tables): much closer to it than to the original."""
    img = data.astronaut()[40:240, 180:380]  # 200 x 200: exercises the pad-to-16
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=2)
    pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    ours = jpeg_compress(x, torch.tensor([float(quality)]))[0].permute(1, 2, 0).double().numpy()
    assert ours.shape == img.shape and ours.min() >= 0 and ours.max() <= 1
    orig = img / 255.0
    assert _psnr(ours, pil) > 38
    assert _psnr(ours, pil) > _psnr(ours, orig) + 3
    assert abs(_psnr(ours, orig) - _psnr(pil, orig)) < 1.0


def test_jpeg_per_sample_quality_equals_single_image_runs() -> None:
    img = torch.from_numpy(data.coffee()[:64, :96].copy()).permute(2, 0, 1).float() / 255
    batch = torch.stack([img, img])
    out = jpeg_compress(batch, torch.tensor([30.0, 95.0]))
    assert not torch.equal(out[0], out[1])
    torch.testing.assert_close(out[0], jpeg_compress(img[None], torch.tensor([30.0]))[0])
    torch.testing.assert_close(out[1], jpeg_compress(img[None], torch.tensor([95.0]))[0])
    err = [float((o - img).abs().mean()) for o in out]
    assert err[0] > 1.5 * err[1]  # lower quality, larger error


def test_gaussian_noise_level_and_gray_flag() -> None:
    img = torch.full((2, 3, 128, 128), 0.5)
    gen = torch.Generator().manual_seed(0)
    out = add_gaussian_noise(img, torch.tensor([10.0, 20.0]), torch.tensor([False, True]), gen)
    std = (out - img).std(dim=(1, 2, 3))
    assert torch.allclose(std, torch.tensor([10 / 255, 20 / 255]), rtol=0.05)
    assert not torch.equal(out[0, 0], out[0, 1])  # colour noise
    assert torch.equal(out[1, 0], out[1, 1]) and torch.equal(out[1, 0], out[1, 2])  # grey noise
    assert out.min() >= 0 and out.max() <= 1


def test_poisson_noise_follows_photon_levels() -> None:
    # 128 distinct 8-bit levels -> 128 photon levels: var(noise) = mean(x) / 128 per pixel, times scale^2
    levels = torch.arange(64, 192).float() / 255
    img = levels.view(1, 1, 1, 128).expand(2, 3, 256, 128).contiguous()
    gen = torch.Generator().manual_seed(0)
    out = add_poisson_noise(img, torch.tensor([1.0, 0.0]), torch.tensor([False, False]), gen)
    assert torch.equal(out[1], img[1])  # scale 0: no noise
    noise = out[0] - img[0]
    expected_var = float(img[0].mean()) / 128
    assert float(noise.var()) == pytest.approx(expected_var, rel=0.05)
    grey = add_poisson_noise(img, torch.tensor([2.0, 2.0]), torch.tensor([True, True]), gen)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert not math.isnan(float(grey.sum())) and grey.min() >= 0 and grey.max() <= 1
