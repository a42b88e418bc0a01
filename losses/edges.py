"""Sobel edges and the edge-aware DISTS of TUDSR (paper eq. 5)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from losses.dists import DISTS
from losses.vgg import FrozenLoss

__all__ = ["sobel", "EdgeAwareDISTS"]

_GX = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Sobel gradient magnitude of the channel-mean grey image.

    ``Gx = [[-1,0,1],[-2,0,2],[-1,0,1]]``, ``Gy = Gx^T`` (cross-correlation, as ``F.conv2d``), magnitude
    ``sqrt(gx^2 + gy^2 + eps)``. The border is padded by **replicating** edge pixels, so a flat image gives
    ``sqrt(eps)`` everywhere, borders included. A unit step gives 4 at the two columns/rows beside it.

    Args:
        x: (B, C, H, W). Returns (B, 1, H, W) in x's dtype.
    """
    grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    grey = F.pad(grey, (1, 1, 1, 1), mode="replicate")  # (B, 1, H+2, W+2)
    gx_kernel = _GX.to(device=x.device, dtype=x.dtype)
    weight = torch.stack([gx_kernel, gx_kernel.T]).unsqueeze(1)  # (2, 1, 3, 3)
    g = F.conv2d(grey, weight)  # (B, 2, H, W)
    return (g.square().sum(dim=1, keepdim=True) + eps).sqrt()


class EdgeAwareDISTS(FrozenLoss):
    """EA-DISTS (TUDSR eq. 5): ``DISTS(x, y) + DISTS(S(x), S(y))`` with S the :func:`sobel` magnitude, the
    one-channel edge map repeated to 3 channels. Shares (does not copy) the given DISTS.

    Args:
        dists: the DISTS module to use for both terms.
    """

    def __init__(self, dists: DISTS) -> None:
        super().__init__()
        self.dists = dists

    def forward(self, x: Tensor, y: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
        """x, y: (B, 3, H, W) in [0, 1]. Returns a scalar (``mean``) or (B,) (``none``)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y = x.float(), y.float()
            ex = sobel(x).expand(-1, 3, -1, -1)  # (B, 3, H, W)
            ey = sobel(y).expand(-1, 3, -1, -1)
            return self.dists(x, y, reduction=reduction) + self.dists(ex, ey, reduction=reduction)
