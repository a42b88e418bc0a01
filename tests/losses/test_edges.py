"""Sobel edges on step edges and ramps, and EA-DISTS (TUDSR eq. 5)."""

from __future__ import annotations

import math

import pytest
import torch

from losses.dists import DISTS
from losses.edges import EdgeAwareDISTS, sobel
from models.pretrained import Source

EDGE = math.sqrt(16 + 1e-6)  # |gx| = (1 + 2 + 1) * unit step
FLAT = math.sqrt(1e-6)


def test_vertical_step_edge() -> None:
    x = torch.zeros(1, 3, 6, 8)
    x[..., 4:] = 1.0  # step between columns 3 and 4
    e = sobel(x)
    assert e.shape == (1, 1, 6, 8)
    expected = torch.full((6, 8), FLAT)
    expected[:, 3] = EDGE
    expected[:, 4] = EDGE
    torch.testing.assert_close(e[0, 0], expected, rtol=1e-6, atol=1e-7)


def test_horizontal_edge_uses_channel_mean() -> None:
    x = torch.zeros(2, 3, 7, 5)
    x[:, 0, 3:, :] = 3.0  # grey step of height 1 (mean over 3 channels)
    e = sobel(x)[:, 0]
    expected = torch.full((2, 7, 5), FLAT)
    expected[:, 2, :] = EDGE
    expected[:, 3, :] = EDGE
    torch.testing.assert_close(e, expected, rtol=1e-6, atol=1e-7)


def test_replicate_padding_on_a_ramp() -> None:
    x = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 3, 5, 6).contiguous()  # x[..., j] = j
    e = sobel(x)[0, 0]
    # interior: (x[j+1] - x[j-1]) * 4 = 8; border columns see a replicated neighbour: (1) * 4 = 4
    expected = torch.tensor([4.0, 8, 8, 8, 8, 4]).square().add(1e-6).sqrt().expand(5, 6)
    torch.testing.assert_close(e, expected)


@pytest.fixture(scope="module")
def dists() -> DISTS:
    torch.manual_seed(0)
    return DISTS(Source(config={}))


def test_edge_aware_dists(dists) -> None:
    ea = EdgeAwareDISTS(dists)
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert ea(x, x.clone()).abs().item() < 1e-6
    x_req = x.clone().requires_grad_(True)
    value = ea(x_req, y, reduction="none")
    assert value.shape == (2,)
    with torch.no_grad():
        sx, sy = sobel(x), sobel(y)
        expected = dists(x, y, reduction="none") + dists(sx.repeat(1, 3, 1, 1), sy.repeat(1, 3, 1, 1), reduction="none")
    torch.testing.assert_close(value.detach(), expected)
    assert (value > dists(x, y, reduction="none")).all()
    value.sum().backward()
    assert x_req.grad is not None and torch.isfinite(x_req.grad).all() and x_req.grad.abs().sum() > 0
    assert sum(p.requires_grad for p in ea.parameters()) == 0
