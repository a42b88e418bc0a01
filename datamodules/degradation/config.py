"""Every number of the Real-ESRGAN second-order degradation, as one typed dataclass with named presets.

Values follow BasicSR `options/train_realesrgan_x4plus.yml` (preset ``"realesrgan"``, also used by StrSR/HYPIR) and
the lighter parameter set of SeeSR / PiSA-SR / OMGSR (preset ``"light"``); see reference.md section 5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")


def _kernel_prob() -> tuple[float, ...]:
    return (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


@dataclass
class DegradationConfig:
    """Parameters of the Real-ESRGAN second-order degradation (Wang et al. 2021, BasicSR ``RealESRGANModel``).

    Ranges are ``(low, high)`` pairs sampled uniformly; ``resize_prob*`` are ``(up, down, keep)`` probabilities.
    Noise sigmas are on the 0..255 scale (divided by 255 when applied), JPEG qualities in (0, 100].
    """

    # --- blur kernels, drawn per sample in the dataset (KernelSampler) ---
    kernel_size: int = 21  # every kernel is zero-padded to this size
    kernel_range: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)  # odd sizes drawn uniformly
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = field(default_factory=_kernel_prob)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = field(default_factory=_kernel_prob)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8

    # --- unsharp masking (BasicSR USMSharp: cv2 Gaussian 51x51, sigma 0 -> 8) ---
    usm_input: bool = True  # degrade USM(GT) instead of GT (Real-ESRGAN does; SeeSR/OSEDiff do not)
    usm_kernel_size: int = 51
    usm_sigma: float = 8.0
    usm_weight: float = 0.5
    usm_threshold: float = 10.0  # on the 0..255 scale

    # --- first degradation ---
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    # --- second degradation ---
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)  # relative to size / scale
    resize_modes2: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)

    # --- final step: with this probability [resize, sinc, JPEG], else [JPEG, resize, sinc] ---
    final_resize_first_prob: float = 0.5
    final_resize_modes: tuple[str, ...] = RESIZE_MODES

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # YAML gives lists: store tuples
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str = "realesrgan", **overrides: Any) -> "DegradationConfig":
        """Named parameter set with optional field overrides; unknown names or keys raise ``ValueError``."""
        if name not in PRESETS:
            raise ValueError(f"unknown degradation preset {name!r}; valid presets: {sorted(PRESETS)}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in overrides if k not in valid]
        if unknown:
            raise ValueError(f"unknown degradation override key(s) {unknown}; valid keys: {valid}")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""

        def fail(name: str, why: str) -> None:
            raise ValueError(f"DegradationConfig.{name}={getattr(self, name)!r}: {why}")

        if self.kernel_size % 2 != 1:
            fail("kernel_size", "must be odd")
        if not self.kernel_range or any(k % 2 != 1 or k < 1 or k > self.kernel_size for k in self.kernel_range):
            fail("kernel_range", f"needs odd sizes in [1, kernel_size={self.kernel_size}]")
        for lst, prob in (("kernel_list", "kernel_prob"), ("kernel_list2", "kernel_prob2")):
            bad = [k for k in getattr(self, lst) if k not in KERNEL_TYPES]
            if bad:
                fail(lst, f"unknown kernel type(s) {bad}; valid: {list(KERNEL_TYPES)}")
            if len(getattr(self, prob)) != len(getattr(self, lst)):
                fail(prob, f"needs one probability per entry of {lst}")
        for name in ("kernel_prob", "kernel_prob2", "resize_prob", "resize_prob2"):
            p = getattr(self, name)
            if any(v < 0 for v in p) or abs(sum(p) - 1.0) > 1e-6:
                fail(name, "probabilities must be >= 0 and sum to 1")
        if len(self.resize_prob) != 3 or len(self.resize_prob2) != 3:
            fail("resize_prob", "needs (up, down, keep)")
        for name in (
            "sinc_prob", "sinc_prob2", "final_sinc_prob", "gaussian_noise_prob", "gaussian_noise_prob2",
            "gray_noise_prob", "gray_noise_prob2", "second_blur_prob", "final_resize_first_prob",
        ):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "probability must be in [0, 1]")
        for name in (
            "blur_sigma", "blur_sigma2", "betag_range", "betap_range", "betag_range2", "betap_range2",
            "resize_range", "resize_range2", "noise_range", "noise_range2", "poisson_scale_range",
            "poisson_scale_range2", "jpeg_range", "jpeg_range2",
        ):  # fmt: skip
            r = getattr(self, name)
            if len(r) != 2 or r[0] > r[1] or r[0] < 0:
                fail(name, "needs (low, high) with 0 <= low <= high")
        for name in ("blur_sigma", "blur_sigma2", "betag_range", "betap_range", "betag_range2", "betap_range2"):
            if getattr(self, name)[0] <= 0:
                fail(name, "low must be > 0")
        if not (self.resize_range[0] > 0 and self.resize_range[0] <= 1 <= self.resize_range[1]):
            fail("resize_range", "needs 0 < low <= 1 <= high")
        if not (self.resize_range2[0] > 0 and self.resize_range2[0] <= 1 <= self.resize_range2[1]):
            fail("resize_range2", "needs 0 < low <= 1 <= high")
        for name in ("jpeg_range", "jpeg_range2"):
            if getattr(self, name)[0] < 1 or getattr(self, name)[1] > 100:
                fail(name, "JPEG quality must lie in [1, 100]")
        for name in ("resize_modes", "resize_modes2", "final_resize_modes"):
            modes = getattr(self, name)
            if not modes or any(m not in RESIZE_MODES for m in modes):
                fail(name, f"needs a non-empty subset of {list(RESIZE_MODES)}")
        if self.usm_kernel_size % 2 != 1 or self.usm_sigma <= 0:
            fail("usm_kernel_size", "needs an odd size and usm_sigma > 0")


PRESETS: dict[str, dict[str, Any]] = {
    "realesrgan": {},
    # SeeSR / PiSA-SR / OMGSR (OSEDiff-style realesrgan.py): same kernels, milder noise/JPEG, no USM on the input.
    "light": {
        "usm_input": False,
        "resize_range": (0.3, 1.5),
        "noise_range": (1.0, 15.0),
        "poisson_scale_range": (0.05, 2.0),
        "jpeg_range": (60.0, 95.0),
        "second_blur_prob": 0.5,
        "resize_range2": (0.6, 1.2),
        "noise_range2": (1.0, 12.0),
        "poisson_scale_range2": (0.05, 1.0),
        "jpeg_range2": (60.0, 100.0),
    },
}
