"""FDL (Ni et al. 2024): sliced Wasserstein by hand, shift behaviour, projections from the seed.

The module is built on a narrow random VGG19 (``width`` 1/8): the loss code is the same at any width, and the real
trunk's layout is checked in ``test_vgg.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losses.fdl import FDL, FDL_CHANNELS, sliced_wasserstein
from models.pretrained import Source


NARROW = {"width": 0.125}
CHANNELS = (8, 16, 32, 64, 64)  # FDL_CHANNELS / 8


@pytest.fixture(scope="module")
def fdl() -> FDL:
    torch.manual_seed(0)
    return FDL(Source(config=NARROW), num_projections=8, seed=3)


def test_sliced_wasserstein_hand_computation() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(2, 2, 4, 5), torch.randn(2, 2, 4, 5)
    proj = torch.randn(3, 2, 2, 2)
    got = sliced_wasserstein(a, b, proj)
    an, bn, pn = a.double().numpy(), b.double().numpy(), proj.double().numpy()
    expected = []
    for n in range(2):
        per_proj = []
        for p in range(3):
            va, vb = [], []
            for i in range(3):  # (4 - 2 + 1) x (5 - 2 + 1) valid positions
                for j in range(4):
                    va.append((an[n, :, i:i + 2, j:j + 2] * pn[p]).sum())
                    vb.append((bn[n, :, i:i + 2, j:j + 2] * pn[p]).sum())
            per_proj.append(np.abs(np.sort(va) - np.sort(vb)).mean())
        expected.append(np.mean(per_proj))
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_identical_zero_shifted_positive_and_gradient(fdl) -> None:
    torch.manual_seed(2)
    x = torch.rand(2, 3, 80, 80)
    assert fdl(x, x.clone()).item() == 0.0
    shifted = torch.roll(x, shifts=(5, 3), dims=(2, 3))
    x_req = shifted.clone().requires_grad_(True)
    value = fdl(x_req, x, reduction="none")
    assert value.shape == (2,) and (value > 0).all()
    value.mean().backward()
    assert x_req.grad is not None and torch.isfinite(x_req.grad).all() and x_req.grad.abs().sum() > 0
    assert sum(p.requires_grad for p in fdl.parameters()) == 0


def test_amplitude_ignores_circular_shift_of_features(fdl) -> None:
    torch.manual_seed(3)
    f = torch.rand(2, CHANNELS[1], 12, 12)
    g = torch.roll(f, shifts=(4, 7), dims=(2, 3))
    amplitude, phase = fdl.layer_distance(f, g, 1)
    reference, _ = fdl.layer_distance(f, torch.rand_like(f), 1)
    assert (amplitude < 1e-4 * reference).all()
    assert (phase > 1e-2).all()


def test_projections_regenerate_from_seed_and_stay_out_of_state_dict(fdl) -> None:
    assert not any(k.startswith("proj_") for k in fdl.state_dict())
    assert [p.shape[1] for p in FDL.make_projections(8, 5, seed=3)] == list(FDL_CHANNELS)  # real trunk's default
    fresh = FDL.make_projections(8, 5, seed=3, channels=CHANNELS)
    for i, c in enumerate(CHANNELS):
        proj = fdl.projections(i)
        assert proj.shape == (8, c, 5, 5)
        torch.testing.assert_close(proj.flatten(1).norm(dim=1), torch.ones(8))
        assert torch.equal(proj, fresh[i])
    other = FDL.make_projections(8, 5, seed=4, channels=CHANNELS)
    assert not torch.equal(other[0], fresh[0])
    # a restored module: same projections from the seed, state dict loads strictly without them
    torch.manual_seed(123)
    restored = FDL(Source(config=NARROW), num_projections=8, seed=3)
    restored.load_state_dict(fdl.state_dict(), strict=True)
    for i in range(len(FDL_CHANNELS)):
        assert torch.equal(restored.projections(i), fdl.projections(i))
    x, y = torch.rand(1, 3, 80, 80), torch.rand(1, 3, 80, 80)
    torch.testing.assert_close(restored(x, y), fdl(x, y))


def test_minimum_size_and_fp32_under_autocast(fdl) -> None:
    x = torch.rand(1, 3, 79, 96)
    with pytest.raises(ValueError, match="80 px"):
        fdl(x, x)
    torch.manual_seed(4)
    x, y = torch.rand(1, 3, 80, 80), torch.rand(1, 3, 80, 80)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fdl(x, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, fdl(x, y))
    fdl.train()
    assert not fdl.training


def test_pixel_range_is_the_released_minus_one_one_input(fdl) -> None:
    """Default ``"-1,1"``: the VGG sees ImageNet-normalised ``2 x - 1``, as the released StrSR feeds its FDL
    (jkwang28/StrSR ``HYPIR/trainer/base.py`` at 46e57115: ``self.fdl_loss(x, gt)`` on [-1, 1] tensors);
    ``"0,1"``: the plain [0, 1] image."""
    torch.manual_seed(5)
    x, y = torch.rand(2, 3, 80, 80), torch.rand(2, 3, 80, 80)
    assert fdl.pixel_range == "-1,1"
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = (x * 2 - 1 - mean) / std  # by hand
    for stage, got in zip(fdl.stages, fdl.features(x)):
        h = stage(h)
        torch.testing.assert_close(got, h)
    ours = FDL(Source(config=NARROW), num_projections=8, seed=3, pixel_range="0,1")
    ours.load_state_dict(fdl.state_dict())
    # [-1, 1] through the "0,1" module is the same computation as [0, 1] through the default one
    torch.testing.assert_close(ours(x * 2 - 1, y * 2 - 1), fdl(x, y))
    assert not torch.allclose(ours(x, y), fdl(x, y))
    with pytest.raises(ValueError, match="pixel_range"):
        FDL(Source(config=NARROW), num_projections=8, pixel_range="0,255")
