"""Real-ESRGAN second-order degradation (Wang et al., ICCVW 2021): kernels (dataset side) and the batched transform."""

from .config import PRESETS, DegradationConfig
from .jpeg import jpeg_compress, quality_to_factor
from .kernels import (
    KernelSampler,
    bivariate_gaussian,
    bivariate_generalized_gaussian,
    bivariate_plateau,
    circular_lowpass_kernel,
    delta_kernel,
    random_mixed_kernel,
)
from .noise import add_gaussian_noise, add_poisson_noise
from .ops import USMSharp, filter2d, resize
from .pipeline import RealESRGANDegradation
from .pool import PairPool

__all__ = [
    "PRESETS",
    "DegradationConfig",
    "KernelSampler",
    "PairPool",
    "RealESRGANDegradation",
    "USMSharp",
    "add_gaussian_noise",
    "add_poisson_noise",
    "bivariate_gaussian",
    "bivariate_generalized_gaussian",
    "bivariate_plateau",
    "circular_lowpass_kernel",
    "delta_kernel",
    "filter2d",
    "jpeg_compress",
    "quality_to_factor",
    "random_mixed_kernel",
    "resize",
]
