"""MAE / L1 against hand computations in both pixel ranges; the default is the authors' [-1, 1]."""

from __future__ import annotations

import pytest
import torch

from losses.pixel import L1, MAE, to_pixel_range

SR = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2).expand(2, 3, 2, 2)  # [0, 1] images, as the modules pass
GT = torch.tensor([1.0, 0.5, 0.0, 0.5]).view(1, 1, 2, 2).expand(2, 3, 2, 2)


def test_mae_hand_values_in_both_ranges() -> None:
    # [0, 1]: |0 - 1|, |0.5 - 0.5|, |1 - 0|, |0.25 - 0.5|
    assert MAE(pixel_range="0,1")(SR, GT).item() == (1.0 + 0.0 + 1.0 + 0.25) / 4
    # [-1, 1] (2x - 1): sr = [-1, 0, 1, -0.5], gt = [1, 0, -1, 0] -> |.| = [2, 0, 2, 0.5]
    assert MAE(pixel_range="-1,1")(SR, GT).item() == (2.0 + 0.0 + 2.0 + 0.5) / 4
    assert L1()(SR, GT).item() == (2.0 + 0.0 + 2.0 + 0.5) / 4  # StrSR's name, same default (released [-1, 1])
    assert MAE().pixel_range == "-1,1"  # OMGSR / released StrSR: l1_loss on [-1, 1] tensors
    assert sum(p.requires_grad for p in MAE().parameters()) == 0


def test_gradient_follows_the_range() -> None:
    sr = SR.clone().requires_grad_(True)
    MAE(pixel_range="-1,1")(sr, GT).backward()
    n = SR.numel()
    expected = torch.sign(SR - GT) * 2.0 / n  # d/dsr mean|2 sr - 2 gt|
    torch.testing.assert_close(sr.grad, expected)


def test_unknown_range_is_refused() -> None:
    with pytest.raises(ValueError, match="pixel_range"):
        MAE(pixel_range="0,255")
    assert torch.equal(to_pixel_range(torch.tensor([0.0, 0.25, 1.0]), "-1,1"), torch.tensor([-1.0, -0.5, 1.0]))
