"""Pixel reconstruction loss: MAE / L1 (TUDSR lambda3 term, StrSR's L1 term)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MAE", "L1"]


class MAE(nn.Module):
    """Mean absolute error ``mean(|sr - gt|)`` over all elements (TUDSR section 3.6, "MAE"; StrSR "L1")."""

    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:  # (B, 3, H, W) x 2 -> scalar
        return torch.mean(torch.abs(sr.float() - gt.float()))


L1 = MAE  # the same loss under StrSR's name
