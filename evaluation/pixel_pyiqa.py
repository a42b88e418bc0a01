"""PSNR and SSIM on Y in pyiqa's convention (``psnry`` and ``ssim`` of IQA-PyTorch), beside BasicSR's in
``reference.py``. Plain torch: pyiqa is not needed; the tests compare with it where it is installed.

pyiqa (``archs/psnr_arch.py``, ``archs/ssim_arch.py``, ``utils/color_util.py``) takes Y from full-range YIQ,
``Y = 0.299 R + 0.587 G + 0.114 B``, computed in the input dtype (float32 for images read from files):

- ``psnry``: ``10 log10(1 / (MSE + 1e-8))`` on that Y in [0, 1].
- ``ssim``: Y scaled to 0..255 and rounded to integers, then float64, an 11x11 Gaussian window (sigma 1.5, float32
  values), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, the contrast-structure map clamped at 0, the mean of the
  "valid" map, no downsampling.

BasicSR's Y is BT.601 studio range, ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255 = 16/255 + (219/255) Y_yiq``, so
its Y differences are 219/255 of pyiqa's and its PSNR is higher by ``20 log10(255/219) = 1.3219 dB`` on every image
(:data:`PSNR_Y_OFFSET_DB`). SSIM has no such constant: the stabilising constants, the integer rounding and the clamp
act differently on the two scales. pyiqa's default ``psnr`` is RGB (``test_y_channel=False``): our ``psnr_rgb``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluation.metrics import Metric, crop_border
from evaluation.reference import gaussian_window

__all__ = ["PSNR_Y_OFFSET_DB", "PSNRPyIQA", "SSIMPyIQA", "yiq_luma"]

PSNR_Y_OFFSET_DB = 20 * math.log10(255 / 219)  # BasicSR Y-PSNR minus pyiqa Y-PSNR, 1.3219 dB


def yiq_luma(x: Tensor) -> Tensor:
    """Y of YIQ, ``0.299 R + 0.587 G + 0.114 B``, in the input dtype, by the same matrix product as pyiqa's
    ``rgb2yiq`` (so that float32 results round identically). (B, 3, H, W) -> (B, 1, H, W)."""
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]]).t().to(x)
    return torch.matmul(x.permute(0, 2, 3, 1), yiq).permute(0, 3, 1, 2)[:, :1]


class _PyIQAPixel(Metric):
    needs_reference = True

    def __init__(self, crop_border: int = 0) -> None:
        super().__init__()
        self.crop_border = int(crop_border)

    def luma(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1, H - 2b, W - 2b), float32 as pyiqa reads images
        return yiq_luma(crop_border(x.float(), self.crop_border))


class PSNRPyIQA(_PyIQAPixel):
    """pyiqa ``psnry``: PSNR (data range 1) of the YIQ luma, ``10 log10(1 / (MSE + 1e-8))``; the MSE is accumulated in
    float64 (pyiqa: float32, a difference below 1e-4 dB). 1.3219 dB below ``psnr_y_basicsr`` on every image."""

    name = "psnr_y_pyiqa"

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        gt = self.check_pair(sr, gt)
        mse = (self.luma(sr).double() - self.luma(gt).double()).pow(2).mean(dim=(1, 2, 3))  # (B,)
        return (10.0 * torch.log10(1.0 / (mse + 1e-8))).cpu()


class SSIMPyIQA(_PyIQAPixel):
    """pyiqa ``ssim``: SSIM of the YIQ luma rounded to 0..255 integers (see the module docstring)."""

    name = "ssim_y_pyiqa"

    def __init__(self, crop_border: int = 0) -> None:
        super().__init__(crop_border)
        window = gaussian_window(11, 1.5).float().double()  # pyiqa's fspecial: float64 maths, float32 values
        self.register_buffer("window", window.view(1, 1, 11, 11), persistent=False)

    def y255(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1, h, w) integer-valued float64
        return (self.luma(x) * 255).round().double()

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        gt = self.check_pair(sr, gt)
        x, y = self.y255(sr), self.y255(gt)
        if min(x.shape[-2:]) < 11:
            raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(x.shape[-2:])}")
        w = self.window.to(x.device)
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        mx, my = F.conv2d(x, w), F.conv2d(y, w)  # valid filtering
        vx, vy, cov = F.conv2d(x * x, w) - mx * mx, F.conv2d(y * y, w) - my * my, F.conv2d(x * y, w) - mx * my
        cs = ((2 * cov + c2) / (vx + vy + c2)).relu()
        smap = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
        return smap.mean(dim=(1, 2, 3)).cpu()
