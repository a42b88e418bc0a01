"""The bicubic upsampling of the LQ that every one-step generator starts from (TUDSR eq. 2, StrSR eq. 6).

Both papers first resize the LR to the target size (bicubic), then encode it with the VAE. Bicubic interpolation
overshoots at edges, so the result is clamped back to [0, 1].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["bicubic_upsample"]


def bicubic_upsample(lq: Tensor, target: tuple[int, int] | int) -> Tensor:
    """(B, C, h, w) in [0, 1] -> (B, C, H, W) in [0, 1], bicubic (``align_corners=False``), clamped.

    ``target`` is the output size ``(H, W)`` or an integer factor (then ``H, W = h * target, w * target``, computed
    with ``scale_factor`` exactly as ``F.interpolate(lq, scale_factor=target, ...)`` does).
    """
    if isinstance(target, int):
        up = F.interpolate(lq, scale_factor=target, mode="bicubic", align_corners=False)
    else:
        up = F.interpolate(lq, size=tuple(target), mode="bicubic", align_corners=False)
    return up.clamp(0, 1)
