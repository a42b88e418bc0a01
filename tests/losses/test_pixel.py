from __future__ import annotations

import torch

from losses.pixel import L1, MAE


def test_mae_hand_values() -> None:
    sr = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2).expand(2, 3, 2, 2)
    gt = torch.tensor([1.0, 0.5, 0.0, 0.5]).view(1, 1, 2, 2).expand(2, 3, 2, 2)
    assert MAE()(sr, gt).item() == (1.0 + 0.0 + 1.0 + 0.25) / 4
    assert L1()(sr, gt).item() == (1.0 + 0.0 + 1.0 + 0.25) / 4  # StrSR's name for the same loss
    assert sum(p.requires_grad for p in MAE().parameters()) == 0
