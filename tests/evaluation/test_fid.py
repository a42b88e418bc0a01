"""FID: the Frechet distance against scipy's matrix square root, and the random-init Inception set metric."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from evaluation import FID, frechet_distance


def _scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """pytorch-fid's formula: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n1,n2,d", [(60, 50, 6), (4, 5, 6), (7, 7, 6)])  # full-rank and low-rank branches
def test_frechet_distance_matches_scipy(n1: int, n2: int, d: int) -> None:
    g = torch.Generator().manual_seed(n1)
    real = torch.randn(n1, d, generator=g, dtype=torch.float64)
    fake = 1.5 * torch.randn(n2, d, generator=g, dtype=torch.float64) + 0.3
    assert float(frechet_distance(real, fake)) == pytest.approx(_scipy_fid(real.numpy(), fake.numpy()), rel=1e-6)


def test_frechet_distance_of_gaussians_in_closed_form() -> None:
    # identical sets -> 0; a shifted copy -> |shift|^2 (same covariance)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    assert float(frechet_distance(x, x)) == pytest.approx(0.0, abs=1e-9)
    assert float(frechet_distance(x, x + 2.0)) == pytest.approx(5 * 4.0, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x[:1], x)


def test_fid_random_init_is_a_set_metric() -> None:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    sr = (gt + 0.2 * torch.rand(gt.shape, generator=g)).clamp(0, 1)
    fid = FID(random_init=True, input_size=75)  # the smallest input Inception takes, for speed
    assert not fid.per_image and fid.needs_reference and not fid.higher_is_better
    assert fid.update(sr[:1], gt[:1]) is None
    assert fid.compute() is None  # one image per side is not a set
    assert fid.update(sr[1:], None) is None  # LQ-only batches add nothing
    fid.update(sr[1:], gt[1:])
    value = fid.compute()
    assert value is not None and np.isfinite(value) and value >= -1e-6
    other = fid.fork()  # the next set: same network, empty statistics
    assert other.features is fid.features and other.compute() is None
    assert fid.compute() == pytest.approx(value)
    fid.reset()
    assert fid.compute() is None
