"""Anti-aliased blur (BlurPool) used inside the discriminator heads.

Zhang, "Making Convolutional Networks Shift-Invariant Again" (ICML 2019), as used by the vision-aided-GAN heads that
TUDSR (paper 3.5) and StrSR (paper 3.3) build on (nupurkmr9/vision-aided-gan
``vision_aided_loss/cv_discriminator.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlurPool", "binomial_filter"]


def binomial_filter(filt_size: int) -> torch.Tensor:
    """Normalised 2-D binomial filter: outer product of row ``C(n-1, k)`` with itself, divided by its sum.

    ``filt_size=4`` -> row [1, 3, 3, 1] (sum of the 4x4 outer product = 64); ``5`` -> [1, 4, 6, 4, 1] (256).
    """
    if filt_size < 1:
        raise ValueError(f"filt_size must be >= 1, got {filt_size}")
    row = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float64)
    filt = row[:, None] * row[None, :]  # (k, k)
    return (filt / filt.sum()).to(torch.float32)


class BlurPool(nn.Module):
    """Depthwise binomial blur with zero padding, optionally strided.

    Every side is zero-padded by ``(filt_size - 1) // 2 + pad_off`` pixels (the vision-aided-GAN ``pad_type='zero'``
    layout), then each channel is convolved with :func:`binomial_filter` at ``stride``. The output size is
    ``floor((H + 2 * pad - filt_size) / stride) + 1``; for the default ``filt_size=4``: ``H - 1`` with ``pad_off=0``
    and ``H + 1`` with ``pad_off=1`` (stride 1).

    Args:
        channels: number of input channels (one filter copy per channel).
        filt_size: length of the binomial row (4 -> [1, 3, 3, 1]).
        stride: convolution stride (1 in the discriminator heads: blur only).
        pad_off: extra zero padding added to every side.
    """

    filt: torch.Tensor

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 1, pad_off: int = 0) -> None:
        super().__init__()
        self.channels = channels
        self.filt_size = filt_size
        self.stride = stride
        self.pad_off = pad_off
        self.pad = (filt_size - 1) // 2 + pad_off
        # Constant filter: not a learnable weight, kept out of checkpoints.
        filt = binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1)  # (C, 1, k, k)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W) -> (B, C, H', W')
        if x.shape[1] != self.channels:
            raise ValueError(f"BlurPool built for {self.channels} channels, got input with {x.shape[1]}")
        x = F.pad(x, [self.pad] * 4)  # zero padding, (B, C, H + 2p, W + 2p)
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, filt_size={self.filt_size}, stride={self.stride}, pad={self.pad}"
