"""TUDSR stage 1 (paper section 3.7, Algorithm 1): one-step LoRA generator vs multi-level discriminator."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_modules.base import OneStepGANModule
from models.inference.tudsr import TUDSRPipeline


class Stage1Module(OneStepGANModule):
    """Algorithm 1: ``x_H_hat = G(x_L, t1, c)``; generator step on ``L_G`` (eq. 8); then a discriminator step on
    ``lambda2 (L_real + L_fake)`` with the *detached* output, on the same batch. Both networks step every
    ``accumulate`` batches (paper: batch 1, accumulation 4).

    ``global_step`` counts generator updates (:class:`OneStepGANModule`): one accumulation window advances it by 1
    and makes one G and one D update.
    """

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        gt = batch["gt"]  # (B, 3, H, W) in [0, 1]
        lq_up = self.lq_at_target(batch)  # (B, 3, H, W)
        step_now = (self.batch_counter(batch_idx) + 1) % self.accumulate == 0
        sr = self.generator(lq_up, batch.get("lq"))  # (B, 3, H, W) in [0, 1]
        terms = self.generator_update(sr, gt, step_now)
        terms |= self.discriminator_update(sr, gt, step_now)
        self.log_terms(terms, batch_size=gt.shape[0])
        return {"lq": lq_up.detach(), "sr": sr.detach(), "gt": gt.detach()}

    def infer(self, lq: Tensor, scale: int) -> Tensor:
        """Evaluation: bicubic xM then the trained adapter, tiled in latent space (TUDSR pipeline, stage 1 only)."""
        pipeline = TUDSRPipeline(self.generator, adapter1=self.generator.adapter_name, adapter2=None, m=scale,
                                 t1=self.generator.timestep, color_fix="none")
        return pipeline(lq)
