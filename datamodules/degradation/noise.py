"""Additive Gaussian and Poisson noise with per-sample strength and grey flag (BasicSR ``degradations.py``).

Both return ``clip(img + noise, 0, 1)``; every random number comes from the given ``torch.Generator`` on the
image's device.
"""

from __future__ import annotations

import torch

__all__ = ["add_gaussian_noise", "add_poisson_noise", "rgb_to_gray"]


def rgb_to_gray(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma as in torchvision ``rgb_to_grayscale``: (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = img.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def add_gaussian_noise(
    img: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """img (B, 3, H, W) in [0, 1]; sigma (B,) on the 0..255 scale; gray (B,) bool (one noise map for all channels).

    Unlike BasicSR (one grey noise map shared by the whole batch), each grey sample draws its own map.
    """
    b, c, h, w = img.shape
    std = (sigma.to(img) / 255.0).view(b, 1, 1, 1)
    noise = torch.randn(img.shape, generator=generator, device=img.device, dtype=img.dtype) * std
    if bool(gray.any()):
        noise_gray = torch.randn((b, 1, h, w), generator=generator, device=img.device, dtype=img.dtype) * std
        noise = torch.where(gray.to(img.device).view(b, 1, 1, 1), noise_gray.expand(b, c, h, w), noise)
    return (img + noise).clamp(0, 1)


def _poisson_residual(img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shot noise of the 8-bit-rounded image at 2^ceil(log2(#distinct values)) photon levels, (B, C, H, W)."""
    b = img.shape[0]
    levels = (img * 255.0).round().clamp(0, 255)
    rounded = levels / 255.0
    # number of distinct 8-bit values per sample (= len(torch.unique(img[i])) in BasicSR), batched
    present = torch.zeros((b, 256), device=img.device, dtype=img.dtype)
    present.scatter_(1, levels.long().view(b, -1), 1.0)
    vals = torch.exp2(torch.ceil(torch.log2(present.sum(dim=1)))).view(b, 1, 1, 1)
    return torch.poisson(rounded * vals, generator=generator) / vals - rounded


def add_poisson_noise(
    img: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """img (B, 3, H, W) in [0, 1]; scale (B,) noise multiplier; gray (B,) bool (noise of the luma image)."""
    b, c, h, w = img.shape
    noise = _poisson_residual(img, generator)
    if bool(gray.any()):
        noise_gray = _poisson_residual(rgb_to_gray(img), generator)
        noise = torch.where(gray.to(img.device).view(b, 1, 1, 1), noise_gray.expand(b, c, h, w), noise)
    return (img + noise * scale.to(img).view(b, 1, 1, 1)).clamp(0, 1)
