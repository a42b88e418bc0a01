"""Batched image operations of the Real-ESRGAN degradation: per-sample blur, unsharp masking, resizing.

All functions take and return float tensors (B, C, H, W) on any device (after XPixelGroup/BasicSR
``basicsr/utils/img_process_util.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["filter2d", "gaussian_kernel1d", "USMSharp", "resize"]


def _pad(img: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Reflect padding (BasicSR ``filter2D``); replicate when the image is too small to reflect."""
    h, w = img.shape[-2:]
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(img, (pw, pw, ph, ph), mode=mode)


def filter2d(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every image with its own kernel (BasicSR ``filter2D``), reflect-padded, same size.

    img: (B, C, H, W); kernel: (B, k, k) per sample or (k, k) / (1, k, k) shared; k odd.
    """
    b, c, h, w = img.shape
    k = kernel.shape[-1]
    if k % 2 != 1 or kernel.shape[-2] != k:
        raise ValueError(f"filter2d needs square odd kernels, got {tuple(kernel.shape)}")
    kernel = kernel.to(device=img.device, dtype=img.dtype)
    padded = _pad(img, k // 2, k // 2)  # (B, C, H+k-1, W+k-1)
    if kernel.dim() == 2 or kernel.shape[0] == 1:
        weight = kernel.reshape(1, 1, k, k)
        out = F.conv2d(padded.reshape(b * c, 1, *padded.shape[-2:]), weight)
        return out.reshape(b, c, h, w)
    if kernel.shape[0] != b:
        raise ValueError(f"filter2d got {kernel.shape[0]} kernels for a batch of {b}")
    weight = kernel.reshape(b, 1, 1, k, k).expand(b, c, 1, k, k).reshape(b * c, 1, k, k)
    out = F.conv2d(padded.reshape(1, b * c, *padded.shape[-2:]), weight, groups=b * c)
    return out.reshape(b, c, h, w)


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian (as ``cv2.getGaussianKernel``), (size,) float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _separable_blur(img: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    """Same-size blur with the outer product k1d k1d^T, reflect-padded (equal to the 2-D filter2d)."""
    b, c, h, w = img.shape
    k = k1d.numel()
    k1d = k1d.to(device=img.device, dtype=img.dtype)
    n = b * c
    x = _pad(img, k // 2, k // 2).reshape(1, n, h + k - 1, w + k - 1)  # grouped: faster than batch-of-1-channel
    x = F.conv2d(x, k1d.view(1, 1, k, 1).expand(n, 1, k, 1), groups=n)  # vertical
    x = F.conv2d(x, k1d.view(1, 1, 1, k).expand(n, 1, 1, k), groups=n)  # horizontal
    return x.reshape(b, c, h, w)


class USMSharp(nn.Module):
    """Unsharp masking with a soft mask (BasicSR ``USMSharp``; Real-ESRGAN sec. 4.3).

    blur = G * img, residual = img - blur, mask = [|residual| * 255 > threshold], soft = G * mask,
    out = soft * clip(img + weight * residual, 0, 1) + (1 - soft) * img, with G a kernel_size^2 Gaussian
    (51 x 51, sigma 8 = OpenCV's default sigma for size 51).
    """

    def __init__(self, kernel_size: int = 51, sigma: float = 8.0, weight: float = 0.5, threshold: float = 10.0) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"USM kernel size must be odd, got {kernel_size}")
        self.weight = weight
        self.threshold = threshold
        self.register_buffer("kernel1d", gaussian_kernel1d(kernel_size, sigma).float(), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        blur = _separable_blur(img, self.kernel1d)
        residual = img - blur
        mask = (residual.abs() * 255 > self.threshold).to(img.dtype)
        soft_mask = _separable_blur(mask, self.kernel1d)
        sharp = (img + self.weight * residual).clamp(0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


def resize(
    img: torch.Tensor,
    mode: str,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``F.interpolate`` by ``scale`` (as BasicSR, output floor(H * scale)) or to ``size``; sizes >= 1."""
    h, w = img.shape[-2:]
    if size is None:
        if scale is None:
            raise ValueError("resize needs scale or size")
        if scale == 1:
            return img
        if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
            size = (max(1, math.floor(h * scale)), max(1, math.floor(w * scale)))
        else:
            return F.interpolate(img, scale_factor=scale, mode=mode)
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if size == (h, w):  # identity for every mode (align_corners=False maps pixel centres onto themselves)
        return img
    return F.interpolate(img, size=size, mode=mode)
