"""PSNR/SSIM in pyiqa's convention (full-range YIQ luma; SSIM on integer-rounded Y) beside BasicSR's (BT.601 studio
range): the constant 1.3219 dB PSNR offset, hand-computed cases, and pyiqa's own ``psnry`` / ``ssim`` / ``psnr``."""

from __future__ import annotations

import math

import pytest
import torch

from evaluation import PSNR, PSNR_Y_OFFSET_DB, SSIM, PSNRPyIQA, SSIMPyIQA, quantize_8bit, yiq_luma


def _images(seed: int, b: int = 3, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit images (as read from PNG files) with structure: smoothed noise plus a noisy 'SR' version."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.nn.functional.avg_pool2d(torch.rand(b, 3, size + 4, size + 4, generator=g), 5, 1)
    gt = quantize_8bit((gt - gt.amin()) / (gt.amax() - gt.amin()))
    return quantize_8bit((gt + 0.06 * torch.randn(gt.shape, generator=g)).clamp(0, 1)), gt


def test_yiq_luma_and_psnr_of_a_uniform_shift() -> None:
    x = torch.tensor([1.0, 0.2, 0.4]).view(1, 3, 1, 1)
    assert yiq_luma(x).item() == pytest.approx(0.299 + 0.587 * 0.2 + 0.114 * 0.4, abs=1e-7)
    gt = torch.full((1, 3, 16, 16), 0.5)
    shift = 0.1  # a uniform RGB shift moves the YIQ luma by 0.1 (weights sum to 1)
    expected = 10 * math.log10(1 / (shift**2 + 1e-8))
    assert PSNRPyIQA().update(gt + shift, gt).item() == pytest.approx(expected, abs=1e-4)
    assert PSNRPyIQA().update(gt, gt).item() == pytest.approx(80.0)  # pyiqa's eps: 10 log10(1 / 1e-8)


def test_ssim_pyiqa_rounds_y_to_integers_and_uses_the_255_constants() -> None:
    gt = torch.full((1, 3, 16, 16), 100 / 255, dtype=torch.float64)
    sr = gt + 0.3 / 255  # Y*255 = 100.3 rounds back to 100: identical after rounding
    assert SSIMPyIQA().update(sr, gt).item() == pytest.approx(1.0, abs=1e-12)
    sr = torch.full_like(gt, 110 / 255)  # constant images: only the luminance term, with C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    assert SSIMPyIQA().update(sr, gt).item() == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_basicsr_y_psnr_is_pyiqa_y_psnr_plus_1_3219_db_on_every_image(seed: int) -> None:
    sr, gt = _images(seed)
    basicsr, pyiqa = PSNR(y_channel=True, crop_border=4).update(sr, gt), PSNRPyIQA(crop_border=4).update(sr, gt)
    assert PSNR_Y_OFFSET_DB == pytest.approx(1.3219, abs=1e-4)
    assert (basicsr - pyiqa).tolist() == pytest.approx([PSNR_Y_OFFSET_DB] * 3, abs=2e-4)
    # SSIM has no constant offset; both stay close on these images (the figures are printed for the README)
    ssim_b, ssim_p = SSIM(y_channel=True, crop_border=4).update(sr, gt), SSIMPyIQA(crop_border=4).update(sr, gt)
    print(f"seed {seed}: PSNR-Y BasicSR {basicsr.mean():.4f} pyiqa {pyiqa.mean():.4f}; "
          f"SSIM-Y BasicSR {ssim_b.mean():.4f} pyiqa {ssim_p.mean():.4f}")
    assert (ssim_b - ssim_p).abs().max() < 0.02 and (ssim_b - ssim_p).abs().max() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_metrics_match_pyiqa(seed: int) -> None:
    pytest.importorskip("pyiqa", reason="the comparison needs the optional pyiqa extra")
    from pyiqa.archs.psnr_arch import PSNR as PyiqaPSNR
    from pyiqa.archs.ssim_arch import SSIM as PyiqaSSIM

    sr, gt = _images(seed)
    sr, gt = sr.float(), gt.float()  # pyiqa reads images as float32
    psnry = PyiqaPSNR(test_y_channel=True, crop_border=4)(sr, gt).double()
    assert PSNRPyIQA(crop_border=4).update(sr, gt).tolist() == pytest.approx(psnry.tolist(), abs=1e-4)
    ssim = PyiqaSSIM(test_y_channel=True, crop_border=4)(sr, gt).double()  # pyiqa's default ``ssim``
    assert SSIMPyIQA(crop_border=4).update(sr, gt).tolist() == pytest.approx(ssim.tolist(), abs=1e-12)
    psnr = PyiqaPSNR(test_y_channel=False)(sr, gt).double()  # pyiqa's default ``psnr`` is RGB
    assert PSNR(y_channel=False).update(sr, gt).tolist() == pytest.approx(psnr.tolist(), abs=1e-4)
