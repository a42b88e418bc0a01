"""Pixel reconstruction loss: MAE / L1 (TUDSR lambda3 term, StrSR's L1 term), and the pixel range losses see.

Images travel through this project in [0, 1]. The authors' codes compute their pixel losses on [-1, 1] images
(wuer5/OMGSR ``train/train_omgsr_s.py``: ``F.l1_loss(pred_img, hq_img)`` on [-1, 1] tensors; jkwang28/StrSR
``HYPIR/trainer/base.py``: ``F.l1_loss(x, gt)`` with ``gt = GT * 2 - 1``), where the same difference is twice as
large: at the papers' loss weights the [-1, 1] value is the one that sets the balance between the terms.
``pixel_range`` names the range a loss maps its [0, 1] inputs to before computing.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["L1", "MAE", "PIXEL_RANGES", "PixelRange", "to_pixel_range"]

PixelRange = Literal["-1,1", "0,1"]
PIXEL_RANGES: tuple[str, ...] = ("-1,1", "0,1")


def to_pixel_range(x: Tensor, pixel_range: str) -> Tensor:
    """[0, 1] images -> ``pixel_range``: ``"-1,1"`` gives ``2 x - 1``, ``"0,1"`` leaves ``x``."""
    if pixel_range == "-1,1":
        return x * 2.0 - 1.0
    if pixel_range == "0,1":
        return x
    raise ValueError(f"pixel_range must be one of {PIXEL_RANGES}, got {pixel_range!r}")


class MAE(nn.Module):
    """Mean absolute error ``mean(|sr - gt|)`` over all elements (TUDSR section 3.6, "MAE"; StrSR "L1"), with
    ``sr`` and ``gt`` given in [0, 1] and compared in ``pixel_range``.

    Args:
        pixel_range: ``"-1,1"`` (default: the authors' codes, twice the [0, 1] value) or ``"0,1"``.
    """

    def __init__(self, pixel_range: PixelRange = "-1,1") -> None:
        super().__init__()
        to_pixel_range(torch.zeros(()), pixel_range)  # validates the name
        self.pixel_range = pixel_range

    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:  # (B, 3, H, W) x 2 in [0, 1] -> scalar
        sr, gt = to_pixel_range(sr.float(), self.pixel_range), to_pixel_range(gt.float(), self.pixel_range)
        return torch.mean(torch.abs(sr - gt))

    def extra_repr(self) -> str:
        return f"pixel_range={self.pixel_range!r}"


L1 = MAE  # the same loss under StrSR's name
