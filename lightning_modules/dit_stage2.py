"""TUDSR stage 2 (paper section 3.8, Algorithm 2) on StrSR's one-step DiT (FLUX.2 / Z-Image): a second LoRA adapter
trained chunk by chunk at N x R on the output of the frozen stage-1 StrSR adapter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.base import clean_name
from lightning_modules.stage2 import Stage2Module, chunk_grid
from models.errors import ConfigError
from models.pretrained import require_file
from models.resize import bicubic_upsample


class DiTStage2Module(Stage2Module):
    """Algorithm 2 with a :class:`~models.generators.dit_onestep.OneStepDiTGenerator`.

    * Noise levels: the stage-1 pass runs at ``sigma1`` (StrSR: 0.8), the stage-2 adapter at the generator's own
      ``sigma`` (default config 0.6). TUDSR's t1 = 200 -> t2 = 50 on SD2.1's scaled-linear DDPM schedule lowers the
      noise-to-signal ratio sqrt((1 - abar_t) / abar_t) from 0.572 to 0.226 (x0.39); in the rectified-flow
      parametrisation of both DiT backends (x_s = (1 - s) x_0 + s eps, sigma used as is, no shift) the ratio is
      s / (1 - s): 0.8 -> 4.0, x0.39 -> 1.58 -> s = 0.61, rounded to 0.6.
    * Condition: the VLM features are computed once per image from the whole LR (or read from the batch's
      ``cond_features``, the data pipeline's feature cache), mapped once by the *stage-1* adaptive MLP, and shared
      by the stage-1 pass and every stage-2 chunk, as StrSR's tiled inference shares them between tiles.
    * The MLP is shared and frozen: loading the stage-1 export fills the generator's one MLP, and stage 2 trains the
      second LoRA only (so the stage-1 adapter + MLP stay bit-identical and inference needs one MLP).
    * G/D schedule: per chunk one generator update then one discriminator update on that chunk's output, as
      Algorithm 2 (StrSR's stage-1 alternation of G and D batches is not used here): N^2 G and N^2 D updates per
      image, ``global_step`` = generator updates.

    Args:
        sigma1: flow time of the stage-1 pass.
        alternate: must stay False (the key of :class:`~lightning_modules.dit_distill.DiTDistillModule`'s recipe,
            accepted so the StrSR method config composes underneath).
        stage2_adapter: a stage-2 export (LoRA file) to load into the trained adapter: prediction / test of a
            finished stage 2 (``main.py predict``); ``None`` while training.
        tile, tile_overlap: pixel tiles of the evaluation passes (StrSR inference: 1024 / 64).
        **kwargs: see :class:`Stage2Module` (``t1`` is unused; ``stage1_adapter`` is a StrSR export: LoRA file with
            its ``<stem>_mlp.safetensors`` next to it, or an export directory).
    """

    def __init__(self, *args: Any, sigma1: float = 0.8, alternate: bool = False, stage2_adapter: str | None = None,
                 tile: int = 1024, tile_overlap: int = 64, **kwargs: Any) -> None:
        if alternate:
            raise ConfigError("DiT stage 2 updates G and D on every chunk (Algorithm 2): set model.init_args.alternate "
                              "to false")
        kwargs.setdefault("gan_weight", 0.1)
        kwargs.setdefault("disc_weight", 1.0)
        super().__init__(*args, **kwargs)
        self.sigma1 = float(sigma1)
        self.tile, self.tile_overlap = tile, tile_overlap
        if stage2_adapter is not None:  # its MLP file is the shared stage-1 MLP, written again by the export
            self.generator.load_adapter(require_file("DiT stage-2 adapter", stage2_adapter), self.generator.adapter_name)
            self.generator.set_adapter(self.generator.adapter_name)
        if getattr(self.generator, "mlp", None) is not None:
            self.generator.mlp.requires_grad_(False)  # shared stage-1 MLP, frozen

    # ---------------------------------------------------------------- parameters: the stage-2 LoRA only
    def _generator_named(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.generator.trainable_named_parameters() if not n.startswith("mlp."))

    def generator_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self._generator_named()]

    def trainable_names(self) -> set[str]:
        names = {f"generator.{n}" for n, _ in self._generator_named()}
        names |= {f"discriminator.{n}" for n, _ in self.discriminator.trainable_named_parameters()}
        return {clean_name(n) for n in names}

    # ---------------------------------------------------------------- passes
    @contextlib.contextmanager
    def noise_level(self, adapter: str | None, sigma: float) -> Iterator[None]:
        """Run the generator with ``adapter`` at flow time ``sigma``; restore both afterwards."""
        gen = self.generator
        prev_adapter, prev_sigma = gen.active_adapter, gen.sigma
        gen.set_adapter(adapter)
        gen.sigma = float(sigma)
        try:
            yield
        finally:
            gen.sigma = prev_sigma
            gen.set_adapter(prev_adapter)

    @torch.no_grad()
    def condition(self, lq: Tensor, cond_features: Tensor | None) -> Tensor:
        """(B, L, text_dim) condition tokens of the whole LR, through the frozen shared MLP."""
        return self.generator.encode_condition(lq, lq.shape[0], cond_features)

    @torch.no_grad()
    def stage1_output(self, lq: Tensor, size: tuple[int, int], cond: Tensor | None = None) -> Tensor:
        """m = G1(x_L, sigma1) with the frozen stage-1 adapter -> (B, 3, *size), clamped to [0, 1]."""
        cond = self.condition(lq, None) if cond is None else cond
        with self.noise_level(self.stage1_name, self.sigma1):
            return self.generator.restore(bicubic_upsample(lq, size), cond, clamp=True)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        gt, lq = batch["gt"], batch["lq"]  # (B, 3, N*R, N*R), (B, 3, R/M, R/M)
        h, w = gt.shape[-2:]
        if h % self.n or w % self.n:
            raise ConfigError(f"stage 2: GT size {h}x{w} (data.crop_size) is not divisible by N={self.n}")
        if self.m is not None and tuple(lq.shape[-2:]) != (h // self.n // self.m, w // self.n // self.m):
            raise ConfigError(f"stage 2 with M={self.m}, N={self.n}: a {h}x{w} GT needs a {h // self.n // self.m}x"
                              f"{w // self.n // self.m} LQ; set data.degradation.init_args.scale to {self.m * self.n}")
        cond = self.condition(lq, batch.get("cond_features"))  # once per image, shared by all chunks
        m = self.stage1_output(lq, (h // self.n, w // self.n), cond)  # (B, 3, H/N, W/N)
        y_l = F.interpolate(m, scale_factor=self.n, mode="bilinear", align_corners=False).clamp(0, 1)
        gt_chunks = {(r, c): g for r, c, g in chunk_grid(gt, self.chunk)}
        n_chunks = len(gt_chunks)
        counter = self.batch_counter(batch_idx)
        last: dict[str, Any] = {}
        for i, (r, c, y_l_i) in enumerate(chunk_grid(y_l, self.chunk)):
            if self.per_chunk_step:
                step_now = (counter * n_chunks + i + 1) % self.accumulate == 0
            else:
                step_now = i == n_chunks - 1 and (counter + 1) % self.accumulate == 0
            y_h_i = gt_chunks[(r, c)]
            sr_i = self.generator.restore(y_l_i.contiguous(), cond)  # adapter 2 at sigma, (B, 3, R, R)
            terms = self.generator_update(sr_i, y_h_i, step_now)
            terms |= self.discriminator_update(sr_i, y_h_i, step_now)
            self.log_terms(terms, batch_size=gt.shape[0])
            last = {"lq": y_l_i.detach(), "sr": sr_i.detach(), "gt": y_h_i}
            del sr_i, terms
        return last

    @torch.no_grad()
    def two_pass(self, lq: Tensor, m: int, n: int, cond_features: Tensor | None = None) -> Tensor:
        """Inference x(m*n): bicubic xm -> G(adapter 1, sigma1) -> bilinear xn -> G(adapter 2, sigma), both passes
        tiled in pixels with the condition of the whole LR. (B, 3, h, w) -> (B, 3, h*m*n, w*m*n) in [0, 1]."""
        gen = self.generator
        h, w = lq.shape[-2:]
        was_training = gen.training
        gen.eval()
        try:
            cond = self.condition(lq, cond_features)
            with self.noise_level(self.stage1_name, self.sigma1):
                y = self.tiled_pass(bicubic_upsample(lq, (h * m, w * m)), cond)
            x2 = F.interpolate(y, size=(h * m * n, w * m * n), mode="bilinear", align_corners=False).clamp(0, 1)
            with self.noise_level(gen.adapter_name, gen.sigma):
                return self.tiled_pass(x2, cond)
        finally:
            gen.train(was_training)

    def tiled_pass(self, x: Tensor, cond: Tensor) -> Tensor:
        """One pass of the active adapter over ``x`` (B, 3, H, W) in linear-feathered pixel tiles -> [0, 1]."""
        from models.inference.tiling import tiled_apply
        from models.generators.dit_onestep import _pad_to_multiple

        gen = self.generator
        h, w = x.shape[-2:]
        xp = _pad_to_multiple(x, gen.pad_multiple)
        if max(xp.shape[-2:]) <= self.tile:
            return gen.restore(xp, cond, clamp=True)[..., :h, :w]
        out = tiled_apply(xp, lambda t: gen.restore(t, cond, clamp=False), tile=self.tile, overlap=self.tile_overlap,
                          scale=1, weight="linear")
        return out[..., :h, :w].clamp(0, 1)

    def infer(self, lq: Tensor, scale: int) -> Tensor:
        if scale % self.n:
            raise ValueError(f"the batch asks for x{scale}, but stage 2 produces x(M*N) with N = {self.n}")
        return self.two_pass(lq, scale // self.n, self.n)
