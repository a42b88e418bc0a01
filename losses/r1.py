"""Approximated R1 regularisation of the discriminator (StrSR eq. 8, 9)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ApproxR1"]


class ApproxR1(nn.Module):
    """``weight * mean_b sum_k mean_{other dims} (D_k(y) - D_k(y + n))^2`` (StrSR eq. 8, lambda_R1 = 10).

    ``scale`` is given on **[-1, 1] pixels**, as in the released code (uniform noise in [0, 0.005)). Our images
    are in [0, 1], so the noise actually added is halved: ``noise="uniform"`` adds U[0, scale) * 0.5,
    ``noise="gaussian"`` (the paper's N(y, sigma I)) adds N(0, scale^2) * 0.5, i.e. standard deviation
    ``scale / 2`` in [0, 1] units. Gradients flow to the discriminator through both calls.

    Args:
        weight: lambda_R1.
        noise: ``"uniform"`` (released code) or ``"gaussian"`` (paper).
        scale: noise amplitude (uniform width or Gaussian std) on [-1, 1] pixels.
    """

    def __init__(self, weight: float = 10.0, noise: Literal["uniform", "gaussian"] = "uniform",
                 scale: float = 0.005) -> None:
        super().__init__()
        if noise not in ("uniform", "gaussian"):
            raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
        self.weight, self.noise, self.scale = weight, noise, scale

    def noise_like(self, real: Tensor) -> Tensor:
        """The perturbation added to ``real`` (B, 3, H, W) in [0, 1] units."""
        base = torch.rand_like(real) if self.noise == "uniform" else torch.randn_like(real)
        return base * (self.scale * 0.5)

    def forward(
        self,
        discriminator: Callable[[Tensor], list[Tensor]],
        real: Tensor,
        real_logits: list[Tensor] | None = None,
    ) -> Tensor:
        """discriminator: image (B, 3, H, W) in [0, 1] -> list of logits; real: (B, 3, H, W);
        real_logits: D(real) if already computed (reused, gradients kept). Returns a scalar."""
        if real_logits is None:
            real_logits = discriminator(real)
        noisy_logits = discriminator(real + self.noise_like(real))
        if len(noisy_logits) != len(real_logits):
            raise ValueError(f"ApproxR1: {len(real_logits)} real levels vs {len(noisy_logits)} noisy levels")
        per_sample = 0.0
        for r, n in zip(real_logits, noisy_logits):
            diff = (r.float() - n.float()).flatten(1)  # (B, rest)
            per_sample = per_sample + diff.square().mean(dim=1)  # (B,)
        return self.weight * per_sample.mean()
