"""Batched JPEG compression round trip with a per-sample quality (XPixelGroup/BasicSR
``basicsr/utils/diffjpeg.py``, ``DiffJPEG``).

RGB -> YCbCr (JFIF, full range) -> 4:2:0 chroma by 2x2 average -> 8x8 DCT -> quantise with the standard IJG
tables times factor(q) = (5000 / q if q < 50 else 200 - 2 q) / 100, round -> dequantise -> inverse DCT ->
nearest chroma upsampling -> RGB, clipped to [0, 255] and returned in [0, 1].

Differences from BasicSR, on purpose: the tables are used in their standard orientation (BasicSR stores them
transposed) and the image is padded to a multiple of 16 by edge replication as libjpeg does (BasicSR pads with 0).
``kornia.enhance.jpeg_codec_differentiable`` is not used: it floors the IJG scale, adds libjpeg's (t * s + 50) / 100
integer rounding and a cubic soft rounding, so it does not follow the factor formula above.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["quality_to_factor", "jpeg_compress", "Y_TABLE", "C_TABLE"]

Y_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_C_CORNER = ((17, 18, 24, 47), (18, 21, 26, 66), (24, 26, 56, 99), (47, 66, 99, 99))
C_TABLE = tuple(row + (99,) * 4 for row in _C_CORNER) + ((99,) * 8,) * 4

_RGB2YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCBCR2RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))
_MIN_FACTOR = 1e-4  # q = 100 gives factor 0 (lossless); keep the division finite


def quality_to_factor(quality: torch.Tensor | float) -> torch.Tensor | float:
    """IJG quality -> table multiplier: q=10 -> 5.0, q=50 -> 1.0, q=90 -> 0.2."""
    if isinstance(quality, torch.Tensor):
        return torch.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality) / 100.0
    return (5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality) / 100.0


def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """Tables, colour matrices and the orthonormal 8-point DCT-II matrix on ``device`` (float32)."""
    n = torch.arange(8, dtype=torch.float64)
    dct = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5  # (u, x)
    dct[0] *= 1 / math.sqrt(2)
    as_t = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    return {
        "y": as_t(Y_TABLE),
        "c": as_t(C_TABLE),
        "dct": dct.to(device=device, dtype=torch.float32),
        "fwd": as_t(_RGB2YCBCR),
        "inv": as_t(_YCBCR2RGB),
        "shift": as_t((0.0, 128.0, 128.0)).view(1, 3, 1, 1),
    }


_CACHE: dict[torch.device, dict[str, torch.Tensor]] = {}


def _get_constants(device: torch.device) -> dict[str, torch.Tensor]:
    if device not in _CACHE:
        _CACHE[device] = _constants(device)
    return _CACHE[device]


def _dct_quantize(ch: torch.Tensor, step: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """Blockwise DCT, quantise with ``step`` (B, 1, 1, 8, 8), inverse DCT. ch: (B, h, w), h and w multiples of 8."""
    b, h, w = ch.shape
    blocks = ch.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4) - 128.0  # (B, h/8, w/8, 8, 8)
    coef = dct @ blocks @ dct.T  # F = A f A^T, u vertical, v horizontal frequency
    coef = torch.round(coef / step) * step
    blocks = dct.T @ coef @ dct + 128.0
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, h, w)


def jpeg_compress(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG round trip of img (B, 3, H, W) in [0, 1] with quality (B,) (or a scalar) in (0, 100]."""
    b, c, h, w = img.shape
    if c != 3:
        raise ValueError(f"jpeg_compress needs RGB images, got {c} channels")
    k = _get_constants(img.device)
    quality = torch.as_tensor(quality, dtype=torch.float32).to(img.device).reshape(-1).expand(b)
    factor = quality_to_factor(quality).clamp_min(_MIN_FACTOR).view(b, 1, 1, 1, 1)
    ph, pw = (-h) % 16, (-w) % 16
    x = img.float() * 255.0
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    ycc = torch.einsum("ij,bjhw->bihw", k["fwd"], x)
    ycc = ycc + k["shift"]
    y = ycc[:, 0]  # (B, H', W')
    cbcr = F.avg_pool2d(ycc[:, 1:], kernel_size=2, stride=2)  # (B, 2, H'/2, W'/2)
    y = _dct_quantize(y, k["y"] * factor, k["dct"])
    hc, wc = cbcr.shape[-2:]
    cbcr = _dct_quantize(cbcr.reshape(b * 2, hc, wc), (k["c"] * factor).repeat_interleave(2, dim=0), k["dct"])
    cbcr = cbcr.reshape(b, 2, hc, wc).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    ycc = torch.cat([y.unsqueeze(1), cbcr - 128.0], dim=1)
    rgb = torch.einsum("ij,bjhw->bihw", k["inv"], ycc).clamp(0, 255) / 255.0
    return rgb[..., :h, :w].to(img.dtype)
