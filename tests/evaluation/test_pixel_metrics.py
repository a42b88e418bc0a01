"""PSNR / SSIM / Y channel against hand-computed values and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation import PSNR, SSIM, crop_border, rgb_to_y


def _pair(seed: int, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.nn.functional.avg_pool2d(torch.rand(2, 3, size + 2, size + 2, generator=g), 3, 1)  # smooth-ish
    sr = (gt + 0.08 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    return sr.double(), gt.double()


def test_y_channel_matches_the_bt601_formula_and_skimage() -> None:
    x = torch.tensor([[1.0, 0.2], [0.0, 0.4], [0.0, 0.6]], dtype=torch.float64).view(1, 3, 1, 2)  # (1,0,0), (.2,.4,.6)
    y = rgb_to_y(x)
    r, g, b = x[0, 0], x[0, 1], x[0, 2]
    assert torch.allclose(y[0, 0], (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255)
    assert y[0, 0, 0, 0].item() == pytest.approx((16 + 65.481) / 255)
    img = torch.rand(3, 8, 9, dtype=torch.float64)
    ref = rgb2ycbcr(img.permute(1, 2, 0).numpy())[..., 0] / 255  # skimage: Y in [16, 235]
    assert np.allclose(rgb_to_y(img[None])[0, 0].numpy(), ref, atol=1e-12)


def test_psnr_of_constant_images_follows_the_formula() -> None:
    gt = torch.full((2, 3, 16, 16), 0.5)
    sr = gt + 0.1  # MSE 0.01 on RGB
    assert PSNR(y_channel=False).update(sr, gt).tolist() == pytest.approx([20.0, 20.0])
    dy = 0.1 * (65.481 + 128.553 + 24.966) / 255  # Y difference of a uniform RGB shift
    assert PSNR(y_channel=True).update(sr, gt).tolist() == pytest.approx([-20 * math.log10(dy)] * 2)
    assert math.isinf(PSNR().update(gt, gt)[0].item())


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    gt = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    sr = torch.full((1, 3, 16, 16), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)  # variances are 0: the structure term is C2 / C2
    assert SSIM(y_channel=False).update(sr, gt).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_rgb_metrics_match_scikit_image(seed: int) -> None:
    sr, gt = _pair(seed)
    psnr, ssim = PSNR(y_channel=False).update(sr, gt), SSIM(y_channel=False).update(sr, gt)
    for i in range(2):
        a, b = gt[i].numpy(), sr[i].numpy()
        assert psnr[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), rel=1e-10)
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1, channel_axis=0)
        assert ssim[i].item() == pytest.approx(ref, abs=1e-10)


def test_y_metrics_match_scikit_image_on_the_luma() -> None:
    sr, gt = _pair(2)
    ys, yg = rgb_to_y(sr)[:, 0].numpy(), rgb_to_y(gt)[:, 0].numpy()
    psnr, ssim = PSNR(y_channel=True).update(sr, gt), SSIM(y_channel=True).update(sr, gt)
    for i in range(2):
        assert psnr[i].item() == pytest.approx(peak_signal_noise_ratio(yg[i], ys[i], data_range=1), rel=1e-10)
        ref = structural_similarity(yg[i], ys[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1)
        assert ssim[i].item() == pytest.approx(ref, abs=1e-10)


def test_crop_border_ignores_the_border() -> None:
    sr, gt = _pair(3)
    inner = gt.clone()
    inner[..., 4:-4, 4:-4] = sr[..., 4:-4, 4:-4]  # differs from gt only inside; sr differs everywhere
    assert math.isinf(PSNR(crop_border=4).update(gt, gt)[0].item())
    assert torch.allclose(PSNR(crop_border=4).update(sr, gt), PSNR().update(crop_border(sr, 4), crop_border(gt, 4)))
    assert torch.allclose(SSIM(crop_border=4).update(sr, gt), SSIM().update(crop_border(sr, 4), crop_border(gt, 4)))
    border_only = gt.clone()
    border_only[..., :4, :] = 1 - gt[..., :4, :]  # differs only in the border
    assert math.isinf(PSNR(crop_border=4).update(border_only, gt)[0].item())
    assert math.isfinite(PSNR(crop_border=0).update(border_only, gt)[0].item())  # counted without the crop
    assert math.isfinite(PSNR(crop_border=4).update(inner, gt)[0].item())


def test_shape_mismatch_and_missing_gt_fail_clearly() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        PSNR().update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 12))
    with pytest.raises(ValueError, match="needs gt"):
        SSIM().update(torch.rand(1, 3, 16, 16), None)
