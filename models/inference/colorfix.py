"""Colour correction of a super-resolved image against its (upsampled) low-quality input.

One-step SD super-resolvers drift in colour (the VAE and the UNet shift channel statistics); peers fix it after
decoding (StableSR, IceClear/StableSR ``scripts/wavelet_color_fix.py``, and the one-step SR models built on it).

- AdaIN: match each channel's spatial mean and standard deviation of ``sr`` to those of ``ref``.
- Wavelet: split both images into a high-frequency part (sum of the details of an a-trous / stationary wavelet
  decomposition with a dilated 3x3 binomial blur, dilation 1, 2, 4, ...) and the residual low-frequency part; keep
  the high frequencies of ``sr`` and the low frequencies of ``ref`` (the scheme of StableSR's colour fix, written
  here from its description).

All functions take and return (B, 3, H, W) tensors in [0, 1]; ``ref`` must have the size of ``sr``. They compute in
float32 and return the dtype of ``sr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adain_color_fix", "wavelet_decompose", "wavelet_color_fix", "ColorFix"]

_EPS = 1e-5


def _check(sr: Tensor, ref: Tensor) -> None:
    if sr.shape != ref.shape:
        raise ValueError(f"colour fix needs sr and ref of the same shape, got {tuple(sr.shape)} and {tuple(ref.shape)}")


def adain_color_fix(sr: Tensor, ref: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W): ``(sr - mean(sr)) / std(sr) * std(ref) + mean(ref)`` per channel, clamped."""
    _check(sr, ref)
    s, r = sr.float(), ref.float()
    s_mean, s_std = s.mean(dim=(-2, -1), keepdim=True), s.std(dim=(-2, -1), keepdim=True, unbiased=False)
    r_mean, r_std = r.mean(dim=(-2, -1), keepdim=True), r.std(dim=(-2, -1), keepdim=True, unbiased=False)
    out = (s - s_mean) / (s_std + _EPS) * r_std + r_mean  # (B, C, H, W)
    return out.clamp(0, 1).to(sr.dtype)


def _blur(x: Tensor, dilation: int) -> Tensor:
    """Depthwise 3x3 binomial blur ([1, 2, 1]^T [1, 2, 1] / 16) with holes of ``dilation``, replicate padding."""
    C = x.shape[1]
    k1 = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype) / 4
    kernel = (k1[:, None] * k1[None, :]).expand(C, 1, 3, 3)  # (C, 1, 3, 3)
    # replicate (not reflect) padding: valid for any dilation, even larger than the image.
    xp = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(xp, kernel, groups=C, dilation=dilation)


def wavelet_decompose(x: Tensor, levels: int = 5) -> tuple[Tensor, Tensor]:
    """Stationary wavelet split ``x = high + low``.

    Level i blurs the current low-pass image with dilation ``2 ** i`` and adds the difference to ``high``.

    Returns:
        (high, low), both (B, C, H, W); ``high + low == x`` up to rounding.
    """
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = _blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(sr: Tensor, ref: Tensor, levels: int = 5) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W): high frequencies of ``sr`` + low frequencies of ``ref``, clamped to [0, 1]."""
    _check(sr, ref)
    sr_high, _ = wavelet_decompose(sr.float(), levels)
    _, ref_low = wavelet_decompose(ref.float(), levels)
    return (sr_high + ref_low).clamp(0, 1).to(sr.dtype)


class ColorFix:
    """Callable colour fix chosen by name: ``"none"`` (identity), ``"adain"`` or ``"wavelet"``.

    ``ColorFix("wavelet")(sr, ref) -> (B, 3, H, W)``; see :func:`adain_color_fix`, :func:`wavelet_color_fix`.
    """

    KINDS = ("none", "adain", "wavelet")

    def __init__(self, kind: str = "none", levels: int = 5) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown colour fix {kind!r}; choose one of {self.KINDS}")
        self.kind = kind
        self.levels = levels

    def __call__(self, sr: Tensor, ref: Tensor) -> Tensor:
        if self.kind == "adain":
            return adain_color_fix(sr, ref)
        if self.kind == "wavelet":
            return wavelet_color_fix(sr, ref, self.levels)
        return sr

    def __repr__(self) -> str:
        return f"ColorFix({self.kind!r})"
