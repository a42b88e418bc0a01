"""The degradation presets, value for value against the parameter files they come from.

Each reference below is re-typed from the authors' file (BasicSR-style flat keys: ``<key>`` for the first
degradation, ``<key>2`` for the second) and compared with every field of :class:`DegradationConfig`:

- ``light``: cswry/SeeSR ``dataloaders/params_realesrgan.yml`` at b0b4ce174c682cb769e241fb1cb8c78d690e12a4, which
  wuer5/OMGSR ``dataset/params_realesrgan.yml`` at faeba0543b3c022a44300464aa7aa673dc3cfb2a repeats (without the
  ``blur_kernel_size`` keys). Both degrade the plain GT: the USM line of their ``realesrgan.py`` is commented out.
- ``realesrgan``: XPixelGroup/BasicSR ``options/train/RealESRGAN/train_realesrgan_x4plus.yml`` at
  95b155636e5d04008db93e6122490f3eb0adfb4d (the same values as jkwang28/StrSR ``configs/*_train_stage1.yaml``),
  which degrades the USM-sharpened GT (``RealESRGANModel`` feeds ``gt_usm`` to the first blur).

Constants of the pipeline code rather than the files (kernel sizes 7..21, the final step's 50/50 order, the
resize modes) are the same in all three code bases.
"""

from __future__ import annotations

import dataclasses

import pytest

from datamodules.degradation import DegradationConfig

KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]

# cswry/SeeSR dataloaders/params_realesrgan.yml (b0b4ce17), re-typed
SEESR = {
    "scale": 4, "color_jitter_prob": 0.0, "gray_prob": 0.0,
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.3, 1.5], "gaussian_noise_prob": 0.5, "noise_range": [1, 15],
    "poisson_scale_range": [0.05, 2.0], "gray_noise_prob": 0.4, "jpeg_range": [60, 95],
    "second_blur_prob": 0.5, "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.6, 1.2],
    "gaussian_noise_prob2": 0.5, "noise_range2": [1, 12], "poisson_scale_range2": [0.05, 1.0],
    "gray_noise_prob2": 0.4, "jpeg_range2": [60, 100],
    "kernel_info": {
        "blur_kernel_size": 21, "kernel_list": KERNELS, "kernel_prob": KERNEL_PROB, "sinc_prob": 0.1,
        "blur_sigma": [0.2, 3], "betag_range": [0.5, 4], "betap_range": [1, 2],
        "blur_kernel_size2": 21, "kernel_list2": KERNELS, "kernel_prob2": KERNEL_PROB, "sinc_prob2": 0.1,
        "blur_sigma2": [0.2, 1.5], "betag_range2": [0.5, 4], "betap_range2": [1, 2],
        "final_sinc_prob": 0.8,
    },
}
# wuer5/OMGSR dataset/params_realesrgan.yml (faeba054): SeeSR's file without the two blur_kernel_size keys
OMGSR = {**SEESR, "kernel_info": {k: v for k, v in SEESR["kernel_info"].items() if not k.startswith("blur_kernel")}}

# XPixelGroup/BasicSR options/train/RealESRGAN/train_realesrgan_x4plus.yml (95b15563), re-typed
BASICSR = {
    "scale": 4,
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5, "noise_range": [1, 30],
    "poisson_scale_range": [0.05, 3], "gray_noise_prob": 0.4, "jpeg_range": [30, 95],
    "second_blur_prob": 0.8, "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2],
    "gaussian_noise_prob2": 0.5, "noise_range2": [1, 25], "poisson_scale_range2": [0.05, 2.5],
    "gray_noise_prob2": 0.4, "jpeg_range2": [30, 95],
    "kernel_info": {
        "blur_kernel_size": 21, "kernel_list": KERNELS, "kernel_prob": KERNEL_PROB, "sinc_prob": 0.1,
        "blur_sigma": [0.2, 3], "betag_range": [0.5, 4], "betap_range": [1, 2],
        "blur_kernel_size2": 21, "kernel_list2": KERNELS, "kernel_prob2": KERNEL_PROB, "sinc_prob2": 0.1,
        "blur_sigma2": [0.2, 1.5], "betag_range2": [0.5, 4], "betap_range2": [1, 2],
        "final_sinc_prob": 0.8,
    },
}

STAGE_KEYS = ("resize_prob", "resize_range", "gaussian_noise_prob", "noise_range", "poisson_scale_range",
              "gray_noise_prob", "jpeg_range")
KERNEL_KEYS = ("kernel_list", "kernel_prob", "sinc_prob", "blur_sigma", "betag_range", "betap_range")


def as_file(cfg: DegradationConfig) -> dict:
    """Our config written with the parameter file's keys (the comparison covers every field of ours)."""
    out, info = {}, {}
    for stage, suffix in ((cfg.stage1, ""), (cfg.stage2, "2")):
        for key in STAGE_KEYS:
            out[key + suffix] = list(getattr(stage, key)) if isinstance(getattr(stage, key), tuple) else \
                getattr(stage, key)
        for key in KERNEL_KEYS:
            info[key + suffix] = list(getattr(stage, key)) if isinstance(getattr(stage, key), tuple) else \
                getattr(stage, key)
        info["blur_kernel_size" + suffix] = cfg.kernel_size
    assert cfg.stage1.blur_prob is None  # the first blur always runs (no key in the files)
    out["second_blur_prob"] = cfg.stage2.blur_prob
    info["final_sinc_prob"] = cfg.final_sinc_prob
    out["kernel_info"] = info
    covered = {"kernel_size", "kernel_range", "usm_input", "usm_kernel_size", "usm_sigma", "usm_weight",
               "usm_threshold", "stage1", "stage2", "final_sinc_prob", "final_resize_first_prob", "final_resize_modes"}
    assert {f.name for f in dataclasses.fields(cfg)} == covered  # a new field must be added to this comparison
    assert {f.name for f in dataclasses.fields(cfg.stage1)} == {"blur_prob", "resize_modes", *STAGE_KEYS, *KERNEL_KEYS}
    return out


def reference_without_extras(reference: dict) -> dict:
    """The file's keys that our config models (scale is an init argument; colour jitter and grey conversion are
    0 in every file and not modelled)."""
    ref = {k: v for k, v in reference.items() if k not in ("scale", "color_jitter_prob", "gray_prob")}
    info = dict(ref["kernel_info"])
    info.setdefault("blur_kernel_size", 21)  # OMGSR's file leaves it to the code's hard-coded 21
    info.setdefault("blur_kernel_size2", 21)
    ref["kernel_info"] = info
    return ref


@pytest.mark.parametrize(("preset", "reference", "usm"), [("light", SEESR, False), ("light", OMGSR, False),
                                                          ("realesrgan", BASICSR, True)],
                         ids=["light=SeeSR", "light=OMGSR", "realesrgan=BasicSR"])
def test_preset_equals_its_parameter_file(preset: str, reference: dict, usm: bool) -> None:
    cfg = DegradationConfig.preset(preset)
    assert as_file(cfg) == reference_without_extras(reference)
    assert reference.get("color_jitter_prob", 0.0) == 0.0 and reference.get("gray_prob", 0.0) == 0.0
    assert cfg.usm_input is usm
    # code constants shared by BasicSR, SeeSR, OMGSR and HYPIR: kernel sizes 2v + 1 for v in 3..10, the final order
    assert cfg.kernel_range == tuple(2 * v + 1 for v in range(3, 11))
    assert cfg.final_resize_first_prob == 0.5 and cfg.final_resize_modes == ("area", "bilinear", "bicubic")
    assert cfg.stage1.resize_modes == cfg.stage2.resize_modes == ("area", "bilinear", "bicubic")
    # USM (BasicSR USMSharp defaults: radius 50 -> 51 px Gaussian, sigma 0 -> 8 by OpenCV's rule, 0.5, 10)
    assert (cfg.usm_kernel_size, cfg.usm_sigma, cfg.usm_weight, cfg.usm_threshold) == (51, 8.0, 0.5, 10.0)
