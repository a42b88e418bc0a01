"""Blur kernels of the Real-ESRGAN degradation (Wang et al., ICCVW 2021; XPixelGroup/BasicSR
``basicsr/data/degradations.py``) against hand-written formulas and scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import signal, special

from datamodules.degradation import (
    DegradationConfig,
    KernelSampler,
    bivariate_gaussian,
    bivariate_generalized_gaussian,
    bivariate_plateau,
    circular_lowpass_kernel,
)


def test_isotropic_gaussian_matches_hand_computed_and_scipy_window() -> None:
    size, sigma = 21, 2.0
    ref = np.array(
        [[math.exp(-((i - 10) ** 2 + (j - 10) ** 2) / (2 * sigma**2)) for j in range(size)] for i in range(size)]
    )
    ref /= ref.sum()
    k = bivariate_gaussian(size, sigma)
    np.testing.assert_allclose(k, ref, rtol=1e-12, atol=1e-15)
    win = signal.windows.gaussian(size, std=sigma)
    np.testing.assert_allclose(k, np.outer(win, win) / np.outer(win, win).sum(), rtol=1e-10, atol=1e-15)
    # a hand-computed entry: the centre of a 3x3 kernel with sigma 1 is 1 / (1 + 4 e^-0.5 + 4 e^-1)
    assert bivariate_gaussian(3, 1.0)[1, 1] == pytest.approx(1 / (1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)), rel=1e-12)


def test_anisotropic_gaussian_axes_and_rotation() -> None:
    # theta = 0: separable, sig_x along columns (x), sig_y along rows (y)
    k = bivariate_gaussian(15, 1.0, 3.0, 0.0, isotropic=False)
    gx, gy = signal.windows.gaussian(15, std=1.0), signal.windows.gaussian(15, std=3.0)
    ref = np.outer(gy, gx)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-10, atol=1e-15)
    # rotating by pi/2 swaps the axes
    k_rot = bivariate_gaussian(15, 1.0, 3.0, math.pi / 2, isotropic=False)
    np.testing.assert_allclose(k_rot, k.T, atol=1e-12)


def test_generalized_and_plateau_formulas() -> None:
    sx, sy, theta, beta = 1.5, 0.8, 0.3, 1.7
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    q = np.array([[np.array([x, y]) @ inv @ np.array([x, y]) for x in range(-7, 8)] for y in range(-7, 8)])
    gen = np.exp(-0.5 * q**beta)
    plat = 1 / (q**beta + 1)
    general = bivariate_generalized_gaussian(15, sx, sy, theta, beta, False)
    np.testing.assert_allclose(general, gen / gen.sum(), rtol=1e-10)
    np.testing.assert_allclose(bivariate_plateau(15, sx, sy, theta, beta, False), plat / plat.sum(), rtol=1e-10)
    # beta = 1 reduces the generalized Gaussian to the Gaussian
    np.testing.assert_allclose(
        bivariate_generalized_gaussian(15, sx, sy, theta, 1.0, False), bivariate_gaussian(15, sx, sy, theta, False)
    )


@pytest.mark.parametrize("omega,size", [(math.pi / 3, 9), (2.0, 15), (math.pi, 21)])
def test_sinc_kernel_matches_bessel_formula(omega: float, size: int) -> None:
    c = (size - 1) / 2
    ref = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            r = math.hypot(i - c, j - c)
            ref[i, j] = omega**2 / (4 * math.pi) if r == 0 else omega * special.j1(omega * r) / (2 * math.pi * r)
    # the centre value is the r -> 0 limit of the formula
    r = 1e-6
    assert omega * special.j1(omega * r) / (2 * math.pi * r) == pytest.approx(omega**2 / (4 * math.pi), rel=1e-9)
    k = circular_lowpass_kernel(omega, size)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-10, atol=1e-14)
    padded = circular_lowpass_kernel(omega, size, pad_to=21)
    assert padded.shape == (21, 21)
    p = (21 - size) // 2
    np.testing.assert_allclose(padded[p : p + size, p : p + size], k)
    assert padded.sum() == pytest.approx(1.0)


def test_sampler_kernels_sum_to_one_and_follow_probabilities() -> None:
    sampler = KernelSampler(DegradationConfig.preset("realesrgan"))
    rng = np.random.default_rng(0)
    identity = 0
    n = 300
    for _ in range(n):
        ks = sampler(rng)
        assert set(ks) == {"kernel1", "kernel2", "sinc_kernel"}
        for k in ks.values():
            assert k.shape == (21, 21) and k.dtype == torch.float32
            assert float(k.double().sum()) == pytest.approx(1.0, abs=1e-5)
        if ks["sinc_kernel"][10, 10] == 1.0 and float(ks["sinc_kernel"].abs().sum()) == 1.0:
            identity += 1
    # final sinc with p 0.8 -> identity pulse with p 0.2 (binomial sd ~ 0.023)
    assert abs(identity / n - 0.2) < 0.08


def test_sampler_is_deterministic_and_respects_config() -> None:
    cfg = DegradationConfig.preset("realesrgan", sinc_prob=1.0, final_sinc_prob=0.0, kernel_range=(7,))
    sampler = KernelSampler(cfg)
    a = sampler(np.random.default_rng(5))
    b = sampler(np.random.default_rng(5))
    for key in a:
        assert torch.equal(a[key], b[key])
    delta = torch.zeros(21, 21)
    delta[10, 10] = 1
    assert torch.equal(a["sinc_kernel"], delta)
    # kernel1 is a 7x7 sinc padded with zeros to 21x21
    assert torch.count_nonzero(a["kernel1"][:7]) == 0 and torch.count_nonzero(a["kernel1"][7:14, 7:14]) == 49
