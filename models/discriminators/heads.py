"""Trainable discriminator heads on frozen backbone features (one head per feature level).

TUDSR paper 3.5 (multi-level heads on DINOv3 layers 3/6/9, width 128) and StrSR paper 3.3 (heads on CLIP-ConvNeXt
stages + pooled embedding, width 512); layout of the vision-aided-GAN multi-level heads (nupurkmr9/vision-aided-gan
``vision_aided_loss/cv_discriminator.py``).

Spectral norm (Miyato et al., ICLR 2018) uses ``torch.nn.utils.spectral_norm`` (``weight_orig``/``weight_u``/
``weight_v``): one power iteration per forward in train mode, none in eval mode (the heads run in eval during the
generator step). That function registers random ``u``, ``v``, so a head that has not yet run in train mode would
divide by ``u^T W v`` of random vectors (1/30 to 1/700 of the top singular value at the real head sizes). Every
layer is therefore calibrated at construction with :data:`INIT_POWER_ITERATIONS` power iterations, as
``torch.nn.utils.parametrizations.spectral_norm`` does at registration: the first generator step of a stage (whose
heads are fresh) already sees sigma-normalised weights. The parameter and buffer names stay those of
``torch.nn.utils.spectral_norm``, so checkpoints, the trainable-state filter and the FSDP wrap policy are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from models.discriminators.blurpool import BlurPool

__all__ = ["ConvHead", "VectorHead", "build_heads", "calibrated_spectral_norm", "conv_head_output_size"]

HEAD_KINDS = ("map", "vector")
#: power iterations run at construction (``torch.nn.utils.parametrizations.spectral_norm`` runs 15 at registration)
INIT_POWER_ITERATIONS = 15
_EPS = 1e-12  # torch's spectral-norm eps


def calibrated_spectral_norm(layer: nn.Conv2d | nn.Linear, iterations: int = INIT_POWER_ITERATIONS) -> nn.Module:
    """``torch.nn.utils.spectral_norm(layer)`` with ``iterations`` power iterations on its ``u``/``v`` buffers now.

    The weight is seen as the matrix (out, in * kh * kw), as torch reshapes it (``dim=0``); the updates are torch's
    own: ``v = normalize(W^T u)``, ``u = normalize(W v)``, in place.
    """
    layer = spectral_norm(layer)
    with torch.no_grad():
        w = layer.weight_orig.reshape(layer.weight_orig.shape[0], -1)  # (out, in * kh * kw)
        u, v = layer.weight_u, layer.weight_v  # (out,), (in * kh * kw,)
        for _ in range(iterations):
            v.copy_(F.normalize(torch.mv(w.t(), u), dim=0, eps=_EPS))
            u.copy_(F.normalize(torch.mv(w, v), dim=0, eps=_EPS))
    return layer


def conv_head_output_size(size: int) -> int:
    """Spatial output size of :class:`ConvHead` for an input side of ``size`` feature cells.

    BlurPool(pad 2) -> size + 1; Conv3x3 s2 p0 -> floor((size - 2) / 2) + 1; BlurPool(pad 1) -> -1;
    Conv1x1 s2 -> floor((. - 1) / 2) + 1. E.g. 16 -> 17 -> 8 -> 7 -> 4 and 32 -> 33 -> 16 -> 15 -> 8.
    """
    s = size + 1
    s = (s - 3) // 2 + 1
    s = s - 1
    return (s - 1) // 2 + 1


class ConvHead(nn.Sequential):
    """Patch head for a feature map: (B, C, h, w) -> (B, 1, h', w') logits, h' = :func:`conv_head_output_size`.

    BlurPool([1,3,3,1], stride 1, extra pad 1) -> SN-Conv3x3(C, width, stride 2, pad 0) -> LeakyReLU(0.2)
    -> BlurPool([1,3,3,1], stride 1) -> SN-Conv1x1(width, 1, stride 2). Needs h, w >= 4.
    """

    def __init__(self, in_channels: int, width: int = 128) -> None:
        super().__init__(
            BlurPool(in_channels, filt_size=4, stride=1, pad_off=1),
            calibrated_spectral_norm(nn.Conv2d(in_channels, width, kernel_size=3, stride=2, padding=0)),
            nn.LeakyReLU(0.2),
            BlurPool(width, filt_size=4, stride=1),
            calibrated_spectral_norm(nn.Conv2d(width, 1, kernel_size=1, stride=2)),
        )
        self.in_channels = in_channels
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, h, w) -> (B, 1, h', w')
        if x.ndim != 4 or min(x.shape[-2:]) < 4:
            raise ValueError(f"ConvHead needs a (B, C, h, w) map with h, w >= 4, got shape {tuple(x.shape)}")
        return super().forward(x)


class VectorHead(nn.Sequential):
    """Head for a pooled embedding: (B, D) -> (B, 1). SN-Linear(D, width) -> LeakyReLU(0.2) -> SN-Linear(width, 1)."""

    def __init__(self, in_dim: int, width: int = 512) -> None:
        super().__init__(
            calibrated_spectral_norm(nn.Linear(in_dim, width)),
            nn.LeakyReLU(0.2),
            calibrated_spectral_norm(nn.Linear(width, 1)),
        )
        self.in_dim = in_dim
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, D) -> (B, 1)
        if x.ndim != 2:
            raise ValueError(f"VectorHead needs a (B, D) embedding, got shape {tuple(x.shape)}")
        return super().forward(x)


def build_heads(out_channels: Sequence[int], kinds: Sequence[str], width: int) -> nn.ModuleList:
    """One head per backbone level: :class:`ConvHead` for ``"map"`` levels, :class:`VectorHead` for ``"vector"``.

    Shared by the DINOv3 and the CLIP-ConvNeXt discriminators (backbones expose ``out_channels`` and ``kinds``).
    """
    if len(out_channels) != len(kinds):
        raise ValueError(f"out_channels ({len(out_channels)}) and kinds ({len(kinds)}) differ in length")
    heads = nn.ModuleList()
    for channels, kind in zip(out_channels, kinds):
        if kind == "map":
            heads.append(ConvHead(int(channels), width))
        elif kind == "vector":
            heads.append(VectorHead(int(channels), width))
        else:
            raise ValueError(f"unknown head kind '{kind}'; expected one of {HEAD_KINDS}")
    return heads
