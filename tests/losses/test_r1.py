"""Approximated R1 (StrSR eq. 8) on a tiny discriminator with known outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from losses.r1 import ApproxR1


class TwoLevelD(nn.Module):
    """level 0: w * channel mean (B, 1, H, W); level 1: 0.1 * w * sum (B, 1). Records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(3.0))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(x.detach().clone())
        return [self.w * x.mean(dim=1, keepdim=True), 0.1 * self.w * x.sum(dim=(1, 2, 3)).view(-1, 1)]


def test_uniform_r1_matches_hand_computation() -> None:
    torch.manual_seed(0)
    d = TwoLevelD()
    real = torch.rand(3, 3, 4, 5)
    r1 = ApproxR1(weight=10.0, noise="uniform", scale=0.005)
    value = r1(d, real)
    assert len(d.inputs) == 2
    noise = (d.inputs[1] - real).double().numpy()
    assert noise.min() >= 0.0 and noise.max() < 0.005 * 0.5 + 1e-7  # U[0, scale) on [-1, 1] -> halved
    w = 3.0
    per_sample = []
    for b in range(3):
        n = noise[b]
        level0 = np.mean([(w * n[:, i, j].mean()) ** 2 for i in range(4) for j in range(5)])
        level1 = (0.1 * w * n.sum()) ** 2
        per_sample.append(level0 + level1)
    assert value.item() == pytest.approx(10.0 * np.mean(per_sample), rel=1e-4)
    value.backward()
    assert d.w.grad is not None and d.w.grad.item() > 0
    assert sum(p.requires_grad for p in r1.parameters()) == 0


def test_reuses_real_logits_and_gaussian_scale() -> None:
    torch.manual_seed(1)
    d = TwoLevelD()
    real = torch.rand(4, 3, 32, 32)
    logits = d(real)
    d.inputs.clear()
    r1 = ApproxR1(weight=2.0, noise="gaussian", scale=0.2)
    r1(d, real, real_logits=logits)
    assert len(d.inputs) == 1  # only the noisy pass
    noise = d.inputs[0] - real
    assert abs(noise.mean().item()) < 3e-3
    assert noise.std().item() == pytest.approx(0.1, rel=0.03)  # std = scale / 2 in [0, 1] units
    with pytest.raises(ValueError):
        ApproxR1(noise="laplace")
