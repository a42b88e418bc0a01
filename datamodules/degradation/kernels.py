"""Blur kernels of the Real-ESRGAN degradation (XPixelGroup/BasicSR ``basicsr/data/degradations.py``).

All kernel functions are plain numpy (float64) and return kernels normalised to sum 1:

- Gaussian            k(x) ~ exp(-0.5 x^T S^-1 x)
- generalized Gaussian k(x) ~ exp(-0.5 (x^T S^-1 x)^beta)
- plateau             k(x) ~ 1 / ((x^T S^-1 x)^beta + 1)
- sinc (circular low-pass) k(r) ~ omega J1(omega r) / (2 pi r), centre omega^2 / (4 pi)

with S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T. ``KernelSampler`` draws the three per-sample kernels of one
training item (``kernel1``, ``kernel2``, ``sinc_kernel``) exactly in BasicSR's ``RealESRGANDataset`` order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from .config import DegradationConfig, StageConfig

__all__ = [
    "mesh_grid",
    "sigma_matrix2",
    "bivariate_gaussian",
    "bivariate_generalized_gaussian",
    "bivariate_plateau",
    "circular_lowpass_kernel",
    "random_mixed_kernel",
    "pad_kernel",
    "delta_kernel",
    "KernelSampler",
]


def mesh_grid(kernel_size: int) -> np.ndarray:
    """(k, k, 2) grid of (x, y) offsets from the centre; x runs along columns, y along rows."""
    ax = np.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack((xx, yy), axis=-1)


def sigma_matrix2(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """Covariance R(theta) diag(sig_x^2, sig_y^2) R(theta)^T, (2, 2)."""
    d = np.diag([sig_x**2, sig_y**2])
    u = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return u @ d @ u.T


def _quadratic_form(kernel_size: int, sig_x: float, sig_y: float, theta: float, isotropic: bool) -> np.ndarray:
    """x^T S^-1 x on the kernel grid, (k, k)."""
    sigma = np.diag([sig_x**2, sig_x**2]) if isotropic else sigma_matrix2(sig_x, sig_y, theta)
    grid = mesh_grid(kernel_size)
    inv = np.linalg.inv(sigma)
    return np.sum((grid @ inv) * grid, axis=-1)


def bivariate_gaussian(
    kernel_size: int, sig_x: float, sig_y: float | None = None, theta: float = 0.0, isotropic: bool = True
) -> np.ndarray:
    """Normalised (an)isotropic Gaussian kernel, (k, k)."""
    q = _quadratic_form(kernel_size, sig_x, sig_x if sig_y is None else sig_y, theta, isotropic)
    kernel = np.exp(-0.5 * q)
    return kernel / kernel.sum()


def bivariate_generalized_gaussian(
    kernel_size: int, sig_x: float, sig_y: float | None, theta: float, beta: float, isotropic: bool = True
) -> np.ndarray:
    """Normalised generalized Gaussian exp(-0.5 q^beta), (k, k)."""
    q = _quadratic_form(kernel_size, sig_x, sig_x if sig_y is None else sig_y, theta, isotropic)
    kernel = np.exp(-0.5 * np.power(q, beta))
    return kernel / kernel.sum()


def bivariate_plateau(
    kernel_size: int, sig_x: float, sig_y: float | None, theta: float, beta: float, isotropic: bool = True
) -> np.ndarray:
    """Normalised plateau kernel 1 / (q^beta + 1), (k, k)."""
    q = _quadratic_form(kernel_size, sig_x, sig_x if sig_y is None else sig_y, theta, isotropic)
    kernel = 1.0 / (np.power(q, beta) + 1.0)
    return kernel / kernel.sum()


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """Normalised 2-D sinc (ideal circular low-pass) kernel with cutoff ``omega``, zero-padded to ``pad_to``."""
    if kernel_size % 2 != 1:
        raise ValueError(f"sinc kernel size must be odd, got {kernel_size}")
    grid = mesh_grid(kernel_size)
    r = np.hypot(grid[..., 0], grid[..., 1])
    c = kernel_size // 2
    r[c, c] = 1.0  # placeholder, replaced by the limit below
    kernel = cutoff * special.j1(cutoff * r) / (2.0 * math.pi * r)
    kernel[c, c] = cutoff**2 / (4.0 * math.pi)  # lim_{r->0} omega J1(omega r) / (2 pi r)
    kernel = kernel / kernel.sum()
    return pad_kernel(kernel, pad_to) if pad_to > kernel_size else kernel


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a centred odd kernel to (size, size)."""
    p = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((p, p), (p, p))) if p > 0 else kernel


def delta_kernel(size: int) -> np.ndarray:
    """Identity (pulse) kernel, (size, size)."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def _draw_beta(rng: np.random.Generator, beta_range: tuple[float, float]) -> float:
    """Beta from [lo, 1] or [1, hi] with probability 0.5 each (BasicSR)."""
    if rng.uniform() < 0.5:
        return float(rng.uniform(beta_range[0], 1.0))
    return float(rng.uniform(1.0, beta_range[1]))


def random_mixed_kernel(
    rng: np.random.Generator,
    kernel_list: tuple[str, ...],
    kernel_prob: tuple[float, ...],
    kernel_size: int,
    sigma_range: tuple[float, float],
    betag_range: tuple[float, float],
    betap_range: tuple[float, float],
    rotation_range: tuple[float, float] = (-math.pi, math.pi),
) -> np.ndarray:
    """One kernel of a type drawn from ``kernel_list`` with ``kernel_prob`` (BasicSR ``random_mixed_kernels``)."""
    kind = kernel_list[rng.choice(len(kernel_list), p=np.asarray(kernel_prob) / np.sum(kernel_prob))]
    isotropic = kind.endswith("iso") and not kind.endswith("aniso")
    sig_x = float(rng.uniform(*sigma_range))
    if isotropic:
        sig_y, theta = sig_x, 0.0
    else:
        sig_y = float(rng.uniform(*sigma_range))
        theta = float(rng.uniform(*rotation_range))
    if kind in ("iso", "aniso"):
        return bivariate_gaussian(kernel_size, sig_x, sig_y, theta, isotropic)
    if kind.startswith("generalized"):
        return bivariate_generalized_gaussian(kernel_size, sig_x, sig_y, theta, _draw_beta(rng, betag_range), isotropic)
    return bivariate_plateau(kernel_size, sig_x, sig_y, theta, _draw_beta(rng, betap_range), isotropic)


class KernelSampler:
    """Per-sample kernels of one training item, drawn in the dataset (BasicSR ``RealESRGANDataset.__getitem__``).

    kernel1/kernel2: sinc with ``sinc_prob`` (omega U(pi/3, pi) for size < 13, else U(pi/5, pi)), otherwise a mixed
    kernel; final sinc kernel with ``final_sinc_prob`` (omega U(pi/3, pi)), otherwise the identity pulse.
    """

    def __init__(self, config: DegradationConfig) -> None:
        self.config = config

    def _blur_kernel(self, rng: np.random.Generator, s: StageConfig) -> np.ndarray:
        """The blur kernel of one degradation stage, zero-padded to ``kernel_size``."""
        size = int(rng.choice(self.config.kernel_range))
        if rng.uniform() < s.sinc_prob:
            omega = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
            kernel = circular_lowpass_kernel(float(omega), size)
        else:
            kernel = random_mixed_kernel(rng, s.kernel_list, s.kernel_prob, size, s.blur_sigma, s.betag_range,
                                         s.betap_range)
        return pad_kernel(kernel, self.config.kernel_size)

    def __call__(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        c = self.config
        k1 = self._blur_kernel(rng, c.stage1)
        k2 = self._blur_kernel(rng, c.stage2)
        if rng.uniform() < c.final_sinc_prob:
            size = int(rng.choice(c.kernel_range))
            sinc = circular_lowpass_kernel(float(rng.uniform(math.pi / 3, math.pi)), size, pad_to=c.kernel_size)
            sinc = pad_kernel(sinc, c.kernel_size)
        else:
            sinc = delta_kernel(c.kernel_size)
        as_t = lambda k: torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))  # noqa: E731
        return {"kernel1": as_t(k1), "kernel2": as_t(k2), "sinc_kernel": as_t(sinc)}
