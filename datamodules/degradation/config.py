"""Every number of the Real-ESRGAN second-order degradation, as typed dataclasses with named presets.

Values follow XPixelGroup/BasicSR ``options/train/RealESRGAN/train_realesrgan_x4plus.yml`` (preset ``"realesrgan"``,
also used by StrSR/HYPIR ``configs/*_train_stage1.yaml``) and the lighter parameter set of cswry/SeeSR
``dataloaders/params_realesrgan.yml`` (preset ``"light"``; wuer5/OMGSR ``dataset/params_realesrgan.yml`` and
OSEDiff/PiSA-SR repeat it), value for value (``tests/datamodules/test_degradation_presets.py``). The two degradation
stages share one dataclass, :class:`StageConfig`.
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


def _as_tuples(obj: Any) -> None:
    """YAML gives lists: store tuples."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            setattr(obj, f.name, tuple(value))


@dataclass
class StageConfig:
    """One degradation stage: blur -> random resize -> Gaussian/Poisson noise -> JPEG (Real-ESRGAN eq. 1, Fig. 2).

    Ranges are ``(low, high)`` pairs sampled uniformly; ``resize_prob`` holds the ``(up, down, keep)``
    probabilities. Noise sigmas are on the 0..255 scale (divided by 255 when applied), JPEG qualities in [1, 100].
    Stage 2 resizes relative to ``size / scale``, and its JPEG is part of the final step.

    Args:
        blur_prob: probability of the blur, drawn per batch; ``None``: always, without a random draw (BasicSR's first
            blur).
        kernel_list, kernel_prob, sinc_prob, blur_sigma, betag_range, betap_range: the blur kernel drawn per sample
            (``KernelSampler``): a sinc kernel with ``sinc_prob``, else a mixed kernel of ``kernel_list`` types.
        resize_prob, resize_range, resize_modes: the per-batch random resize.
        gaussian_noise_prob, noise_range, poisson_scale_range, gray_noise_prob: Gaussian (else Poisson) noise.
        jpeg_range: JPEG quality range.
    """

    blur_prob: float | None = None
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = field(default_factory=_kernel_prob)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    def __post_init__(self) -> None:
        _as_tuples(self)

    def validate(self, prefix: str) -> None:
        """Raise ``ValueError`` naming the first inconsistent field as ``<prefix>.<field>``."""

        def fail(name: str, why: str) -> None:
            raise ValueError(f"{prefix}.{name}={getattr(self, name)!r}: {why}")

        bad = [k for k in self.kernel_list if k not in KERNEL_TYPES]
        if bad:
            fail("kernel_list", f"unknown kernel type(s) {bad}; valid: {list(KERNEL_TYPES)}")
        if len(self.kernel_prob) != len(self.kernel_list):
            fail("kernel_prob", "needs one probability per entry of kernel_list")
        for name in ("kernel_prob", "resize_prob"):
            p = getattr(self, name)
            if any(v < 0 for v in p) or abs(sum(p) - 1.0) > 1e-6:
                fail(name, "probabilities must be >= 0 and sum to 1")
        if len(self.resize_prob) != 3:
            fail("resize_prob", "needs (up, down, keep)")
        if self.blur_prob is not None and not 0.0 <= self.blur_prob <= 1.0:
            fail("blur_prob", "probability must be in [0, 1] (or null: always)")
        for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "probability must be in [0, 1]")
        for name in ("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range", "poisson_scale_range",
                     "jpeg_range"):
            r = getattr(self, name)
            if len(r) != 2 or r[0] > r[1] or r[0] < 0:
                fail(name, "needs (low, high) with 0 <= low <= high")
        for name in ("blur_sigma", "betag_range", "betap_range"):
            if getattr(self, name)[0] <= 0:
                fail(name, "low must be > 0")
        if not (self.resize_range[0] > 0 and self.resize_range[0] <= 1 <= self.resize_range[1]):
            fail("resize_range", "needs 0 < low <= 1 <= high")
        if self.jpeg_range[0] < 1 or self.jpeg_range[1] > 100:
            fail("jpeg_range", "JPEG quality must lie in [1, 100]")
        if not self.resize_modes or any(m not in RESIZE_MODES for m in self.resize_modes):
            fail("resize_modes", f"needs a non-empty subset of {list(RESIZE_MODES)}")


def _stage2() -> StageConfig:
    return StageConfig(blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
                       noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))


STAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StageConfig))
#: flat override keys of the stages, as in BasicSR's option files: ``<field>`` (stage 1), ``<field>2`` (stage 2)
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{name: ("stage1", name) for name in STAGE_FIELDS},
    **{f"{name}2": ("stage2", name) for name in STAGE_FIELDS},
    "second_blur_prob": ("stage2", "blur_prob"),
}


@dataclass
class DegradationConfig:
    """Parameters of the Real-ESRGAN second-order degradation (Wang et al. 2021, BasicSR ``RealESRGANModel``):
    USM sharpening, two :class:`StageConfig` stages and the final step.
    """

    # --- blur kernel sizes (both stages and the final sinc), drawn per sample in the dataset (KernelSampler) ---
    kernel_size: int = 21  # every kernel is zero-padded to this size
    kernel_range: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)  # odd sizes drawn uniformly

    # --- unsharp masking (BasicSR USMSharp: cv2 Gaussian 51x51, sigma 0 -> 8) ---
    usm_input: bool = True  # degrade USM(GT) instead of GT (Real-ESRGAN does; SeeSR/OSEDiff do not)
    usm_kernel_size: int = 51
    usm_sigma: float = 8.0
    usm_weight: float = 0.5
    usm_threshold: float = 10.0  # on the 0..255 scale

    # --- the two stages ---
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)

    # --- final step: sinc kernel, then with this probability [resize, sinc, JPEG], else [JPEG, resize, sinc] ---
    final_sinc_prob: float = 0.8
    final_resize_first_prob: float = 0.5
    final_resize_modes: tuple[str, ...] = RESIZE_MODES

    def __post_init__(self) -> None:
        _as_tuples(self)
        for name in ("stage1", "stage2"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, StageConfig(**value))
        self.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str = "realesrgan", **overrides: Any) -> "DegradationConfig":
        """Named parameter set with optional overrides; unknown names or keys raise ``ValueError``.

        Override keys: the top-level fields, the stages' fields flat as in BasicSR's option files (``noise_range``
        for stage 1, ``noise_range2`` for stage 2, ``second_blur_prob``), or ``stage1`` / ``stage2`` dicts.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown degradation preset {name!r}; valid presets: {sorted(PRESETS)}")
        top = [f.name for f in dataclasses.fields(cls)]
        valid = [k for k in top if k not in ("stage1", "stage2")] + list(FLAT_KEYS) + ["stage1", "stage2"]
        unknown = [k for k in overrides if k not in valid]
        for stage in ("stage1", "stage2"):
            unknown += [f"{stage}.{k}" for k in overrides.get(stage) or {} if k not in STAGE_FIELDS]
        if unknown:
            raise ValueError(f"unknown degradation override key(s) {unknown}; valid keys: {valid}")
        values = {k: v for k, v in PRESETS[name].items() if k not in ("stage1", "stage2")}
        stages = {s: dict(PRESETS[name].get(s, {})) for s in ("stage1", "stage2")}
        for key, value in overrides.items():
            if key in ("stage1", "stage2"):
                stages[key].update(value or {})
            elif key in FLAT_KEYS:
                stage, field_name = FLAT_KEYS[key]
                stages[stage][field_name] = value
            else:
                values[key] = value
        base = {"stage1": StageConfig(), "stage2": _stage2()}
        built = {s: dataclasses.replace(base[s], **stages[s]) for s in base}
        return cls(**values, **built)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""

        def fail(name: str, why: str) -> None:
            raise ValueError(f"DegradationConfig.{name}={getattr(self, name)!r}: {why}")

        if self.kernel_size % 2 != 1:
            fail("kernel_size", "must be odd")
        if not self.kernel_range or any(k % 2 != 1 or k < 1 or k > self.kernel_size for k in self.kernel_range):
            fail("kernel_range", f"needs odd sizes in [1, kernel_size={self.kernel_size}]")
        self.stage1.validate("DegradationConfig.stage1")
        self.stage2.validate("DegradationConfig.stage2")
        for name in ("final_sinc_prob", "final_resize_first_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "probability must be in [0, 1]")
        if not self.final_resize_modes or any(m not in RESIZE_MODES for m in self.final_resize_modes):
            fail("final_resize_modes", f"needs a non-empty subset of {list(RESIZE_MODES)}")
        if self.usm_kernel_size % 2 != 1 or self.usm_sigma <= 0:
            fail("usm_kernel_size", "needs an odd size and usm_sigma > 0")


PRESETS: dict[str, dict[str, Any]] = {
    "realesrgan": {},
    # SeeSR dataloaders/params_realesrgan.yml (= OMGSR's, OSEDiff's): same kernels, milder resize/noise/JPEG, a
    # second blur with p 0.5, and the plain GT as input (the USM line of their realesrgan.py is commented out).
    "light": {
        "usm_input": False,
        "stage1": {"resize_range": (0.3, 1.5), "noise_range": (1.0, 15.0), "poisson_scale_range": (0.05, 2.0),
                   "jpeg_range": (60.0, 95.0)},
        "stage2": {"blur_prob": 0.5, "resize_range": (0.6, 1.2), "noise_range": (1.0, 12.0),
                   "poisson_scale_range": (0.05, 1.0), "jpeg_range": (60.0, 100.0)},
    },
}
