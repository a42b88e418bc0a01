from __future__ import annotations

import pytest
import torch
from torch import nn

from losses.weighted import WeightedLoss


class Scaled(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.k * (sr - gt).abs().mean()


class Explodes(nn.Module):
    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        raise AssertionError("an inactive term was computed")


def test_total_skips_and_start_steps() -> None:
    a, late = Scaled(1.0), Scaled(2.0)
    loss = WeightedLoss(
        terms={"a": a, "late": late, "off": Explodes()},
        weights={"a": 3.0, "late": 0.5, "off": 0.0},
        start_steps={"late": 10},
    )
    sr = torch.full((1, 3, 2, 2), 0.75, requires_grad=True)
    gt = torch.full((1, 3, 2, 2), 0.5)
    total, values = loss(sr, gt, step=9)
    assert set(values) == {"a"} and late.calls == 0
    assert total.item() == pytest.approx(3.0 * 0.25)
    total, values = loss(sr, gt, step=10)
    assert set(values) == {"a", "late"} and late.calls == 1
    assert total.item() == pytest.approx(3.0 * 0.25 + 0.5 * 2.0 * 0.25)
    assert values["late"].item() == pytest.approx(0.5) and not values["late"].requires_grad
    total.backward()
    assert sr.grad is not None
    assert loss.active("late", 10) and not loss.active("late", 9) and not loss.active("off", 10 ** 6)
    assert sum(p.requires_grad for p in loss.parameters()) == 0


def test_default_weight_and_no_active_term() -> None:
    loss = WeightedLoss(terms={"a": Scaled(1.0), "b": Explodes()}, weights={"b": 0.0}, start_steps={"a": 5})
    sr = torch.ones(1, 3, 2, 2, requires_grad=True)
    total, values = loss(sr, torch.zeros(1, 3, 2, 2), step=0)
    assert values == {} and total.item() == 0.0
    total.backward()  # still backward-able
    total, _ = loss(sr, torch.zeros(1, 3, 2, 2), step=5)
    assert total.item() == pytest.approx(1.0)  # weight defaults to 1


def test_unknown_keys_raise_naming_the_key() -> None:
    with pytest.raises(ValueError, match="'fdl'"):
        WeightedLoss(terms={"l1": Scaled(1.0)}, weights={"fdl": 1.0})
    with pytest.raises(ValueError, match="'lpips'"):
        WeightedLoss(terms={"l1": Scaled(1.0)}, weights={}, start_steps={"lpips": 3})
