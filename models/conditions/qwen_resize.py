"""Sizing of the raw LR before Qwen3-VL, as the released StrSR code does it, in batched tensor code.

The released trainer (jkwang28/StrSR, ``HYPIR/trainer/{flux,zimage}_vlm.py``, ``extract_qwen_feature``) turns the LR
into a uint8 PIL image, passes it through ``qwen_vl_utils.process_vision_info`` and then the Qwen3-VL processor:

1. ``qwen_vl_utils`` ``fetch_image``: :func:`vl_utils_size` with factor 28 (its default image patch 14 x merge 2,
   as the released code calls it; Qwen3-VL's own patch is 16), then a PIL bicubic resize (uint8 out);
2. the processor (``Qwen2VLImageProcessor``): :func:`processor_size` with factor patch x merge (32 for Qwen3-VL)
   within its ``size`` limits (Qwen3-VL-4B: 65,536 .. 16,777,216 pixels), a bicubic antialiased resize of the uint8
   tensor (uint8 out), then rescale and normalise.

So a 256 x 256 LR becomes 252 x 252, then 256 x 256 again. The two size formulas differ slightly where they clamp
to ``factor`` and are re-implemented separately. Resizes here are torch's bicubic with antialias (the kernel PIL
uses, a = -0.5) in two separable passes rounded to 8-bit levels, as both libraries work on uint8 images.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

__all__ = ["VL_UTILS_FACTOR", "vl_utils_size", "processor_size", "to_8bit", "resize_8bit", "released_resize",
           "processor_resize"]

#: ``qwen_vl_utils``' image factor as the released code uses it: its default patch 14 x spatial merge 2
VL_UTILS_FACTOR = 28
_MAX_RATIO = 200  # both libraries reject more extreme aspect ratios


def _check_ratio(h: int, w: int) -> None:
    if max(h, w) / min(h, w) > _MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {_MAX_RATIO}, got {max(h, w) / min(h, w)}")


def vl_utils_size(h: int, w: int, factor: int = VL_UTILS_FACTOR, min_pixels: int | None = None,
                  max_pixels: int | None = None) -> tuple[int, int]:
    """``qwen_vl_utils.smart_resize`` (QwenLM/Qwen3-VL, ``qwen-vl-utils/src/qwen_vl_utils/vision_process.py``):
    multiples of ``factor`` nearest to (h, w) (at least ``factor``), scaled into [min_pixels, max_pixels]
    (defaults 4 and 16,384 tokens: 4 * factor^2 and 16384 * factor^2)."""
    _check_ratio(h, w)
    min_pixels = 4 * factor**2 if min_pixels is None else min_pixels
    max_pixels = 16384 * factor**2 if max_pixels is None else max_pixels
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def processor_size(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' ``Qwen2VLImageProcessor`` ``smart_resize`` (the Qwen3-VL processor's): nearest multiples of
    ``factor``, scaled into [min_pixels, max_pixels] (the downscale branch keeps at least ``factor``)."""
    _check_ratio(h, w)
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def to_8bit(x: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> the nearest 8-bit levels, still float in [0, 1]. (The released code casts
    ``(x * 255).to(uint8)``, which truncates; on LR images already on 8-bit levels rounding keeps each level where
    truncation can drop one to float error.)"""
    return (x.float() * 255).round().clamp(0, 255) / 255


def resize_8bit(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize with antialias (a = -0.5, PIL's filter) to ``size`` = (H, W) on 8-bit images, as PIL does it:
    a horizontal pass, then a vertical pass, each rounded and clipped to 8-bit levels (within one level of PIL's
    ``Image.resize``; one pass in float would differ by up to ~18 levels where the bicubic overshoots)."""
    h, w = x.shape[-2:]
    out = x.float()
    if w != size[1]:
        out = to_8bit(F.interpolate(out, size=(h, size[1]), mode="bicubic", align_corners=False, antialias=True))
    if h != size[0]:
        out = to_8bit(F.interpolate(out, size=tuple(size), mode="bicubic", align_corners=False, antialias=True))
    return out


def released_resize(lq: Tensor, factor: int, min_pixels: int, max_pixels: int,
                    pre_factor: int = VL_UTILS_FACTOR) -> Tensor:
    """The released path: 8-bit LR -> ``qwen_vl_utils`` resize (``pre_factor``) -> processor resize (``factor``
    within [min_pixels, max_pixels]); (B, 3, h, w) [0, 1] -> (B, 3, H', W') on 8-bit levels."""
    x = to_8bit(lq)
    x = resize_8bit(x, vl_utils_size(*x.shape[-2:], factor=pre_factor))
    return resize_8bit(x, processor_size(*x.shape[-2:], factor, min_pixels, max_pixels))


def processor_resize(lq: Tensor, factor: int, min_pixels: int, max_pixels: int) -> Tensor:
    """The processor's resize alone, on the float LR (no 8-bit rounding): (B, 3, h, w) -> (B, 3, H', W')."""
    size = processor_size(*lq.shape[-2:], factor, min_pixels, max_pixels)
    if tuple(lq.shape[-2:]) == size:
        return lq.float()
    return F.interpolate(lq.float(), size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)

