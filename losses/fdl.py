"""Frequency Distribution Loss (Ni et al., CVPR 2024), StrSR's phase-2 term (StrSR eq. 10, sec. 4.1). Our own code."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from models.pretrained import Source, declare_weights, freeze
from losses.pixel import PixelRange, to_pixel_range
from losses.vgg import (VGG19_WEIGHTS, FrozenLoss, ImageNetNormalize, build_vgg_features, split_stages,
                        stage_channels)

__all__ = ["FDL", "FDL_CHANNELS", "sliced_wasserstein"]

FDL_CHANNELS = (64, 128, 256, 512, 512)  # VGG19 relu1_2, relu2_2, relu3_4, relu4_4, relu5_4


def sliced_wasserstein(a: Tensor, b: Tensor, projections: Tensor) -> Tensor:
    """Sliced Wasserstein-1 distance between the patch distributions of two feature maps.

    Each of the P unit-norm (C, k, k) filters projects every k x k patch (stride 1, no padding) to a scalar; the
    1-D distributions are compared by sorting over space and averaging |difference|, then averaged over the
    projections.

    Args:
        a, b: (B, C, H, W) real feature maps (amplitude or phase spectra).
        projections: (P, C, k, k). Returns (B,).
    """
    pa = F.conv2d(a, projections).flatten(2)  # (B, P, (H-k+1)(W-k+1))
    pb = F.conv2d(b, projections).flatten(2)
    pa, _ = torch.sort(pa, dim=-1)
    pb, _ = torch.sort(pb, dim=-1)
    return (pa - pb).abs().mean(dim=(1, 2))  # (B,)


@declare_weights(vgg=VGG19_WEIGHTS)
class FDL(FrozenLoss):
    """Frequency Distribution Loss: for each VGG19 layer l in relu1_2 ... relu5_4 (ImageNet-normalised input),
    ``F = FFT2(phi_l)`` over (H, W) and ``FDL = sum_l SW(|F_x|, |F_y|) + phase_weight * SW(angle F_x, angle F_y)``,
    mean over the batch (Ni et al., CVPR 2024), SW = :func:`sliced_wasserstein`.

    The ``num_projections`` random unit-norm ``patch_size x patch_size x C`` filters of each layer are drawn once
    from ``seed`` and kept as **non-persistent** buffers: they never enter a checkpoint and are regenerated
    identically from the seed, so a resumed run uses the same projections. fp32 only (autocast off; no bf16 FFT).

    Minimum input size: relu5_4 sits at 1/16 resolution and must hold one ``patch_size`` patch, so
    ``min(H, W) >= 16 * patch_size`` (80 px for the default 5); smaller inputs raise ``ValueError``.

    Input range: images arrive in [0, 1] and are mapped to ``pixel_range`` before the ImageNet normalisation. The
    released StrSR feeds [-1, 1] images to its FDL (jkwang28/StrSR ``HYPIR/trainer/base.py``:
    ``self.fdl_loss(x, self.batch_inputs.gt)`` with ``gt = GT * 2 - 1``), whose VGG normalisation expects [0, 1];
    ``"-1,1"`` (default) reproduces that input, ``"0,1"`` gives the VGG the range it was trained on.

    Args:
        vgg: VGG19 source (torchvision ``vgg19`` state-dict file, or ``config={}``; ``config={"width": w}`` for a
            narrow random trunk, tests only).
        num_projections: random projections per layer (256 in the paper).
        patch_size: projection filter size (5).
        phase_weight: weight of the phase term (1.0).
        seed: seed of the projections.
        pixel_range: ``"-1,1"`` (default, as released) or ``"0,1"``: the range the VGG normalisation receives.
    """

    def __init__(
        self,
        vgg: Source,
        num_projections: int = 256,
        patch_size: int = 5,
        phase_weight: float = 1.0,
        seed: int = 0,
        pixel_range: PixelRange = "-1,1",
    ) -> None:
        super().__init__()
        to_pixel_range(torch.zeros(()), pixel_range)  # validates the name
        self.pixel_range = pixel_range
        features = build_vgg_features(vgg, "vgg19", component="VGG19 (FDL)")
        self.normalize = ImageNetNormalize()
        self.stages = split_stages(features, 5)
        self.num_projections = num_projections
        self.patch_size = patch_size
        self.phase_weight = phase_weight
        self.seed = seed
        channels = stage_channels(features, 5)  # FDL_CHANNELS for the real trunk
        for i, proj in enumerate(self.make_projections(num_projections, patch_size, seed, channels)):
            self.register_buffer(f"proj_{i}", proj, persistent=False)  # (P, C_i, k, k)
        freeze(self)

    @staticmethod
    def make_projections(num_projections: int, patch_size: int, seed: int,
                         channels: tuple[int, ...] = FDL_CHANNELS) -> list[Tensor]:
        """The per-layer unit-norm projection filters, drawn from one CPU generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for c in channels:
            w = torch.randn(num_projections, c, patch_size, patch_size, generator=g)
            out.append(w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        return out

    @property
    def min_size(self) -> int:
        return 16 * self.patch_size

    def projections(self, index: int) -> Tensor:
        return getattr(self, f"proj_{index}")

    def features(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) in [0, 1] -> VGG19 [relu1_2 (B,64,H,W), relu2_2, relu3_4, relu4_4, relu5_4
        (B,512,H/16,W/16)] of ``normalize(x mapped to pixel_range)``."""
        feats = []
        h = self.normalize(to_pixel_range(x, self.pixel_range))
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def layer_distance(self, fx: Tensor, fy: Tensor, index: int) -> tuple[Tensor, Tensor]:
        """Amplitude and phase distances of one layer's features (B, C, H, W); returns two (B,) tensors."""
        spec_x = torch.fft.fft2(fx.float(), dim=(-2, -1))  # complex (B, C, H, W)
        spec_y = torch.fft.fft2(fy.float(), dim=(-2, -1))
        proj = self.projections(index)
        amplitude = sliced_wasserstein(spec_x.abs(), spec_y.abs(), proj)
        phase = sliced_wasserstein(torch.angle(spec_x), torch.angle(spec_y), proj)
        return amplitude, phase

    def forward(self, x: Tensor, y: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
        """x, y: (B, 3, H, W) in [0, 1] with min(H, W) >= 16 * patch_size. Scalar (``mean``) or (B,)."""
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"FDL needs images of at least {self.min_size} px per side (relu5_4 at 1/16 must hold a "
                f"{self.patch_size}x{self.patch_size} patch); got {tuple(x.shape[-2:])}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            feats_x, feats_y = self.features(x.float()), self.features(y.float())
            score = x.new_zeros(x.shape[0], dtype=torch.float32)  # (B,)
            for i, (fx, fy) in enumerate(zip(feats_x, feats_y, strict=True)):
                amplitude, phase = self.layer_distance(fx, fy, i)
                score = score + amplitude + self.phase_weight * phase
        return score.mean() if reduction == "mean" else score
