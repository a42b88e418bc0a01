"""Batched Real-ESRGAN second-order degradation as a seedable batch transform (Wang et al., ICCVW 2021; the batched
part of XPixelGroup/BasicSR ``basicsr/models/realesrgan_model.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.resize import bicubic_upsample

from .config import DegradationConfig, StageConfig
from .jpeg import jpeg_compress
from .noise import add_gaussian_noise, add_poisson_noise
from .ops import USMSharp, filter2d, resize
from .pool import PairPool

__all__ = ["RealESRGANDegradation", "quantize_8bit"]

KERNEL_KEYS = ("kernel1", "kernel2", "sinc_kernel")


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image (BasicSR ``RealESRGANModel``'s final step)."""
    return (x * 255.0).round().clamp(0, 255) / 255.0


class RealESRGANDegradation(nn.Module):
    """Real-ESRGAN second-order degradation (Wang et al., ICCVW 2021, eq. 1-5 / Fig. 2; BasicSR ``RealESRGANModel``).

    ``forward(batch)`` takes ``batch["gt"]`` (B, 3, H, W) in [0, 1] and the per-sample ``kernel1``, ``kernel2``,
    ``sinc_kernel`` (B, 21, 21) drawn in the dataset by ``KernelSampler``, and returns a new dict with

    - ``"lq"`` (B, 3, H/scale, W/scale): blur k1 -> random resize -> Gaussian/Poisson noise -> JPEG ->
      [blur k2 with p] -> random resize (relative to H/scale) -> noise -> either [resize to H/scale, sinc, JPEG] or
      [JPEG, resize, sinc] (p 0.5) -> rounded to 8-bit levels;
    - ``"gt"``: float32 GT, replaced by its USM-sharpened version when ``sharpen_gt`` (StrSR / HYPIR);
    - ``"lq_up"`` (B, 3, H, W) when ``resize_back``: the bicubic resize back to the GT size, clamped. With
      ``round_lq_up`` (default) it is the resize of the LQ *before* its 8-bit rounding, itself rounded to 8-bit
      levels, as the authors' codes feed their generators (jkwang28/StrSR ``HYPIR/dataset/batch_transform.py``,
      wuer5/OMGSR ``dataset/realesrgan.py``, cswry/SeeSR ``utils_data/make_paired_data.py`` through its saved
      PNGs); without it, the float resize of the rounded ``lq``;
    - a paired random crop (``gt_crop`` on GT, ``gt_crop // scale`` on LQ, per sample) and the training-pair pool.

    Degradation input: USM(GT) when ``config.usm_input`` (Real-ESRGAN degrades ``gt_usm``; HYPIR degrades the
    sharpened HQ) or when ``sharpen_gt``; otherwise the plain GT (SeeSR / OSEDiff, preset ``light``).
    Randomness: per-batch choices (resize up/down/keep, its scale and mode, Gaussian vs Poisson, second blur, final
    order) and per-sample values (noise sigma / Poisson scale, grey flag, JPEG quality, crop offsets) come from a CPU
    ``torch.Generator``; noise maps come from a generator on the batch device seeded from it, so a seed fixes the output
    on a given device. ``last_params`` holds the values drawn for the last batch.

    Args:
        preset: named parameter set: ``realesrgan`` (Real-ESRGAN's) or ``light`` (SeeSR / OSEDiff's).
        overrides: preset values to change, keyed as in BasicSR's option files (e.g. ``noise_range2``), or
            ``stage1`` / ``stage2`` dicts.
        scale: the SR factor: the LQ is 1/scale of the GT per side.
        resize_back: also return ``lq_up``, the LQ bicubic-resized back to the GT size.
        sharpen_gt: replace the GT by its USM-sharpened version and degrade that (StrSR).
        gt_crop: paired random crop of this GT size after degrading; ``null``: no crop.
        pool_size: size of the training-pair pool that shuffles pairs across batches (0: off).
        seed: seed of the random choices and noise.
        round_lq_up: build ``lq_up`` from the LQ before its 8-bit rounding and round it (as the authors' codes).
    """

    def __init__(
        self,
        preset: str = "realesrgan",
        overrides: dict[str, Any] | None = None,
        scale: int = 4,
        resize_back: bool = False,
        sharpen_gt: bool = False,
        gt_crop: int | None = None,
        pool_size: int = 0,
        seed: int = 0,
        round_lq_up: bool = True,
    ) -> None:
        super().__init__()
        self.config = DegradationConfig.preset(preset, **(overrides or {}))
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if gt_crop is not None and (gt_crop <= 0 or gt_crop % scale != 0):
            raise ValueError(f"gt_crop={gt_crop} must be a positive multiple of scale={scale}")
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.scale = int(scale)
        self.resize_back = resize_back
        self.round_lq_up = round_lq_up
        self.sharpen_gt = sharpen_gt
        self.gt_crop = gt_crop
        c = self.config
        self.usm = USMSharp(c.usm_kernel_size, c.usm_sigma, c.usm_weight, c.usm_threshold)
        self.pool = PairPool(pool_size) if pool_size > 0 else None
        self._device_generators: dict[torch.device, torch.Generator] = {}
        self.last_params: dict[str, Any] = {}
        self.set_seed(seed)

    # ------------------------------------------------------------------ randomness
    def set_seed(self, seed: int) -> None:
        """Reseed (the DataModule calls ``set_seed(base_seed + global_rank)``)."""
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _u(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _uniform(self, low: float, high: float, n: int) -> torch.Tensor:  # (n,) on CPU
        return low + (high - low) * torch.rand(n, generator=self.generator, dtype=torch.float64)

    def _choice(self, options: tuple[str, ...]) -> str:
        return options[int(torch.randint(len(options), (), generator=self.generator))]

    def _resize_scale(self, prob: tuple[float, float, float], scale_range: tuple[float, float]) -> tuple[str, float]:
        """Per-batch up/down/keep choice and its scale (BasicSR)."""
        u = self._u()
        if u < prob[0]:
            return "up", float(self._uniform(1.0, scale_range[1], 1))
        if u < prob[0] + prob[1]:
            return "down", float(self._uniform(scale_range[0], 1.0, 1))
        return "keep", 1.0

    def _device_generator(self, device: torch.device) -> torch.Generator:
        if device not in self._device_generators:
            self._device_generators[device] = torch.Generator(device=device)
        gen = self._device_generators[device]
        gen.manual_seed(int(torch.randint(2**62, (), generator=self.generator)))
        return gen

    # ------------------------------------------------------------------ stages
    def _blur(self, x: torch.Tensor, kernel: torch.Tensor, s: StageConfig, stage: int,
              params: dict[str, Any]) -> torch.Tensor:
        """Blur with the per-sample ``kernel``: always when ``s.blur_prob`` is None, else with that probability."""
        if s.blur_prob is not None:
            params[f"blur{stage}"] = self._u() < s.blur_prob
            if not params[f"blur{stage}"]:
                return x
        return filter2d(x, kernel)

    def _noise(self, x: torch.Tensor, s: StageConfig, stage: int, gen: torch.Generator,
               params: dict[str, Any]) -> torch.Tensor:
        b = x.shape[0]
        gray = torch.rand(b, generator=self.generator) < s.gray_noise_prob
        if self._u() < s.gaussian_noise_prob:
            sigma = self._uniform(*s.noise_range, b)
            params.update({f"noise{stage}": "gaussian", f"sigma{stage}": sigma, f"gray{stage}": gray})
            return add_gaussian_noise(x, sigma, gray, gen)
        pscale = self._uniform(*s.poisson_scale_range, b)
        params.update({f"noise{stage}": "poisson", f"poisson_scale{stage}": pscale, f"gray{stage}": gray})
        return add_poisson_noise(x, pscale, gray, gen)

    def _jpeg(self, x: torch.Tensor, jpeg_range: tuple[float, float], key: str, params: dict[str, Any]) -> torch.Tensor:
        quality = self._uniform(*jpeg_range, x.shape[0])
        params[key] = quality
        return jpeg_compress(x.clamp(0, 1), quality.float())

    def degrade(self, src: torch.Tensor, kernels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The two degradation stages and the final step: src (B, 3, H, W) -> LQ (B, 3, H/s, W/s), not rounded."""
        c, p = self.config, {}
        s1, s2 = c.stage1, c.stage2
        h, w = src.shape[-2:]
        gen = self._device_generator(src.device)
        # first degradation: blur, resize (relative to the input), noise, JPEG
        out = self._blur(src, kernels["kernel1"], s1, 1, p)
        p["resize1"], p["scale1"] = self._resize_scale(s1.resize_prob, s1.resize_range)
        p["mode1"] = self._choice(s1.resize_modes)
        out = resize(out, p["mode1"], scale=p["scale1"])
        out = self._noise(out, s1, 1, gen, p)
        out = self._jpeg(out, s1.jpeg_range, "quality1", p)
        # second degradation: blur, resize (relative to size / scale), noise; its JPEG is in the final step
        out = self._blur(out, kernels["kernel2"], s2, 2, p)
        p["resize2"], p["scale2"] = self._resize_scale(s2.resize_prob, s2.resize_range)
        p["mode2"] = self._choice(s2.resize_modes)
        size2 = (int(h / self.scale * p["scale2"]), int(w / self.scale * p["scale2"]))
        out = resize(out, p["mode2"], size=size2)
        out = self._noise(out, s2, 2, gen, p)
        # final step: [resize, sinc, JPEG] or [JPEG, resize, sinc]
        lq_size = (h // self.scale, w // self.scale)
        p["resize_first"] = self._u() < c.final_resize_first_prob
        if p["resize_first"]:
            p["mode3"] = self._choice(c.final_resize_modes)
            out = filter2d(resize(out, p["mode3"], size=lq_size), kernels["sinc_kernel"])
            out = self._jpeg(out, s2.jpeg_range, "quality2", p)
        else:
            out = self._jpeg(out, s2.jpeg_range, "quality2", p)
            p["mode3"] = self._choice(c.final_resize_modes)
            out = filter2d(resize(out, p["mode3"], size=lq_size), kernels["sinc_kernel"])
        return out, p

    def _crop(self, out: dict[str, Any], b: int) -> None:
        """Paired random crop, an independent offset per sample."""
        lc, s = self.gt_crop // self.scale, self.scale
        h_lq, w_lq = out["lq"].shape[-2:]
        if lc > h_lq or lc > w_lq:
            raise ValueError(f"gt_crop={self.gt_crop} is larger than the GT ({h_lq * s}x{w_lq * s})")
        tops = torch.randint(0, h_lq - lc + 1, (b,), generator=self.generator).tolist()
        lefts = torch.randint(0, w_lq - lc + 1, (b,), generator=self.generator).tolist()
        self.last_params["crop"] = list(zip(tops, lefts))
        for key, f in (("lq", 1), ("gt", s), ("lq_up", s)):
            if key in out:
                size = lc * f
                x = out[key]
                out[key] = torch.stack(
                    [x[i, :, t * f : t * f + size, l * f : l * f + size] for i, (t, l) in enumerate(zip(tops, lefts))]
                )

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        gt = batch["gt"].float()  # (B, 3, H, W)
        if gt.dim() != 4 or gt.shape[1] != 3:
            raise ValueError(f"batch['gt'] must be (B, 3, H, W), got {tuple(gt.shape)}")
        b, _, h, w = gt.shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"GT size {h}x{w} is not divisible by scale={self.scale}")
        missing = [k for k in KERNEL_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing}: draw them per sample in the dataset with KernelSampler")
        kernels = {k: batch[k].to(device=gt.device, dtype=torch.float32) for k in KERNEL_KEYS}

        with torch.autocast(device_type=gt.device.type, enabled=False):  # fp32 even inside an autocast region
            gt_usm = self.usm(gt) if (self.config.usm_input or self.sharpen_gt) else None
            lq, params = self.degrade(gt_usm if gt_usm is not None else gt, kernels)
        self.last_params = params

        out = dict(batch)
        out["gt"] = gt_usm if self.sharpen_gt else gt
        out["lq"] = quantize_8bit(lq)  # (B, 3, H/s, W/s) on 8-bit levels
        if self.resize_back and self.round_lq_up:
            out["lq_up"] = quantize_8bit(bicubic_upsample(lq, (h, w)))  # (B, 3, H, W) on 8-bit levels
        elif self.resize_back:
            out["lq_up"] = bicubic_upsample(out["lq"], (h, w))  # (B, 3, H, W)
        if self.gt_crop is not None:
            self._crop(out, b)
        if self.pool is not None:
            out = self.pool(out, self.generator, b)
        return out

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, resize_back={self.resize_back}, round_lq_up={self.round_lq_up}, "
            f"sharpen_gt={self.sharpen_gt}, "
            f"gt_crop={self.gt_crop}, pool_size={0 if self.pool is None else self.pool.size}, seed={self.seed}"
        )
