"""TUDSR stage 2 (paper section 3.8, Algorithm 2) on StrSR's one-step DiT (FLUX.2 / Z-Image): a second LoRA adapter
trained chunk by chunk at N x R on the output of the frozen stage-1 StrSR adapter. Only what differs from the UNet's
:class:`~lightning_modules.stage2.Stage2Module`: the noise levels (sigma), the shared VLM condition, the frozen
shared MLP. Prediction is generator-only: :class:`~lightning_modules.tudsr_inference.TUDSRInference`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.base import clean_name
from lightning_modules.stage2 import Stage2Module
from models.errors import ConfigError
from models.inference.tudsr import TUDSRPipeline
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
        tile, tile_overlap: pixel tiles of the evaluation passes (StrSR inference: 1024 / 64).
        **kwargs: see :class:`Stage2Module` (``t1`` is unused; ``stage1_adapter`` is a StrSR export: LoRA file with
            its ``<stem>_mlp.safetensors`` next to it, or an export directory).
    """

    def __init__(self, *args: Any, sigma1: float = 0.8, alternate: bool = False, tile: int = 1024,
                 tile_overlap: int = 64, **kwargs: Any) -> None:
        if alternate:
            raise ConfigError("DiT stage 2 updates G and D on every chunk (Algorithm 2): set model.init_args.alternate "
                              "to false")
        kwargs.setdefault("gan_weight", 0.1)
        kwargs.setdefault("disc_weight", 1.0)
        super().__init__(*args, **kwargs)
        self.sigma1 = float(sigma1)
        self.tile, self.tile_overlap = tile, tile_overlap
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

    # ---------------------------------------------------------------- the DiT's hooks of Stage2Module
    @torch.no_grad()
    def condition(self, lq: Tensor, cond_features: Tensor | None = None) -> Tensor:
        """(B, L, text_dim) condition tokens of the whole LR (or of the batch's cached ``cond_features``), through
        the frozen shared MLP; shared by the stage-1 pass and every stage-2 chunk."""
        return self.generator.encode_condition(lq, lq.shape[0], cond_features)

    @torch.no_grad()
    def stage1_output(self, lq: Tensor, size: tuple[int, int], cond: Tensor | None = None) -> Tensor:
        """m = G1(x_L, sigma1) with the frozen stage-1 adapter -> (B, 3, *size), clamped to [0, 1]."""
        cond = self.condition(lq) if cond is None else cond
        gen = self.generator
        previous = gen.active_adapter
        gen.set_adapter(self.stage1_name)
        try:
            return gen.restore(bicubic_upsample(lq, size), cond, clamp=True, sigma=self.sigma1)
        finally:
            gen.set_adapter(previous)

    def stage2_output(self, y_l_i: Tensor, cond: Tensor) -> Tensor:
        """The trained stage-2 adapter at the generator's ``sigma`` on one chunk (B, 3, R, R), with the image's
        condition -> (B, 3, R, R)."""
        return self.generator.restore(y_l_i, cond)

    def eval_pipeline(self, m: int) -> TUDSRPipeline:
        """Fig. 2(b) on the DiT: sigma1 then the generator's sigma, pixel tiles of ``tile`` / ``tile_overlap``."""
        return TUDSRPipeline(self.generator, adapter1=self.stage1_name, adapter2=self.generator.adapter_name, m=m,
                             n=self.n, t1=self.sigma1, t2=self.generator.sigma, color_fix="none",
                             pixel_tile=self.tile, pixel_overlap=self.tile_overlap)
