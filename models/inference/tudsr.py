"""TUDSR twice-upsampling inference (paper section 3.8, Fig. 2(b)), plain torch, on any one-step generator.

    x (h, w) -> up xM (bicubic) -> G(adapter 1, t1) -> up xN (bilinear) -> G(adapter 2, t2) -> (h*M*N, w*M*N)

x4 = M2N2, x8 = M4N2. Both LoRA adapters live in the one loaded backbone of the generator
(:class:`~models.protocols.OneStepGenerator`) and are switched with ``set_adapter`` (no second backbone); each
pass gives its noise level explicitly. Each G pass works on any size:

* ``OneStepSDGenerator`` (TUDSR, t1 = 200, t2 = 50 timesteps): reflect-pad to a multiple of (VAE factor * UNet
  factor) -> tiled VAE encode -> one-step denoise (paper eq. 2) on overlapping latent tiles with Gaussian blending
  -> tiled VAE decode -> crop -> optional colour fix;
* ``OneStepDiTGenerator`` (StrSR's FLUX.2 / Z-Image DiT, flow times sigma1 = 0.8, sigma2 = 0.6): the VLM condition
  is computed once from the whole LR (or given as cached features) and shared by both passes and every tile, as
  StrSR's tiled inference (jkwang28/StrSR ``test_flux.py``) shares it; each pass runs on pixel tiles (1024 / 64)
  blended with a linear feather and clamped after blending.

Gaussian tile weights as in Mixture of Diffusers (albarji/mixture-of-diffusers); the AdaIN / wavelet colour fix as
in StableSR (IceClear/StableSR ``scripts/wavelet_color_fix.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..pretrained import resolve_dtype
from .colorfix import ColorFix
from .tiling import pad_to_multiple, tiled_apply
from .vae_tiling import tiled_decode, tiled_encode, vae_downscale_factor

__all__ = ["TUDSRPipeline", "unet_downscale_factor"]


def unet_downscale_factor(unet: nn.Module) -> int:
    """Latent / coarsest-feature size ratio of a diffusers ``UNet2DConditionModel`` (8 for SD2.1)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """(B, C, h, w) -> (B, C, *size) in [0, 1]; bicubic overshoot is clamped."""
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align).clamp(0, 1)


class TUDSRPipeline(nn.Module):
    """Twice upsampling-diffusion inference of TUDSR (Fig. 2(b)): stage 1 at xM, stage 2 at xN, output x(M*N).

    Args:
        generator: ``OneStepSDGenerator`` or ``OneStepDiTGenerator`` with both adapters loaded
            (``load_adapter(path, name)``).
        adapter1, adapter2: adapter names for the two passes; ``adapter2=None`` runs stage 1 only (output xM);
            ``adapter1=None`` keeps whatever adapter is active.
        m, n: upsampling factors of the two stages (integers >= 1).
        t1, t2: noise levels of the two passes in the generator's convention: SD timesteps (paper: 200 and 50,
            integers) or DiT flow times sigma (0.8 and 0.6, docs/RECIPES.md "DiT stage 2").
        latent_tile, latent_overlap: SD: latent tile size / overlap of the UNet pass (``latent_tile=None``:
            untiled); the tile must be a multiple of the UNet's downscale factor.
        vae_tile, vae_overlap: SD: pixel tile size / overlap of the VAE (``vae_tile=None``: untiled VAE).
        pixel_tile, pixel_overlap, pixel_blend: DiT: pixel tiles of each pass (a multiple of the generator's
            ``pad_multiple``; StrSR: 1024 / 64) and their blend weight (``linear``, or ``feather``: the released
            StrSR mask).
        color_fix: ``"none" | "adain" | "wavelet"``, applied after each pass against that pass's upsampled input
            (after stage 1 only when ``color_fix_stage1``).
        upsample1, upsample2: ``F.interpolate`` modes of the two upsamplings (paper: bicubic, bilinear).
        dtype: autocast dtype for the networks (``"bf16"`` / ``torch.bfloat16`` on GPUs); ``None`` runs in the
            weights' dtype. Tile blending and the colour fix always run in float32.

    ``forward`` expects to be called under ``torch.inference_mode()`` (or ``no_grad``) by the caller. It and
    :meth:`run_stage` run the generator in eval (posterior mode, no LoRA dropout) and afterwards restore the
    generator's train/eval mode and its previously active adapter, so a training module can share the generator.
    """

    def __init__(
        self,
        generator: nn.Module,
        adapter1: str | None = "stage1",
        adapter2: str | None = "stage2",
        m: int = 2,
        n: int = 2,
        t1: float = 200,
        t2: float = 50,
        latent_tile: int | None = 64,
        latent_overlap: int = 32,
        vae_tile: int | None = 512,
        vae_overlap: int = 64,
        color_fix: str = "wavelet",
        color_fix_stage1: bool = True,
        upsample1: str = "bicubic",
        upsample2: str = "bilinear",
        dtype: str | torch.dtype | None = None,
        pixel_tile: int = 1024,
        pixel_overlap: int = 64,
        pixel_blend: str = "linear",
    ) -> None:
        super().__init__()
        if m < 1 or n < 1:
            raise ValueError(f"m and n must be >= 1, got m={m}, n={n}")
        self.generator = generator
        self.adapter1, self.adapter2 = adapter1, adapter2
        self.m, self.n = int(m), int(n)
        self.latent_passes = hasattr(generator, "unet")  # SD: latent tiling; DiT: pixel tiling, shared condition
        if self.latent_passes:
            self.t1, self.t2 = int(t1), int(t2)
            self.vae_factor = vae_downscale_factor(generator.vae)
            self.unet_factor = unet_downscale_factor(generator.unet)
            if latent_tile is not None and latent_tile % self.unet_factor:
                raise ValueError(f"latent_tile {latent_tile} must be a multiple of the UNet factor {self.unet_factor}")
        else:
            self.t1, self.t2 = float(t1), float(t2)
            if not (0 < self.t1 <= 1 and 0 < self.t2 <= 1):
                raise ValueError(f"a DiT pass runs at a flow time sigma in (0, 1], got t1={t1}, t2={t2}")
            if pixel_tile % generator.pad_multiple:
                raise ValueError(f"pixel_tile={pixel_tile} must be a multiple of the generator's pad_multiple="
                                 f"{generator.pad_multiple}")
        self.pixel_tile, self.pixel_overlap, self.pixel_blend = pixel_tile, pixel_overlap, pixel_blend
        self.latent_tile, self.latent_overlap = latent_tile, latent_overlap
        self.vae_tile, self.vae_overlap = vae_tile, vae_overlap
        self.color_fix = ColorFix(color_fix)
        self.color_fix_stage1 = color_fix_stage1
        self.upsample1, self.upsample2 = upsample1, upsample2
        self.dtype = resolve_dtype(dtype) if dtype is not None else None

    @property
    def scale(self) -> int:
        """Total upsampling factor: ``m * n`` (``m`` when ``adapter2`` is None)."""
        return self.m * (self.n if self.adapter2 is not None else 1)

    @property
    def pad_multiple(self) -> int:
        """Image sizes are padded to multiples of this (VAE factor * UNet factor, 64 for SD2.1; the DiT's
        ``pad_multiple``, 16)."""
        if not self.latent_passes:
            return self.generator.pad_multiple
        return self.vae_factor * self.unet_factor

    @contextlib.contextmanager
    def _generator_state(self) -> Iterator[None]:
        """Run the generator in eval (posterior mode, no LoRA dropout); restore its mode and active adapter."""
        gen = self.generator
        was_training, prev_adapter = gen.training, gen.active_adapter
        gen.eval()
        try:
            yield
        finally:
            gen.train(was_training)
            if gen.active_adapter != prev_adapter:
                gen.set_adapter(prev_adapter)

    def _autocast(self, device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        if dtype is None or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def denoise_latent(self, z: Tensor, timestep: int) -> Tensor:
        """One-step denoise of a scaled latent (B, 4, h, w) -> (B, 4, h, w), in overlapping Gaussian-weighted
        tiles of ``latent_tile`` (h, w multiples of the UNet factor) with the active adapter."""
        gen = self.generator

        def fn(zt: Tensor) -> Tensor:  # (B, 4, th, tw) -> (B, 4, th, tw)
            return gen.denoise(zt, timestep=timestep)

        if self.latent_tile is None:
            return fn(z)
        return tiled_apply(z, fn, tile=self.latent_tile, overlap=self.latent_overlap, weight="gaussian")

    def condition(self, lq: Tensor, cond_features: Tensor | None = None) -> Tensor | None:
        """DiT: the condition tokens (B, L, text_dim) of the whole LR ``lq`` (B, 3, h, w), computed once (or mapped
        from cached ``cond_features`` (B, L, D)) and shared by both passes and all tiles; SD: ``None``."""
        if self.latent_passes:
            return None
        return self.generator.encode_condition(lq, lq.shape[0], cond_features)

    def run_stage(
        self, x: Tensor, adapter: str | None, timestep: float, color_fix: bool = True,
        dtype: torch.dtype | None = None, cond: Tensor | None = None,
    ) -> Tensor:
        """One generator pass at the size of ``x`` (B, 3, H, W) [0, 1] -> (B, 3, H, W) [0, 1], any H, W, at noise
        level ``timestep`` (SD timestep or DiT sigma). ``cond``: the DiT's condition tokens (:meth:`condition`).

        Only the network calls run under autocast (``dtype``); padding, blending and the colour fix stay float32.
        """
        gen = self.generator
        H, W = x.shape[-2:]
        if not self.latent_passes:
            if cond is None:
                raise ValueError("a DiT pass needs the condition tokens of the whole LR: cond=pipeline.condition(lq)")
            with self._generator_state(), self._autocast(x.device, dtype):
                if adapter is not None:
                    gen.set_adapter(adapter)
                y = gen.tiled_restore(x.float(), cond, self.pixel_tile, self.pixel_overlap, sigma=timestep,
                                      weight=self.pixel_blend)  # (B, 3, H, W), clamped
            y = y.float()
            return self.color_fix(y, x.float()) if color_fix else y
        xp = pad_to_multiple(x, self.pad_multiple, mode="reflect")  # (B, 3, Hp, Wp)
        with self._generator_state(), self._autocast(x.device, dtype):
            if adapter is not None:
                gen.set_adapter(adapter)
            z = tiled_encode(gen.encode, xp, self.vae_factor, self.vae_tile, self.vae_overlap)  # (B, 4, Hp/f, Wp/f)
            z_h = self.denoise_latent(z, timestep)
            y = tiled_decode(gen.decode, z_h, self.vae_factor, self.vae_tile, self.vae_overlap)  # (B, 3, Hp, Wp)
        y = y[..., :H, :W].float().clamp(0, 1)
        return self.color_fix(y, x.float()) if color_fix else y

    def forward(self, lq: Tensor, dtype: torch.dtype | None = None, cond_features: Tensor | None = None) -> Tensor:
        """(B, 3, h, w) [0, 1] -> (B, 3, h*scale, w*scale) [0, 1] float32.

        ``dtype`` overrides the autocast dtype given at construction; ``cond_features`` (B, L, D): the DiT's cached
        VLM features of ``lq`` (the VLM then never runs).
        """
        dtype = dtype if dtype is not None else self.dtype
        h, w = lq.shape[-2:]
        two_stage = self.adapter2 is not None
        with self._generator_state():
            cond = self.condition(lq, cond_features)  # DiT: (B, L, text_dim), once per image; SD: None
            x1 = _resize(lq.float(), (h * self.m, w * self.m), self.upsample1)  # (B, 3, hM, wM)
            fix1 = self.color_fix_stage1 or not two_stage
            y = self.run_stage(x1, self.adapter1, self.t1, color_fix=fix1, dtype=dtype, cond=cond)  # (B, 3, hM, wM)
            if two_stage:
                x2 = _resize(y, (h * self.m * self.n, w * self.m * self.n), self.upsample2)  # (B, 3, hMN, wMN)
                y = self.run_stage(x2, self.adapter2, self.t2, dtype=dtype, cond=cond)
        return y
